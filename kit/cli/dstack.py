"""`kit dstack compose|deploy` and `kit dstack-sim`: the gateway as a dstack (Phala Cloud) app."""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, project_option
from kit.errors import ExternalError, InputError

DEPLOY_TIMEOUT = 900


@click.group()
def dstack() -> None:
    """Package the gateway as a dstack confidential-VM app (Phala Cloud or any dstack host)."""


@dstack.command("compose")
@project_option
@click.option("--image", help="Gateway image pinned by digest: REF[:TAG]@sha256:<64 hex>.")
@click.option("--name", help="App name (default: agent.toml agent.name).")
@click.option("--ipfs-gateway", "ipfs_gateways", multiple=True,
              help="IPFS HTTP gateway the CVM fetches contracts from (repeatable; part of the "
                   "measured compose; default: the recorded ones).")
@json_option
def compose(project_dir: Path, image: str | None, name: str | None,
            ipfs_gateways: tuple[str, ...], as_json: bool) -> None:
    """Write dstack/app-compose.json, its compose hash, and deployments/dstack.json."""
    from kit.dstack.compose import write_compose

    record = write_compose(project_dir, image=image, name=name,
                           ipfs_gateways=list(ipfs_gateways) or None)
    emit(record.to_dict(), as_json, lambda r: "\n".join([
        f"wrote {r['app_compose']} and {r['docker_compose']}",
        f"compose hash: {r['compose_hash']}",
        f"app id (dstack default): {r['app_id']}",
        f"image: {r['image']}",
        f"contracts from: {' '.join(r['ipfs_gateways']) or 'no IPFS gateway set (--ipfs-gateway)'}",
        "recorded in deployments/dstack.json; pin this compose hash in the tool",
    ]))


@dstack.command("deploy")
@project_option
@click.option("--dry-run", is_flag=True, help="Only print the commands.")
@json_option
def deploy(project_dir: Path, dry_run: bool, as_json: bool) -> None:
    """Create the CVM with the `phala` CLI when installed; otherwise print the exact commands."""
    from kit.dstack.compose import deploy_commands, load_record, phala_cli

    record = load_record(project_dir)
    if record is None:
        raise InputError("no dstack compose yet: run `kit dstack compose --image "
                         "REF@sha256:<digest>` first")
    commands = deploy_commands(record)
    executable = phala_cli()
    result = {"compose_hash": record.compose_hash, "commands": [shlex.join(c) for c in commands],
              "ran": False, "phala_cli": executable is not None}
    if executable and not dry_run:
        _run_phala([executable, *commands[-1][1:]], project_dir)
        result["ran"] = True
    emit(result, as_json, _describe_deploy)


def _run_phala(argv: list[str], project_dir: Path) -> None:
    try:
        completed = subprocess.run(argv, cwd=project_dir, timeout=DEPLOY_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ExternalError(f"`phala deploy` did not finish in {DEPLOY_TIMEOUT} s; check the "
                            "CVM in the Phala Cloud dashboard") from None
    except OSError as exc:
        raise ExternalError(f"cannot run the phala CLI ({exc.strerror})") from None
    if completed.returncode != 0:
        raise ExternalError(f"`phala deploy` exited with {completed.returncode}; log in with "
                            "`phala auth login` and retry")


def _describe_deploy(result: dict) -> str:
    lines = []
    if result["ran"]:
        lines.append("ran `phala deploy`")
    else:
        if not result["phala_cli"]:
            lines.append("the phala CLI is not installed (npm install -g phala); run:")
        else:
            lines.append("dry run; the commands are:")
        lines += [f"  {command}" for command in result["commands"]]
    lines.append(f"then check that the CVM reports compose hash {result['compose_hash']} "
                 "(its Info / the attestation's event log); a platform that rewrites the "
                 "app-compose gives another hash: review its app_compose before pinning that")
    return "\n".join(lines)


@click.command("dstack-sim")
@project_option
@click.option("--socket", "socket_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path(".kit/dstack.sock"), show_default=True,
              help="Unix socket to serve on (relative paths are inside the project).")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8090, show_default=True,
              help="Loopback port (0: any free port).")
@click.option("--no-tcp", is_flag=True, help="Serve on the Unix socket only.")
@click.option("--compose-hash", help="Measure this compose hash (default: the project's "
                                     "dstack/app-compose.json).")
@click.option("--seconds", type=click.FloatRange(min=0), default=None,
              help="Stop after this many seconds (default: until Ctrl-C).")
def dstack_sim(project_dir: Path, socket_path: Path, host: str, port: int, no_tcp: bool,
               compose_hash: str | None, seconds: float | None) -> None:
    """Serve a STAND-IN dstack guest agent: deterministic keys, dev quotes only."""
    from kit.dstack.compose import APP_COMPOSE, COMPOSE_DIR
    from kit.dstack.simulator import GuestAgentStandIn, StandInServer

    if host not in ("127.0.0.1", "localhost", "::1"):
        raise InputError("--host: the stand-in serves on loopback only")
    agent = _agent(project_dir / COMPOSE_DIR / APP_COMPOSE, compose_hash, GuestAgentStandIn)
    path = socket_path if socket_path.is_absolute() else project_dir / socket_path
    server = StandInServer(agent, socket_path=path, host=host, port=None if no_tcp else port)
    server.start()
    click.echo("kit dstack-sim: a STAND-IN guest agent (public keys, dev quotes that production "
               "verification refuses)")
    click.echo(f"  unix socket: {path}")
    if server.url:
        click.echo(f"  http:        {server.url}")
        click.echo(f"  export DSTACK_SIMULATOR_ENDPOINT={server.url}")
    click.echo(f"  compose hash: {agent.compose_hash}  app id: {agent.app_id}")
    try:
        deadline = None if seconds is None else time.monotonic() + seconds
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline is None else min(0.2, max(0.0, deadline - time.monotonic())))
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def _agent(compose_file: Path, compose_hash: str | None, factory: Any) -> Any:
    if compose_hash:
        try:
            return factory(compose_hash=compose_hash.strip().lower().removeprefix("0x"))
        except ValueError:
            raise InputError("--compose-hash must be 64 hex digits") from None
    try:
        document = json.loads(compose_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{compose_file} not found: run `kit dstack compose --image "
                         "REF@sha256:<digest>` or pass --compose-hash") from None
    except ValueError as exc:
        raise InputError(f"{compose_file} is not JSON ({exc})") from None
    if not isinstance(document, dict) or "runner" not in document:
        raise InputError(f"{compose_file} is not an app-compose document (no runner)")
    return factory(document)


@click.group()
def gateway() -> None:
    """The production gateway (inside a dstack CVM); `kit dev` stays the developer's."""


@gateway.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (the container image passes 0.0.0.0).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--ipfs-gateway", "ipfs_gateways", multiple=True, envvar="KIT_IPFS_GATEWAYS",
              help="IPFS HTTP gateway to fetch contracts from (repeatable; env "
                   "KIT_IPFS_GATEWAYS, space separated).")
@click.option("--ipfs-api", envvar="KIT_IPFS_API", help="Kubo RPC API to fetch contracts from.")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("/data"), show_default=True,
              help="Sealed vault and verified-code cache.")
@click.option("--dstack-endpoint", help="Guest agent socket or URL (default: the SDK's: "
                                        "DSTACK_SIMULATOR_ENDPOINT, then /var/run/dstack.sock).")
@click.option("--max-concurrency", type=click.IntRange(1, 256), default=8, show_default=True)
def serve(host: str, port: int, ipfs_gateways: tuple[str, ...], ipfs_api: str | None,
          data_dir: Path, dstack_endpoint: str | None, max_concurrency: int) -> None:
    """Serve contracts by CID from IPFS, verified, with a vault sealed by the guest agent."""
    from kit.contract.config import check_option_ipfs_api
    from kit.dstack.serve import production_gateway

    if ipfs_api:
        check_option_ipfs_api("--ipfs-api", ipfs_api)
    server = production_gateway(gateways=list(ipfs_gateways), ipfs_api=ipfs_api,
                                data_dir=data_dir, dstack_endpoint=dstack_endpoint, host=host,
                                port=port, max_concurrency=max_concurrency)
    url = server.start()
    click.echo(f"kit gateway serve: {url} (contracts verified by CID, vault sealed)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
