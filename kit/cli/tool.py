"""`kit tool`: generate the mech tool package bound to the deployed CID (kit.mech.package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, project_option


@click.command("tool")
@project_option
@click.option("--packages-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where packages/ lives (default: DIR/packages).")
@click.option("--author", help="Package author (default: agent.toml tool.author).")
@click.option("--name", help="Package name (default: agent.toml tool.name).")
@click.option("--version", "version", help="Package version (default: the previous one, "
              "patch-bumped when the package changed).")
@click.option("--push", is_flag=True,
              help="Pin the package directory (wrapped) to IPFS and check its hash.")
@click.option("--ipfs-api", help="Node RPC API for --push (default: the running `kit node up` "
              "node, else agent.toml ipfs.api).")
@click.option("--copyright-holder", help="Name in the files' licence header (default: the "
              "author; use 'Valory AG' inside Valory's own packages/valory).")
@click.option("--used-params/--no-used-params", default=False, show_default=True,
              help="Return the 6-tuple with used_params (only mechs that accept 5 or 6 items).")
@json_option
def tool(project_dir: Path, packages_dir: Path | None, author: str | None, name: str | None,
         version: str | None, push: bool, ipfs_api: str | None, copyright_holder: str | None,
         used_params: bool, as_json: bool) -> None:
    """Write packages/<author>/customs/<name>/ for the latest deployment and record its hash."""
    from kit.mech.package import ToolOptions, generate_tool

    options = ToolOptions(copyright_holder=copyright_holder, used_params=used_params)
    result = generate_tool(project_dir, packages_dir=packages_dir, author=author, name=name,
                           version=version, options=options)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    view = result.to_dict()
    if push:
        view["pushed_to"] = _push(project_dir, result.package_dir, result.package_hash, ipfs_api)
    emit(view, as_json, _describe)


def _push(project_dir: Path, package_dir: Path, package_hash: str, ipfs_api: str | None) -> str:
    from kit.contract.config import load_config
    from kit.ipfs.node import resolve_api
    from kit.mech.package import push_package

    api = ipfs_api or resolve_api(load_config(project_dir).ipfs.api)
    push_package(package_dir, package_hash, ipfs_api=api)
    return api


def _describe(view: dict[str, Any]) -> str:
    state = "written" if view["changed"] else "unchanged"
    lines = [
        f"mech tool {view['public_id']} {state}: {view['package_dir']}",
        f"  bound to CID:  {view['cid']}",
        f"  package hash:  {view['package_hash']}",
    ]
    if view.get("metadata_path"):
        lines.append(f"  tool metadata: {view['metadata_path']} (checked against the mech's rules)")
    if "pushed_to" in view:
        lines.append(f"  pinned on {view['pushed_to']} (the node's hash matches)")
    lines += [
        "TOOLS_TO_PACKAGE_HASH entries:",
        json.dumps(view["tools_to_package_hash"], indent=2),
        "customs: line for the agent config (aea-config.yaml):",
        view["customs_line"],
    ]
    return "\n".join(lines)
