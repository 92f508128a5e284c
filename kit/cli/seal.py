"""`kit encrypt` and `kit decrypt`: private requests from the requester's side (kit.trust.seal).

Neither command writes a file. `kit encrypt` prints the sealed request on standard output (what
to send as the mech prompt) and the attested signer on standard error; `kit decrypt` prints the
answer only after the whole proof verified, and nothing of it otherwise (exit 1).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from kit.cli._common import emit, json_option, project_option
from kit.errors import InputError

_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
DEFAULT_KEY_FILE = Path("ethereum_private_key.txt")  # mech-client's name


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{what} {path}: not UTF-8 text") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read it "
                         f"({exc.strerror or type(exc).__name__})") from None


def _prompt_text(prompt: str | None, prompt_file: Path | None) -> str:
    if (prompt is None) == (prompt_file is None):
        raise InputError("give the prompt with --prompt TEXT or --prompt-file F (one of them)")
    text = prompt if prompt is not None else _read_text(prompt_file, "--prompt-file")  # type: ignore[arg-type]
    if not text:
        raise InputError("the prompt is empty")
    return text


def _key(key_file: Path) -> Any:
    from kit.trust.seal import load_key

    try:
        return load_key(key_file)
    except OSError as exc:
        raise InputError(f"--key-file {key_file}: cannot read it "
                         f"({exc.strerror or type(exc).__name__})") from None


def _policy(project_dir: Path, allow_dev: bool, app_address: str | None,
            mr_enclaves: tuple[str, ...], pccs_url: str | None, timeout: float,
            cid: str) -> Any:
    """The attestation policy of `kit attest`; for dev quotes the local app address is sha256
    of -C DIR's built contract when it hashes to CID."""
    from kit.cli.trust import attestation_policy
    from kit.contract.project import ARTIFACT
    from kit.trust.attestation import deployed_code
    from kit.trust.quotes import sha256_app_address

    code = deployed_code(project_dir, str(ARTIFACT), cid) if allow_dev else None
    return attestation_policy(
        project_dir, allow_dev=allow_dev, app_address=app_address, mr_enclaves=mr_enclaves,
        pccs_url=pccs_url, timeout=timeout,
        local_app_address=sha256_app_address(code) if code is not None else None)


def _gateway(project_dir: Path, gateway_url: str | None) -> str:
    from kit.contract.config import LOCAL_GATEWAY, check_option_url

    if gateway_url is not None:
        return check_option_url("--gateway", gateway_url)
    if (project_dir / "agent.toml").is_file():
        from kit.contract.config import load_config

        return load_config(project_dir).gateway.url
    return LOCAL_GATEWAY


@click.command("encrypt")
@click.option("--cid", required=True, help="The contract's CID (its attested key seals the prompt).")
@click.option("--gateway", "gateway_url", help="Gateway URL (default: agent.toml's, else local).")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_KEY_FILE, show_default=True,
              help="Your secp256k1 key (hex, as mech-client keeps it): answers are sealed to it.")
@click.option("--prompt", help="The prompt (visible in your shell history: prefer --prompt-file).")
@click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the prompt from a file (UTF-8, exact bytes).")
@click.option("--model", help="The model, sealed inside the request (optional).")
@click.option("--allow-dev-quote", is_flag=True,
              help="Accept the local runtime's dev quote (local work only: proves no hardware).")
@click.option("--app-address", help="The worker app address an SGX quote binds (32 bytes hex).")
@click.option("--mr-enclave", "mr_enclaves", multiple=True, metavar="HEX",
              help="A pinned SGX MRENCLAVE (repeatable).")
@click.option("--pccs-url", help="PCCS for the quote's collateral (default: dcap-qvl's).")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=30.0, show_default=True,
              help="Seconds for the gateway and for the collateral.")
@project_option
@json_option
def encrypt(cid: str, gateway_url: str | None, key_file: Path, prompt: str | None,
            prompt_file: Path | None, model: str | None, allow_dev_quote: bool,
            app_address: str | None, mr_enclaves: tuple[str, ...], pccs_url: str | None,
            timeout: float, project_dir: Path, as_json: bool) -> None:
    """Verify the contract's /attestation, then seal a prompt to its attested key. Prints the
    sealed request to send as the mech prompt; keep it: `kit decrypt --request` checks it."""
    from kit.trust.attestation import attest
    from kit.trust.seal import seal_request

    text = _prompt_text(prompt, prompt_file)
    key = _key(key_file)
    gateway = _gateway(project_dir, gateway_url)
    policy = _policy(project_dir, allow_dev_quote, app_address, mr_enclaves, pccs_url,
                     timeout, cid)
    attested = attest(gateway, cid, policy=policy, timeout=timeout)
    sealed = seal_request(text, attested.encryption_key, key, model=model)
    view = {"request": sealed.text, "cid": cid, "signer": attested.signer,
            "encryption_key": attested.encryption_key, "quote_type": attested.quote.quote_type,
            "production": attested.quote.production, "requester": key.address,
            "sealed_request_sha256": sealed.sha256}
    if as_json:
        emit(view, True, str)
        return
    kind = view["quote_type"] + ("" if view["production"] else " (NOT hardware: local work only)")
    click.echo(f"sealed for {cid}: encryption key attested ({kind}); answers are signed by "
               f"{attested.signer}: pass --signer {attested.signer} to kit decrypt", err=True)
    click.echo(sealed.text)


@click.command("decrypt")
@click.argument("source", default="-", metavar="[RESULT|-]")
@click.option("--key-file", type=click.Path(dir_okay=False, path_type=Path),
              default=DEFAULT_KEY_FILE, show_default=True, help="Your secp256k1 key (hex).")
@click.option("--request", "request_source", metavar="FILE|JSON",
              help="The sealed request you sent (default: the one a mech delivery carries).")
@click.option("--signer", "signers", multiple=True, metavar="ADDR",
              help="The attested signer (repeatable; default: those recorded in -C DIR).")
@click.option("--cid", help="The CID the request went to (default: the proof's own).")
@click.option("--prompt", help="The prompt you sealed: its salted hash is checked too.")
@click.option("--prompt-file", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the prompt to check from a file.")
@project_option
@json_option
def decrypt(source: str, key_file: Path, request_source: str | None, signers: tuple[str, ...],
            cid: str | None, prompt: str | None, prompt_file: Path | None, project_dir: Path,
            as_json: bool) -> None:
    """Verify a sealed result's whole proof, then open the answer with your key. RESULT is a
    file with the tool's result, the contract's answer or a mech delivery (`-`: standard
    input). Exit 0 with the answer; 1 and nothing of it when any check fails."""
    from kit.cli.trust import _read_input, _recorded_signers
    from kit.trust.errors import NotVerified
    from kit.trust.seal import open_answer, parse_sealed_result

    result = parse_sealed_result(_read_input(source))
    key = _key(key_file)
    request = _request_text(request_source)
    check_prompt = None if prompt is None and prompt_file is None else \
        _prompt_text(prompt, prompt_file)
    for value in signers:
        if not _ADDRESS.fullmatch(value):
            raise InputError(f"--signer {value[:80]!r} is not a 0x address")
    pinned = list(signers)
    if not pinned:
        proof_cid = result.proof.get("cid") if isinstance(result.proof, dict) else None
        pinned = _recorded_signers(project_dir, cid or proof_cid)
    if not pinned:
        raise InputError("no signer to check the proof against: pass --signer ADDR (kit "
                         "encrypt printed it) or -C DIR of the deployed project")
    try:
        opened = open_answer(result, key, signers=pinned, cid=cid, request=request,
                             prompt=check_prompt)
    except NotVerified as exc:
        if as_json:
            emit({"verified": False, "field": exc.field, "problem": exc.problem}, True, str)
        raise
    emit(opened.to_dict(), as_json, lambda v: (
        f"answer decrypted and verified (signer {v['signer']}, cid {v['cid']})\n{v['answer']}"))


def _request_text(source: str | None) -> str | None:
    """--request: the sealed request's JSON itself, or a file holding it."""
    if source is None:
        return None
    if source.lstrip().startswith("{"):
        return source
    if source == "-":
        raise InputError("--request cannot be standard input: give a file or the JSON")
    return _read_text(Path(source), "--request").strip()
