"""`kit dev` (the local gateway) and `kit mock-llm` (the stand-in LLM endpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import click

from kit.cli._common import project_option

VAULT_FILE = Path(".kit") / "vault.json"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _Server(Protocol):
    def start(self) -> str: ...

    def stop(self) -> None: ...


def _warn_if_exposed(host: str) -> None:
    if host not in LOOPBACK:
        click.echo(f"warning: listening on {host}, not only on this machine; the vault and "
                   "every contract are reachable by anyone who can reach that address", err=True)


def _print_access(method: str, path: str, status: int, elapsed_ms: float) -> None:
    click.echo(f"{method} {path} -> {status} ({elapsed_ms:.0f} ms)")


@click.command()
@project_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--ipfs-api", help="IPFS node API to load contracts from "
                                 "(default: ipfs.api in agent.toml, else the local dev node).")
def dev(project_dir: Path, host: str, port: int, ipfs_api: str | None) -> None:
    """Serve a local gateway (/ipfs/<cid>, /vaults, /logs) until Ctrl-C.

    With an agent.toml in the project directory the contract is built first and served under
    its CID; any other CID is loaded from the IPFS node and re-hashed before it runs.
    """
    from kit.config import CONFIG_FILE, LOCAL_IPFS_API, load_config
    from kit.gateway import LocalGateway
    from kit.node import resolve_api
    from kit.project import build_project

    cid = None
    configured = LOCAL_IPFS_API
    if (project_dir / CONFIG_FILE).exists():
        cid = build_project(project_dir).cid
        configured = load_config(project_dir).ipfs.api
    ipfs_api = ipfs_api or resolve_api(configured)
    gateway = LocalGateway(project_dir if cid else None, ipfs_api=ipfs_api,
                           vault_path=project_dir / VAULT_FILE, host=host, port=port,
                           on_request=_print_access)
    _warn_if_exposed(host)
    url = gateway.start()
    click.echo(f"local gateway at {url} (IPFS node: {ipfs_api}; "
               f"vault: {project_dir / VAULT_FILE})")
    if cid:
        click.echo(f"project CID {cid}: {url}/ipfs/{cid}")
    click.echo("Ctrl-C to stop")
    _wait_for_interrupt(gateway)


@click.command("mock-llm")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8100, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", default="mock-llm-key", show_default=True,
              help="The key callers must send (Authorization: Bearer / x-api-key).")
def mock_llm(host: str, port: int, api_key: str) -> None:
    """Serve a STAND-IN OpenAI/Anthropic endpoint (not a language model) until Ctrl-C."""
    from kit.mock_llm import MockLLM

    server = MockLLM(host, port, api_key=api_key)
    _warn_if_exposed(host)
    url = server.start()
    click.echo(f"STAND-IN LLM (not a language model) at {url}")
    click.echo("  OpenAI shape:    POST /v1/chat/completions (Authorization: Bearer <key>)")
    click.echo("  Anthropic shape: POST /v1/messages (x-api-key: <key>)")
    click.echo("  answers: 'stand-in answer: ' + the first 16 hex digits of sha256(prompt)")
    click.echo("Ctrl-C to stop")
    _wait_for_interrupt(server)


def _wait_for_interrupt(server: _Server) -> None:
    import threading

    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        click.echo("stopping")
    finally:
        server.stop()
