"""`kit dev` (the local gateway) and `kit mock-llm` (the stand-in LLM endpoint)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import click

from kit.cli._common import project_option

if TYPE_CHECKING:
    from kit.local.mock_llm import FaultSpec, SignatureFault

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
@click.option("--watch", is_flag=True, help="Rebuild when agent.toml or src/ changes and serve "
                                            "the new CID at once (a broken edit keeps the last "
                                            "good build serving).")
def dev(project_dir: Path, host: str, port: int, ipfs_api: str | None, watch: bool) -> None:
    """Serve a local gateway (/ipfs/<cid>, /vaults, /logs) until Ctrl-C.

    With an agent.toml in the project directory the contract is built first and served under
    its CID; any other CID is loaded from the IPFS node and re-hashed before it runs.
    """
    from kit.contract.config import CONFIG_FILE, LOCAL_IPFS_API, check_option_ipfs_api, load_config
    from kit.local.gateway import LocalGateway
    from kit.ipfs.node import resolve_api
    from kit.contract.project import build_project

    if ipfs_api:
        check_option_ipfs_api("--ipfs-api", ipfs_api)
    cid = None
    configured = LOCAL_IPFS_API
    if (project_dir / CONFIG_FILE).exists():
        cid = build_project(project_dir).cid
        configured = load_config(project_dir).ipfs.api
    ipfs_api = ipfs_api or resolve_api(configured)
    gateway = LocalGateway(project_dir if cid else None, ipfs_api=ipfs_api,
                           vault_path=project_dir / VAULT_FILE, host=host, port=port,
                           on_request=_print_access, on_invocation=_print_failure)
    _warn_if_exposed(host)
    url = gateway.start()
    click.echo(f"local gateway at {url} (IPFS node: {ipfs_api}; "
               f"vault: {project_dir / VAULT_FILE})")
    if cid:
        click.echo(f"project CID {cid}: {url}/ipfs/{cid}")
    if watch and cid:
        _watch(project_dir, url, gateway)
        return
    click.echo("Ctrl-C to stop")
    _wait_for_interrupt(gateway)


def _print_failure(cid: str, code: str, logs: list[str], error: str | None) -> None:
    """A failed invocation's error and stack trace, mapped to the user's src/ lines."""
    from kit.contract.bundle import map_trace

    lines = [entry for entry in logs if entry.startswith("[error]")]
    if error:
        lines.append(error)
    for line in lines:
        click.echo(map_trace(line, code), err=True)


def _watch(project_dir: Path, url: str, gateway: _Server) -> None:
    from kit.local.watch import ProjectWatcher, WatchEvent

    def report(event: WatchEvent) -> None:
        if event.ok:
            click.echo(f"rebuilt in {event.elapsed_ms:.0f} ms: {url}/ipfs/{event.cid}")
        else:
            click.echo(f"build failed (the last good build keeps serving): {event.error}",
                       err=True)

    watcher = ProjectWatcher(project_dir, report)
    watcher.start()
    click.echo("watching agent.toml and src/ for changes; Ctrl-C to stop")
    try:
        _wait_for_interrupt(gateway)
    finally:
        watcher.stop()


def _parse_faults(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[FaultSpec]:
    from kit.errors import InputError
    from kit.local.mock_llm import parse_fault

    try:
        return [parse_fault(value) for value in values]
    except InputError as exc:
        raise click.BadParameter(str(exc).removeprefix("--fail "), ctx, param) from None


def _parse_signature_faults(ctx: click.Context, param: click.Parameter,
                            values: tuple[str, ...]) -> list[SignatureFault]:
    from kit.errors import InputError
    from kit.local.mock_llm import parse_signature_fault

    try:
        return [parse_signature_fault(value) for value in values]
    except InputError as exc:
        raise click.BadParameter(str(exc).removeprefix("--signature-fault "), ctx, param) from None


@click.command("mock-llm")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8100, show_default=True, type=click.IntRange(0, 65535))
@click.option("--api-key", default="mock-llm-key", show_default=True,
              help="The key callers must send (Authorization: Bearer / x-api-key).")
@click.option("--fail", "faults", multiple=True, metavar="SPEC", callback=_parse_faults,
              help="Inject a failure into the next requests (repeatable; applied in order). "
                   "SPEC is key=value pairs: status=CODE, count=N (default 1), delay=SECONDS, "
                   "retry-after=SECONDS, body=TEXT (last; answered as text/plain instead of "
                   "the provider's error shape).")
@click.option("--confidential", is_flag=True,
              help="Also stand in for a confidential-inference provider: sign every completion "
                   "with the stand-in's secp256k1 key and serve GET /v1/signature/{chat_id} and "
                   "GET /v1/attestation/report (a DEV quote: never passes production checks).")
@click.option("--signature-fault", "signature_faults", multiple=True, metavar="SPEC",
              callback=_parse_signature_faults,
              help="With --confidential: inject a fault into the next signature (or report) "
                   "requests (repeatable). SPEC is KIND[,count=N][,delay=SECONDS]; kinds: "
                   "wrong-signature, text-mismatch, unknown-signer, not-found, slow, timeout, "
                   "report-wrong-nonce, report-wrong-address.")
def mock_llm(host: str, port: int, api_key: str, faults: list[FaultSpec], confidential: bool,
             signature_faults: list[SignatureFault]) -> None:
    """Serve a STAND-IN OpenAI/Anthropic endpoint (not a language model) until Ctrl-C.

    Both shapes answer deterministically, and stream (server-sent events) when the request
    says "stream": true. Rehearse provider failures against `kit dev` with --fail:

    \b
      --fail status=429,count=2,retry-after=1   two rate limits with Retry-After, then normal
      --fail status=500                          one provider error
      --fail status=401                          credentials refused
      --fail delay=8                             answer after 8 s (past the contract's timeout)
      --fail delay=30,status=504                 a gateway timeout after 30 s
      --fail status=200,body=not json            a broken answer
    """
    from kit.errors import InputError
    from kit.local.mock_llm import MockLLM, describe_fault, describe_signature_fault

    if signature_faults and not confidential:
        raise InputError("--signature-fault needs --confidential")
    server = MockLLM(host, port, api_key=api_key, on_request=_print_access,
                     confidential=confidential)
    for spec in faults:
        server.add_fault(spec)
    for fault in signature_faults:
        server.add_signature_fault(fault)
    _warn_if_exposed(host)
    url = server.start()
    click.echo(f"STAND-IN LLM (not a language model) at {url}")
    click.echo("  OpenAI shape:    POST /v1/chat/completions (Authorization: Bearer <key>)")
    click.echo("  Anthropic shape: POST /v1/messages (x-api-key: <key> or Authorization: Bearer)")
    click.echo("  answers: 'stand-in answer: ' + the first 16 hex digits of sha256(prompt); "
               '"stream": true streams it')
    if server.confidential is not None:
        click.echo(f"  confidential stand-in: signing address {server.confidential.address} "
                   "(a public test key)")
        click.echo("    GET /v1/signature/{chat_id}?model=..&signing_algo=ecdsa, "
                   "GET /v1/attestation/report?model=..&nonce=<64 hex> (DEV quote)")
    for spec in faults:
        click.echo(f"  injected failure: {describe_fault(spec)}")
    for fault in signature_faults:
        click.echo(f"  injected signature fault: {describe_signature_fault(fault)}")
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
