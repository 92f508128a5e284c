"""`kit node up|down|status`, `kit deploy`, `kit verify`: thin shells over kit.ipfs.node/kit.ipfs.deploy."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, project_option

repo_option = click.option(
    "--repo", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Node repository (default: $KIT_IPFS_REPO or the per-user data directory).",
)


@click.group()
def node() -> None:
    """Manage the local IPFS dev node (loopback only, offline)."""


@node.command()
@repo_option
@click.option("--api-port", type=click.IntRange(0, 65535), default=5002, show_default=True,
              help="RPC API port (0: a free port).")
@click.option("--gateway-port", type=click.IntRange(0, 65535), default=9090, show_default=True,
              help="HTTP gateway port (0: a free port).")
@click.option("--timeout", type=click.FloatRange(1, 600), default=60.0, show_default=True,
              help="Seconds to wait for the node to answer.")
@json_option
def up(repo: Path | None, api_port: int, gateway_port: int, timeout: float, as_json: bool) -> None:
    """Install (npm ci) if needed, init, configure and start the node."""
    from kit.ipfs import node as local_node
    info, started = local_node.up(repo, api_port=api_port, gateway_port=gateway_port,
                                  timeout=timeout)
    emit({**asdict(info), "started": started}, as_json, _describe_up)


def _describe_up(view: dict[str, Any]) -> str:
    state = "started" if view["started"] else "already running"
    return (f"IPFS node ({view['implementation']}) {state}, PID {view['pid']}\n"
            f"  API:     {view['api']}\n  gateway: {view['gateway_url']}\n"
            f"  repo:    {view['repo']}\n  log:     {view['log']}")


@node.command()
@repo_option
@json_option
def down(repo: Path | None, as_json: bool) -> None:
    """Stop the node started by `kit node up` (only that process)."""
    from kit.ipfs import node as local_node
    info = local_node.down(repo)
    view = {"stopped": info is not None, "pid": info.pid if info else None}
    emit(view, as_json, lambda v: f"stopped PID {v['pid']}" if v["stopped"] else "no node running")


@node.command()
@repo_option
@json_option
def status(repo: Path | None, as_json: bool) -> None:
    """Report the node's addresses and whether they answer."""
    from kit.ipfs import node as local_node
    emit(asdict(local_node.status(repo)), as_json, _describe_status)


def _describe_status(view: dict[str, Any]) -> str:
    if not view["running"]:
        return f"no node running for {view['repo']} (start one with `kit node up`)"
    info = view["info"]
    answers = {True: "answers", False: "DOES NOT ANSWER"}
    return (f"IPFS node ({info['implementation']}) PID {info['pid']}\n"
            f"  API:     {info['api']} {answers[view['api_answers']]}\n"
            f"  gateway: {info['gateway_url']} {answers[view['gateway_answers']]}")


@click.command()
@project_option
@click.option("--ipfs-api", help="Node RPC API multiaddr or URL (default: the running "
              "`kit node up` node, else agent.toml ipfs.api).")
@click.option("--pinning-service", metavar="URL",
              help="Pin through an IPFS Pinning Service API at URL (token: $KIT_PINNING_TOKEN), "
              "or 'pinata' / 'pinata+URL' (token: $PINATA_JWT).")
@click.option("--gateway", help="Gateway to fetch the content back from (default: the node's).")
@click.option("--cid-version", type=click.Choice(["0", "1"]), default=None,
              help="Override agent.toml ipfs.cid_version.")
@click.option("--timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True,
              help="Seconds allowed for each network call.")
@json_option
def deploy(project_dir: Path, ipfs_api: str | None, pinning_service: str | None,
           gateway: str | None, cid_version: str | None, timeout: float, as_json: bool) -> None:
    """Build, pin, check the returned CID, fetch it back, and write the deployment record."""
    from kit.ipfs.deploy import deploy as run_deploy

    result = run_deploy(
        project_dir, ipfs_api=ipfs_api, pinning_service=pinning_service, gateway=gateway,
        cid_version=None if cid_version is None else int(cid_version), timeout=timeout,
        progress=lambda message: click.echo(message, err=True),
    )
    emit(result.to_dict(), as_json, _describe_deploy)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


def _describe_deploy(view: dict[str, Any]) -> str:
    recorded = ("recorded in deployments/" if view["recorded"]
                else "unchanged since the latest deployment (nothing recorded)")
    return (f"deployed {view['cid']} (CIDv{view['cid_version']}, {view['size']} bytes) "
            f"via {view['backend']}; verified through {view['verified_via']}; {recorded}")


@click.command()
@click.argument("cid", required=False)
@project_option
@click.option("--gateway", "gateways", multiple=True, metavar="URL",
              help="Gateway to check (repeatable; default: the latest record's gateway).")
@click.option("--timeout", type=click.FloatRange(1, 600), default=30.0, show_default=True)
@json_option
def verify(cid: str | None, project_dir: Path, gateways: tuple[str, ...], timeout: float,
           as_json: bool) -> None:
    """Fetch CID (default: the latest deployment's) through each gateway and re-hash it."""
    from kit.contract.config import check_option_url
    from kit.ipfs.deploy import verify as run_verify
    from kit.errors import CidMismatch, InputError
    from kit.ipfs.records import load_latest

    for gateway in gateways:
        check_option_url("--gateway", gateway)
    latest = load_latest(project_dir)
    if cid is None and latest is None:
        raise InputError("no CID given and no deployment recorded; pass CID or run `kit deploy`")
    cid = cid or latest.cid
    if not gateways and latest is None:
        raise InputError("no gateway given and no deployment recorded; pass --gateway URL")
    checks = run_verify(cid, list(gateways) or [latest.verified_via], timeout=timeout)
    emit({"cid": cid, "checks": [asdict(c) for c in checks]}, as_json, _describe_verify)
    failed = [c for c in checks if not c.ok]
    if failed:
        raise CidMismatch(f"{len(failed)} of {len(checks)} gateways failed verification for {cid}")


def _describe_verify(view: dict[str, Any]) -> str:
    lines = [f"verifying {view['cid']}"]
    for check in view["checks"]:
        outcome = f"ok ({check['size']} bytes)" if check["ok"] else f"FAILED: {check['error']}"
        lines.append(f"  {check['gateway']}: {outcome}")
    return "\n".join(lines)
