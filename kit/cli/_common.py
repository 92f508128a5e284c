"""Options and output helpers shared by the subcommands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

project_option = click.option(
    "-C",
    "project_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Project directory (the one holding agent.toml).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def parse_pairs(values: tuple[str, ...] | list[str], option: str) -> list[tuple[str, str]]:
    """`NAME=VALUE` arguments, in order. Errors name the option and position, never the value:
    the same parser reads secrets."""
    from kit.errors import InputError

    pairs = []
    for position, value in enumerate(values, 1):
        name, sep, rest = value.partition("=")
        if not sep or not name.strip():
            raise InputError(f"{option} #{position} must look like NAME=VALUE (value not shown)")
        pairs.append((name.strip(), rest))
    return pairs


def emit(result: Any, as_json: bool, human: Callable[[Any], str]) -> None:
    """Print `result` as JSON or through its human formatter."""
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        click.echo(human(result))
