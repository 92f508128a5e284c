"""`kit init` and `kit build`."""

from __future__ import annotations

from pathlib import Path

import click

from kit.cli._common import emit, json_option, project_option
from kit.contract.config import PROVIDER_KINDS


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--name", help="Agent name (default: from the directory name).")
@click.option(
    "--provider", type=click.Choice(PROVIDER_KINDS), default="openai", show_default=True,
    help="LLM provider API the contract calls.",
)
@click.option("--base-url", help="Provider base URL (default: the provider's public API).")
@click.option("--gateway", "gateway_url", help="Gateway URL the mech tool calls.")
@click.option("--preset", type=click.Choice(["chat", "prediction", "json"]), default="chat",
              show_default=True, help="What the contract answers: the model's text, a "
              "prediction for trader agents, or JSON meeting a schema in agent.toml.")
@json_option
def init(
    directory: Path, name: str | None, provider: str, base_url: str | None,
    gateway_url: str | None, preset: str, as_json: bool,
) -> None:
    """Scaffold an agent project in DIRECTORY (agent.toml, src/agent.js, tests)."""
    from kit.contract.project import init_project

    files = init_project(
        directory, name=name, provider=provider, base_url=base_url, gateway_url=gateway_url,
        preset=preset,
    )
    result = {"directory": str(directory), "files": [str(path) for path in files]}
    emit(result, as_json, _describe_init)


def _describe_init(result: dict) -> str:
    lines = [f"created {path}" for path in result["files"]]
    lines.append(f"next: kit build -C {result['directory']}")
    return "\n".join(lines)


@click.command()
@project_option
@click.option(
    "--cid-version", type=click.Choice(["0", "1"]), default=None,
    help="CID version (default: ipfs.cid_version in agent.toml).",
)
@json_option
def build(project_dir: Path, cid_version: str | None, as_json: bool) -> None:
    """Render the contract to dist/agent.js and print its CID."""
    from kit.contract.project import build_project

    result = build_project(
        project_dir, cid_version=None if cid_version is None else int(cid_version)
    )
    if not as_json:
        click.echo(
            f"built {result.path}: {result.size} bytes, template {result.template_version}, "
            f"CIDv{result.cid_version}",
            err=True,
        )
    emit(result.to_dict(), as_json, lambda data: data["cid"])
