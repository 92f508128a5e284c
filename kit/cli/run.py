"""`kit run`: run the built contract once in the local runtime and print its answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, parse_pairs, project_option
from kit.errors import InputError, RuntimeFault

_REDACTED = "***"


def _redact(text: str, secrets: list[str]) -> str:
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, _REDACTED)
    return text


def _human(result: dict[str, Any]) -> str:
    lines = [f"status: {result['status']}", "headers:"]
    lines += [f"  {name}: {value}" for name, value in sorted(result["headers"].items())]
    lines += ["body:", result["body"], f"log ({len(result['logs'])} entries):"]
    lines += [f"  {entry}" for entry in result["logs"]]
    if result["error"]:
        lines.append(f"error: {result['error']}")
    lines.append(f"duration: {result['duration_ms']:.1f} ms")
    return "\n".join(lines)


@click.command()
@project_option
@click.option("--method", default="GET", show_default=True, help="GET, POST, PATCH or PUT.")
@click.option("--path", "path", default=None,
              help="Request path [default: /ipfs/<cid of dist/agent.js>].")
@click.option("--query", multiple=True, metavar="K=V", help="Query parameter (repeatable).")
@click.option("--header", multiple=True, metavar="K=V", help="Request header (repeatable).")
@click.option("--body", default=None, metavar="JSON", help="Request body (POST, PATCH, PUT only).")
@click.option("--secret", multiple=True, metavar="K=V",
              help="Vault secret for this run (repeatable).")
@json_option
def run(
    project_dir: Path, method: str, path: str | None, query: tuple[str, ...],
    header: tuple[str, ...], body: str | None, secret: tuple[str, ...], as_json: bool,
) -> None:
    """Run dist/agent.js once on one request, exactly as the gateway would."""
    from kit.cid import bytes_cid
    from kit.contract.config import load_config
    from kit.contract.project import ARTIFACT
    from kit.local.runtime import BODY_METHODS, invoke, make_request

    config = load_config(project_dir)
    contract = config.root / ARTIFACT
    if not contract.is_file():
        raise InputError(f"{contract} not found; run `kit build -C {project_dir}` first")
    code_bytes = contract.read_bytes()
    if body is not None and method.upper() not in BODY_METHODS:
        raise InputError(f"--body is only sent with {', '.join(BODY_METHODS)}; add --method POST")
    secrets = dict(parse_pairs(secret, "--secret"))
    request = make_request(
        method,
        path or f"/ipfs/{bytes_cid(code_bytes, version=config.ipfs.cid_version)}",
        parse_pairs(query, "--query"),
        parse_pairs(header, "--header"),
        body,
        secrets or None,
    )
    try:
        code = code_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{contract} is not UTF-8 text; rebuild it with `kit build`") from None
    answer = invoke(code, request)
    from kit.contract.bundle import map_trace
    hidden = [v for v in secrets.values() if v]
    result = {
        "status": answer.status,
        "headers": {k: _redact(v, hidden) for k, v in answer.headers.items()},
        "body": _redact(answer.body, hidden),
        # stack traces name src/agent.js lines (kit.contract.bundle), not the bundled file's
        "logs": [_redact(map_trace(line, code), hidden) for line in answer.logs],
        "error": _redact(map_trace(answer.error, code), hidden) if answer.error else None,
        "duration_ms": answer.duration_ms,
    }
    emit(result, as_json, _human)
    if answer.error:
        raise RuntimeFault(f"the contract failed: {result['error']}")
