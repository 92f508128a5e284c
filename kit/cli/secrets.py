"""`kit secrets set|show`: vault secrets for the deployed CID. Values are never printed."""

from __future__ import annotations

import os
from pathlib import Path

import click

from kit.cli._common import emit, json_option, parse_pairs, project_option
from kit.errors import InputError


@click.group()
def secrets() -> None:
    """Store secrets in the gateway vault, bound to the deployed CID."""


@secrets.command("set")
@project_option
@click.argument("pairs", nargs=-1, metavar="NAME=VALUE...")
@click.option("--from-env", "env_names", multiple=True, metavar="NAME",
              help="Take secret NAME's value from the environment variable NAME.")
@click.option("--gateway", "gateway_url", help="Gateway URL (default: agent.toml gateway.url).")
@click.option("--replace", is_flag=True,
              help="Bind exactly these secrets, dropping bound ones not given again.")
@json_option
def set_(project_dir: Path, pairs: tuple[str, ...], env_names: tuple[str, ...],
         gateway_url: str | None, replace: bool, as_json: bool) -> None:
    """Post secrets to the gateway vault for the latest deployment (the new set replaces the
    bound one: give every secret again, or pass --replace)."""
    from kit.mech.secrets import set_secrets

    values = dict(parse_pairs(pairs, "secret"))
    for name in env_names:
        if name not in os.environ:
            raise InputError(f"--from-env {name}: environment variable {name} is not set")
        values[name] = os.environ[name]
    binding = set_secrets(project_dir, values, gateway_url=gateway_url, replace=replace)
    emit(binding.public_view(binding.cid), as_json, lambda view: "\n".join(
        [f"vault secrets set for {view['cid']} at {view['gateway_url']}"]
        + [f"  {name} = ****" for name in view["names"]]
        + ["key and token stored in .kit/secrets.json (mode 0600)"]))


@secrets.command("show")
@project_option
@json_option
def show(project_dir: Path, as_json: bool) -> None:
    """List secret names, the CID they are bound to, and whether that binding is stale."""
    from kit.ipfs.records import load_latest
    from kit.mech.secrets import load_binding

    binding = load_binding(project_dir)
    if binding is None:
        raise InputError("no secrets set yet: run `kit secrets set NAME=VALUE...`")
    latest = load_latest(project_dir)
    view = binding.public_view(latest.cid if latest else None)
    emit(view, as_json, _describe)


def _describe(view: dict) -> str:
    lines = [f"bound to {view['cid']} at {view['gateway_url']}"]
    lines += [f"  {name} = ****" for name in view["names"]]
    if view["stale"]:
        lines.append("STALE: the latest deployment has another CID; "
                     "run `kit secrets set` again (the gateway ignores these secrets for it)")
    return "\n".join(lines)
