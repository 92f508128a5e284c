"""`kit verify-answer` and `kit attest`: the trust chain from the command line (kit.trust)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, project_option
from kit.errors import InputError

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX32 = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def _read_input(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {source} ({exc.strerror or type(exc).__name__})") from None


def _prompt(prompt: str | None, prompt_file: Path | None, delivered: str | None) -> str:
    if prompt is not None and prompt_file is not None:
        raise InputError("give --prompt or --prompt-file, not both")
    if prompt_file is not None:
        try:
            return prompt_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--prompt-file {prompt_file}: cannot read it as UTF-8 "
                             f"({type(exc).__name__})") from None
    if prompt is not None:
        return prompt
    if delivered is not None:
        return delivered
    raise InputError("the prompt is needed to check prompt_sha256: pass --prompt TEXT or "
                     "--prompt-file F (a mech delivery carries it)")


def _recorded_signers(project_dir: Path, cid: Any) -> list[str]:
    """Signers the project's deployment records pin for `cid` (none without a project)."""
    from kit.ipfs.records import load_history, load_latest

    if not isinstance(cid, str) or not (project_dir / "deployments").is_dir():
        return []
    records = [record for record in [load_latest(project_dir), *load_history(project_dir)]
               if record is not None and record.cid == cid]
    return sorted({signer for record in records for signer in record.signers})


def _checked(values: tuple[str, ...], pattern: re.Pattern[str], option: str) -> list[str]:
    for value in values:
        if not pattern.fullmatch(value):
            raise InputError(f"{option} {value[:80]!r} is not valid")
    return list(values)


@click.command("verify-answer")
@click.argument("source", default="-", metavar="[FILE|-]")
@click.option("--prompt", help="The prompt that was sent.")
@click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the prompt from a file (UTF-8, exact bytes).")
@click.option("--cid", help="The CID the request went to (default: the proof's own).")
@click.option("--signer", "signers", multiple=True, metavar="ADDR",
              help="A pinned signer (repeatable; default: those recorded in -C DIR for the CID).")
@click.option("--system", help="The system prompt, when known: its sha256 is checked too.")
@click.option("--provider-signer", "provider_signers", multiple=True, metavar="ADDR",
              help="A provider signer the contract pins (repeatable; default: read from the "
                   "built contract in -C DIR whose CID the deployment records).")
@project_option
@json_option
def verify_answer(source: str, prompt: str | None, prompt_file: Path | None, cid: str | None,
                  signers: tuple[str, ...], system: str | None,
                  provider_signers: tuple[str, ...], project_dir: Path,
                  as_json: bool) -> None:
    """Check a delivered result offline: exit 0 verified, 1 not verified (naming the field),
    2 unreadable input. FILE holds the tool's JSON result, the contract's answer or a mech
    delivery; `-` (the default) reads standard input."""
    from kit.trust.answer import parse_result, verify_answer as check
    from kit.trust.errors import NotVerified

    result = parse_result(_read_input(source))
    text = _prompt(prompt, prompt_file, result.prompt)
    pinned = _checked(signers, _ADDRESS, "--signer")
    if not pinned:
        proof_cid = result.proof.get("cid") if isinstance(result.proof, dict) else None
        pinned = _recorded_signers(project_dir, cid or proof_cid)
    provider_pins = _checked(provider_signers, _ADDRESS, "--provider-signer")
    try:
        verdict = check(result, prompt=text, signers=pinned, cid=cid, system=system)
        view = verdict.to_dict()
        if result.provider_proof is not None:  # its sha256 is signed: now its own signer
            from kit.trust.provider import check_provider_proof, pinned_provider_signers

            view["provider_signer"] = check_provider_proof(
                result.provider_proof,
                provider_pins or pinned_provider_signers(project_dir, verdict.cid))
    except NotVerified as exc:
        if as_json:
            emit({"verified": False, "field": exc.field, "problem": exc.problem}, True, str)
        raise
    emit(view, as_json, lambda v: (
        f"proof: verified (signer {v['signer']})\ncid: {v['cid']}\nmodel: {v['model']}"
        + (f"\nprovider proof: verified (signer {v['provider_signer']})"
           if "provider_signer" in v else "")))


@click.command("attest")
@project_option
@click.option("--gateway", "gateway_url", help="Gateway URL (default: the deployment's).")
@click.option("--allow-dev-quote", is_flag=True,
              help="Accept the local runtime's dev quote (local work only: proves no hardware).")
@click.option("--app-address", help="The worker app address (32 bytes, hex) an SGX quote "
                                    "binds; not derivable from the CID (default: agent.toml "
                                    "verify.app_address).")
@click.option("--mr-enclave", "mr_enclaves", multiple=True, metavar="HEX",
              help="A pinned SGX MRENCLAVE (repeatable; default: verify.mr_enclaves); SGX "
                   "quotes need at least one.")
@click.option("--pccs-url", help="PCCS for the quote's collateral (default: dcap-qvl's).")
@click.option("--compose-hash", help="The dstack app's compose hash a TDX quote must measure "
                                     "(64 hex; default: deployments/dstack.json).")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=30.0, show_default=True,
              help="Seconds for the gateway and for the collateral.")
@json_option
def attest(project_dir: Path, gateway_url: str | None, allow_dev_quote: bool,
           app_address: str | None, mr_enclaves: tuple[str, ...], pccs_url: str | None,
           compose_hash: str | None, timeout: float, as_json: bool) -> None:
    """Fetch /attestation with a fresh nonce, verify it, record the signer for the deployment."""
    from kit.contract.config import check_option_url
    from kit.trust.attestation import attest_deployment

    if gateway_url is not None:
        check_option_url("--gateway", gateway_url)
    policy = attestation_policy(project_dir, allow_dev=allow_dev_quote, app_address=app_address,
                                mr_enclaves=mr_enclaves, pccs_url=pccs_url, timeout=timeout,
                                compose_hash=compose_hash)
    result = attest_deployment(project_dir, gateway_url=gateway_url, policy=policy,
                               timeout=timeout)
    emit(result.to_dict(), as_json, _describe_attestation)


def attestation_policy(project_dir: Path, *, allow_dev: bool, app_address: str | None,
                       mr_enclaves: tuple[str, ...], pccs_url: str | None, timeout: float,
                       compose_hash: str | None = None,
                       local_app_address: bytes | None = None) -> Any:
    """The policy of `kit attest` and `kit encrypt`: the flags, else agent.toml [verify]; a TDX
    quote is checked against the compose hash (the flag, else deployments/dstack.json) and the
    pinned OS measurement sets ([verify] tdx_os_measurements)."""
    from kit.contract.config import check_option_url
    from kit.trust.quotes import AttestationPolicy

    if pccs_url is not None:
        check_option_url("--pccs-url", pccs_url)
    os_measurements: tuple[str, ...] = ()
    if (project_dir / "agent.toml").is_file():
        from kit.contract.config import load_config

        verify = load_config(project_dir).verify
        app_address = app_address or verify.app_address or None
        mr_enclaves = mr_enclaves or verify.mr_enclaves
        os_measurements = verify.tdx_os_measurements
    address = _checked((app_address,), _HEX32, "--app-address")[0] if app_address else None
    return AttestationPolicy(
        allow_dev=allow_dev,
        app_address=bytes.fromhex(address.removeprefix("0x")) if address else None,
        local_app_address=local_app_address,
        mr_enclaves=tuple(bytes.fromhex(m.removeprefix("0x"))
                          for m in _checked(mr_enclaves, _HEX32, "--mr-enclave")),
        pccs_url=pccs_url, collateral_timeout=timeout,
        options=_tdx_options(project_dir, compose_hash, os_measurements),
    )


def _tdx_options(project_dir: Path, compose_hash: str | None,
                 os_measurements: tuple[str, ...]) -> dict[str, Any]:
    """What a TDX quote is checked against (kit.trust.tdx): the pinned compose hash, and the
    pinned OS measurement sets ([verify] tdx_os_measurements)."""
    if compose_hash is None:
        from kit.dstack.compose import load_record

        record = load_record(project_dir)
        compose_hash = record.compose_hash if record is not None else None
    if compose_hash is None:
        return {}
    return {"compose_hash": _checked((compose_hash,), _HEX32, "--compose-hash")[0].lower()
            .removeprefix("0x"), "os_measurements": os_measurements}


def _describe_attestation(view: dict[str, Any]) -> str:
    kind = view["quote_type"] + ("" if view["production"] else " (NOT hardware: local work only)")
    lines = [f"attested signer {view['signer']} for {view['cid']} at {view['gateway_url']}",
             f"quote: {kind}, status {view['status']}",
             *([f"compose hash: {view['details'].get('compose_hash')} (measured in RTMR3)",
                f"OS measurements (MRTD:RTMR0:RTMR1:RTMR2): "
                f"{view['details'].get('os_measurements')}"]
               if view["quote_type"] == "tdx" else []),
             "recorded in deployments/latest.json" if view["recorded"]
             else "already recorded in deployments/latest.json"]
    return "\n".join(lines)
