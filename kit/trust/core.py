"""The signed texts of the trust chain and the answer check: ONE source for the kit and the tool.

The region between the BEGIN/END markers below is self-contained (standard library plus
`eth-account`, imported lazily) and is embedded verbatim in every generated mech tool, which must
be a single file: `kit tool` renders it from this module's text (`verifier_source()`), so the
kit (`kit verify-answer`, `kit.trust.answer`) and the tool check answers with the same code.
Keep the region readable, free of kit imports, and valid on the Python versions mech runtimes
use (no `X | Y` annotations evaluated at run time).

The texts (issue 11, one field a line, `\\n` separated, no trailing newline):

    agent-contract-kit answer v1            agent-contract-kit attest v1
    cid: <cid>                              cid: <cid>
    model: <model>                          signer: <0x address>
    system_sha256: <hex>                    encryption_key: <hex>
    prompt_sha256: <hex>                    nonce: <64 hex>
    answer_sha256: <hex>
    provider_proof_sha256: <hex or "none">

`signature` is an EIP-191 `personal_sign` of the answer text: 65 bytes r||s||v (v in 27, 28).
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

BEGIN_MARKER = "# --- BEGIN answer verifier (kit/trust/core.py) ---"
END_MARKER = "# --- END answer verifier ---"
ATTEST_BEGIN_MARKER = "# --- BEGIN attestation verifier (kit/trust/core.py) ---"
ATTEST_END_MARKER = "# --- END attestation verifier ---"


def _region(begin: str, end: str) -> str:
    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index("\n" + begin + "\n") + 1
    stop = text.index("\n" + end + "\n", start) + 1 + len(end)
    return text[start:stop] + "\n"


def verifier_source() -> str:
    """The answer verifier region of this module, markers included, as the tool renders it."""
    return _region(BEGIN_MARKER, END_MARKER)


def attestation_verifier_source() -> str:
    """The attestation verifier region (needs the answer verifier region before it)."""
    return _region(ATTEST_BEGIN_MARKER, ATTEST_END_MARKER)


# --- BEGIN answer verifier (kit/trust/core.py) ---
# The answer verifier of the agent-contract kit, copied from kit/trust/core.py by `kit tool`.
# It rebuilds the signed text from the proof and what was sent and received, recovers the
# EIP-191 signer with eth-account, and refuses anything unexpected, naming the field.
# The module around it imports hashlib, json, re and typing's Any, Dict, Iterable, Optional,
# Tuple.
ANSWER_HEADER_V1 = "agent-contract-kit answer v1"
ATTEST_HEADER_V1 = "agent-contract-kit attest v1"
PROOF_VERSION = 1
PROOF_FIELDS = (
    "version",
    "cid",
    "model",
    "system_sha256",
    "prompt_sha256",
    "answer_sha256",
    "provider_proof_sha256",
    "signer",
    "signature",
)
NO_PROVIDER_PROOF = "none"
_PROOF_SHA256_HEX = re.compile(r"^[0-9a-f]{64}\Z")
_PROOF_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}\Z")
_PROOF_SIGNATURE = re.compile(r"^(0x)?[0-9a-fA-F]{130}\Z")
_PROOF_ONE_LINE = re.compile(r"^[^\r\n]+\Z")


class ProofError(Exception):
    """A proof that does not verify; `field` names what failed."""

    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(field + ": " + problem)


def sha256_hex(text: str) -> str:
    """Hex sha256 of a text's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def provider_proof_sha256(provider_proof: Any) -> str:
    """Hex sha256 of a provider proof's canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = json.dumps(
        provider_proof, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return sha256_hex(canonical)


def answer_lines(proof: Dict[str, Any]) -> Tuple[str, ...]:
    """The lines every signed answer text carries after its version line."""
    return (
        "cid: " + proof["cid"],
        "model: " + proof["model"],
        "system_sha256: " + proof["system_sha256"],
        "prompt_sha256: " + proof["prompt_sha256"],
        "answer_sha256: " + proof["answer_sha256"],
        "provider_proof_sha256: " + proof["provider_proof_sha256"],
    )


def answer_text(proof: Dict[str, Any]) -> str:
    """The exact text the contract signs for an answer (version 1)."""
    return "\n".join((ANSWER_HEADER_V1,) + answer_lines(proof))


def attest_message(cid: str, signer: str, encryption_key: str, nonce: str) -> str:
    """The exact text the contract attests at /attestation (version 1)."""
    return "\n".join(
        [
            ATTEST_HEADER_V1,
            "cid: " + cid,
            "signer: " + signer,
            "encryption_key: " + encryption_key,
            "nonce: " + nonce,
        ]
    )


def recover_signer(text: str, signature: Any) -> str:
    """The 0x address (EIP-55) whose EIP-191 personal_sign of `text` is `signature`."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    if not isinstance(signature, str) or not _PROOF_SIGNATURE.match(signature):
        raise ProofError("signature", "must be 65 bytes as hex (r, s, v)")
    raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    if raw[64] not in (27, 28):
        raise ProofError("signature", "v must be 27 or 28, got " + str(raw[64]))
    try:
        return str(Account.recover_message(encode_defunct(text=text), signature=raw))
    except Exception as error:
        problem = "no signer recovers from it (" + type(error).__name__ + ")"
        raise ProofError("signature", problem) from None


ANSWER_HASHES = ("system_sha256", "prompt_sha256", "answer_sha256")


def check_proof_shape(
    proof: Any,
    fields: Tuple[str, ...] = PROOF_FIELDS,
    version: int = PROOF_VERSION,
    hashes: Tuple[str, ...] = ANSWER_HASHES,
    addresses: Tuple[str, ...] = ("signer",),
) -> None:
    """Every field present, typed and one line; nothing else; the version given."""
    if not isinstance(proof, dict):
        raise ProofError("proof", "missing or not a JSON object")
    extra = sorted(set(proof) - set(fields))
    if extra:
        raise ProofError(extra[0], "unknown proof field")
    for name in fields:
        if name not in proof:
            raise ProofError(name, "missing from the proof")
    got = proof["version"]
    if type(got) is not int or got != version:
        raise ProofError("version", "unsupported version " + repr(got)[:20])
    for name in fields[1:]:
        value = proof[name]
        if not isinstance(value, str) or not _PROOF_ONE_LINE.match(value):
            raise ProofError(name, "must be a one-line string")
    for name in hashes:
        if not _PROOF_SHA256_HEX.match(proof[name]):
            raise ProofError(name, "must be 64 lowercase hex digits")
    provider = proof["provider_proof_sha256"]
    if provider != NO_PROVIDER_PROOF and not _PROOF_SHA256_HEX.match(provider):
        problem = "must be 64 lowercase hex digits or 'none'"
        raise ProofError("provider_proof_sha256", problem)
    for name in addresses:
        if not _PROOF_ADDRESS.match(proof[name]):
            raise ProofError(name, "must be a 0x address of 40 hex digits")


def _expect(field: str, got: Any, wanted: Any, what: str) -> None:
    if got != wanted:
        raise ProofError(field, "does not match " + what)


def check_answer(
    proof: Any,
    answer: str,
    prompt: str,
    cid: str,
    signers: Iterable[str],
    model: Optional[str] = None,
    system: Optional[str] = None,
    provider_proof: Any = None,
) -> str:
    """Verify one answer's proof; return the signer's address or raise ProofError.

    `answer` and `prompt` are the texts received and sent, `cid` the CID the request
    went to, `signers` the pinned addresses (any case), `model` the model the result
    names (or None), `system` the system prompt when the caller knows it,
    `provider_proof` the nested provider proof when the answer carries one.
    """
    check_proof_shape(proof)
    _expect("cid", proof["cid"], cid, "the CID the request went to (" + cid + ")")
    if model is not None:
        _expect("model", proof["model"], model, "the model of the answer")
    _expect(
        "prompt_sha256",
        proof["prompt_sha256"],
        sha256_hex(prompt),
        "sha256 of the prompt",
    )
    _expect(
        "answer_sha256",
        proof["answer_sha256"],
        sha256_hex(answer),
        "sha256 of the answer",
    )
    if system is not None:
        wanted = sha256_hex(system)
        _expect(
            "system_sha256",
            proof["system_sha256"],
            wanted,
            "sha256 of the system prompt",
        )
    provider = proof["provider_proof_sha256"]
    if provider_proof is None:
        what = "'none' (the answer carries no provider proof)"
        _expect("provider_proof_sha256", provider, NO_PROVIDER_PROOF, what)
    else:
        wanted = provider_proof_sha256(provider_proof)
        _expect(
            "provider_proof_sha256", provider, wanted, "sha256 of the provider proof"
        )
    recovered = recover_signer(answer_text(proof), proof["signature"])
    what = "the proof's signer (recovered " + recovered + ")"
    _expect("signature", recovered.lower(), proof["signer"].lower(), what)
    pinned = set(address.lower() for address in signers)
    if not pinned:
        raise ProofError(
            "signer", "no pinned signer to check " + recovered + " against"
        )
    if recovered.lower() not in pinned:
        raise ProofError("signer", recovered + " is not a pinned signer for " + cid)
    return recovered


# --- END answer verifier ---


# --- BEGIN attestation verifier (kit/trust/core.py) ---
# The /attestation check of the agent-contract kit, copied from kit/trust/core.py by `kit tool`:
# the document's fields and message, the report_data binding of shared/REFERENCE.md section 6
# (keccak256(0x65 || app_address || message) || 32 zero bytes) and SGX DCAP verification with
# dcap-qvl. The module around it imports json, re, subprocess, sys and typing's Any, Dict,
# Iterable, Optional, Tuple, and holds the answer verifier above.
ATTESTATION_FIELDS = (
    "cid",
    "signer",
    "encryption_key",
    "nonce",
    "message",
    "worker_public_key",
    "worker_signature",
    "quote",
    "quote_type",
)
APP_DATA_CONTENT_TYPE = 0x65  # wapod-crypto-types ContentType::AppData
# TCB statuses accepted by default (dcap-qvl's names); OutOfDate*, Revoked and any other are not
DEFAULT_ACCEPTED_STATUSES = (
    "UpToDate",
    "SWHardeningNeeded",
    "ConfigurationNeeded",
    "ConfigurationAndSWHardeningNeeded",
)
_ATTEST_NONCE = re.compile(r"^[0-9a-f]{64}\Z")
_ATTEST_KEY = re.compile(r"^(0x)?0[23][0-9a-fA-F]{64}\Z")
_ATTEST_HEX = re.compile(r"^(0x)?([0-9a-fA-F]{2})+\Z")
# dcap-qvl's get_collateral runs on its own native async runtime; with dcap-qvl 0.7.0 an
# interpreter that ran it sometimes dies with SIGSEGV at exit (one run in five, here). So it
# runs in a child process: that cannot take the caller down, and a hung fetch is killed at
# the timeout. argv[1] the PCCS URL, stdin the quote as hex, stdout the collateral's JSON.
_COLLATERAL_CHILD = """
import asyncio, sys
import dcap_qvl
async def fetch(url, quote):
    return (await dcap_qvl.get_collateral(url, quote)).to_json()
try:
    text = asyncio.run(fetch(sys.argv[1], bytes.fromhex(sys.stdin.read().strip())))
except Exception as exc:
    sys.stderr.write(" ".join(str(exc).split())[:300] or type(exc).__name__)
    sys.exit(1)
sys.stdout.write(text)
sys.stdout.flush()
"""


def hex_bytes(field: str, value: Any) -> bytes:
    """Bytes of a hex string (0x optional); ProofError naming `field` otherwise."""
    if not isinstance(value, str) or not _ATTEST_HEX.match(value):
        raise ProofError(field, "missing or not hex")
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)


def check_attestation_fields(document: Any, cid: str, nonce: str) -> Dict[str, str]:
    """The document's text fields once shapes, nonce, cid and message all check out."""
    if not _ATTEST_NONCE.match(nonce):
        raise ProofError("nonce", "the nonce sent must be 64 lowercase hex digits")
    if not isinstance(document, dict):
        raise ProofError("attestation", "not a JSON object")
    if document.get("quote") is None:
        raise ProofError(
            "quote", "the runtime gave no quote: nothing attests the signer"
        )
    fields = {}
    for name in ATTESTATION_FIELDS:
        value = document.get(name)
        if not isinstance(value, str) or not value:
            raise ProofError(name, "missing or not a string")
        fields[name] = value
    if fields["nonce"] != nonce:
        raise ProofError("nonce", "differs from the fresh nonce sent (a replay)")
    if fields["cid"] != cid:
        raise ProofError("cid", "the attestation is for another CID, not " + cid)
    if not _PROOF_ADDRESS.match(fields["signer"]):
        raise ProofError("signer", "must be a 0x address of 40 hex digits")
    if not _ATTEST_KEY.match(fields["encryption_key"]):
        problem = "must be a compressed secp256k1 key (33 bytes, hex)"
        raise ProofError("encryption_key", problem)
    rebuilt = attest_message(
        fields["cid"], fields["signer"], fields["encryption_key"], fields["nonce"]
    )
    if fields["message"] != rebuilt:
        raise ProofError("message", "is not the attest v1 text of these fields")
    for name in ("worker_public_key", "worker_signature", "quote"):
        hex_bytes(name, fields[name])
    return fields


def report_data_for(app_address: bytes, message: str) -> bytes:
    """keccak256(0x65 || app_address || message) || 32 zero bytes."""
    from eth_hash.auto import keccak

    if len(app_address) != 32:
        raise ProofError("app_address", "must be 32 bytes")
    data = bytes([APP_DATA_CONTENT_TYPE]) + app_address + message.encode("utf-8")
    return bytes(keccak(data)) + bytes(32)


def fetch_collateral_json(pccs_url: str, quote: bytes, timeout: float) -> str:
    """dcap_qvl.get_collateral in a child process, killed at `timeout` seconds."""
    command = [sys.executable, "-c", _COLLATERAL_CHILD, pccs_url]
    try:
        done = subprocess.run(
            command, input=quote.hex(), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        problem = "the PCCS did not answer within " + str(timeout) + " s"
        raise ProofError("collateral", problem) from None
    if not done.stdout.strip():  # the JSON counts even if the child then died at exit
        problem = done.stderr.strip()[:300] or "exit status " + str(done.returncode)
        raise ProofError("collateral", "fetching it failed (" + problem + ")")
    return done.stdout


def check_sgx_quote(
    quote: bytes,
    expected_report_data: bytes,
    mr_enclaves: Iterable[bytes],
    collateral: Any,
    now: int,
    accepted_statuses: Iterable[str] = DEFAULT_ACCEPTED_STATUSES,
) -> Dict[str, Any]:
    """DCAP-verify an SGX quote (dcap-qvl: Intel root CA pinned), then its TCB status,
    MRENCLAVE and report_data; returns status, mr_enclave, mr_signer, advisory_ids."""
    import dcap_qvl  # type: ignore

    try:
        parsed = dcap_qvl.parse_quote(quote)
    except (ValueError, TypeError) as error:
        raise ProofError(
            "quote", "not a DCAP quote (" + str(error)[:200] + ")"
        ) from None
    if not parsed.is_sgx():
        raise ProofError(
            "quote_type", "the quote is " + parsed.quote_type() + ", not SGX"
        )
    try:
        verified = dcap_qvl.verify(quote, collateral, now)
    except (ValueError, TypeError) as error:
        problem = (
            "DCAP verification failed (" + " ".join(str(error).split())[:200] + ")"
        )
        raise ProofError("quote", problem) from None
    accepted = list(accepted_statuses)
    if verified.status not in accepted:
        problem = "TCB status " + verified.status + " is not accepted"
        raise ProofError("quote.status", problem + " (" + ", ".join(accepted) + ")")
    report = parsed.report
    pinned = list(mr_enclaves)
    if report.mr_enclave not in pinned:
        problem = report.mr_enclave.hex() + " is not a pinned MRENCLAVE"
        raise ProofError("mr_enclave", problem if pinned else "none pinned: " + problem)
    if report.report_data != expected_report_data:
        raise ProofError("report_data", "the quote does not bind the expected data")
    return {
        "status": verified.status,
        "mr_enclave": report.mr_enclave.hex(),
        "mr_signer": report.mr_signer.hex(),
        "advisory_ids": list(verified.advisory_ids),
    }


# --- END attestation verifier ---
