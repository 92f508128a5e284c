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

from pathlib import Path

BEGIN_MARKER = "# --- BEGIN answer verifier (kit/trust/core.py) ---"
END_MARKER = "# --- END answer verifier ---"


def verifier_source() -> str:
    """The embeddable region of this module, markers included, as the tool renders it."""
    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index("\n" + BEGIN_MARKER + "\n") + 1
    end = text.index("\n" + END_MARKER + "\n", start) + 1 + len(END_MARKER)
    return text[start:end] + "\n"


# --- BEGIN answer verifier (kit/trust/core.py) ---
# The answer verifier of the agent-contract kit, copied from kit/trust/core.py by `kit tool`.
# It rebuilds the signed text from the proof and what was sent and received, recovers the
# EIP-191 signer with eth-account, and refuses anything unexpected, naming the field.
import hashlib as _hashlib
import json as _json
import re as _re

ANSWER_HEADER_V1 = "agent-contract-kit answer v1"
ATTEST_HEADER_V1 = "agent-contract-kit attest v1"
PROOF_VERSION = 1
PROOF_FIELDS = (
    "version", "cid", "model", "system_sha256", "prompt_sha256", "answer_sha256",
    "provider_proof_sha256", "signer", "signature",
)
NO_PROVIDER_PROOF = "none"
_SHA256_HEX = _re.compile(r"^[0-9a-f]{64}$")
_ADDRESS = _re.compile(r"^0x[0-9a-fA-F]{40}$")
_SIGNATURE = _re.compile(r"^(0x)?[0-9a-fA-F]{130}$")
_ONE_LINE = _re.compile(r"^[^\r\n]+$")


class ProofError(Exception):
    """A proof that does not verify; `field` names what failed."""

    def __init__(self, field, problem):
        self.field = field
        self.problem = problem
        super().__init__(field + ": " + problem)


def sha256_hex(text):
    """Hex sha256 of a text's UTF-8 bytes."""
    return _hashlib.sha256(text.encode("utf-8")).hexdigest()


def provider_proof_sha256(provider_proof):
    """Hex sha256 of a provider proof's canonical JSON (sorted keys, no spaces, UTF-8)."""
    canonical = _json.dumps(provider_proof, sort_keys=True, separators=(",", ":"),
                            ensure_ascii=False)
    return sha256_hex(canonical)


def answer_text(proof):
    """The exact text the contract signs for an answer (version 1)."""
    return "\n".join([
        ANSWER_HEADER_V1,
        "cid: " + proof["cid"],
        "model: " + proof["model"],
        "system_sha256: " + proof["system_sha256"],
        "prompt_sha256: " + proof["prompt_sha256"],
        "answer_sha256: " + proof["answer_sha256"],
        "provider_proof_sha256: " + proof["provider_proof_sha256"],
    ])


def attest_message(cid, signer, encryption_key, nonce):
    """The exact text the contract attests at /attestation (version 1)."""
    return "\n".join([
        ATTEST_HEADER_V1,
        "cid: " + cid,
        "signer: " + signer,
        "encryption_key: " + encryption_key,
        "nonce: " + nonce,
    ])


def recover_signer(text, signature):
    """The 0x address (EIP-55) whose EIP-191 personal_sign of `text` is `signature` (hex)."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    if not isinstance(signature, str) or not _SIGNATURE.match(signature):
        raise ProofError("signature", "must be 65 bytes as hex (r, s, v)")
    raw = bytes.fromhex(signature[2:] if signature.startswith("0x") else signature)
    if raw[64] not in (27, 28):
        raise ProofError("signature", "v must be 27 or 28, got " + str(raw[64]))
    try:
        return Account.recover_message(encode_defunct(text=text), signature=raw)
    except Exception as error:
        raise ProofError("signature", "no signer recovers from it ("
                         + type(error).__name__ + ")") from None


def check_proof_shape(proof):
    """Every field present, typed and one line; nothing else; version 1."""
    if not isinstance(proof, dict):
        raise ProofError("proof", "missing or not a JSON object")
    extra = sorted(set(proof) - set(PROOF_FIELDS))
    if extra:
        raise ProofError(extra[0], "unknown proof field")
    for name in PROOF_FIELDS:
        if name not in proof:
            raise ProofError(name, "missing from the proof")
    if type(proof["version"]) is not int or proof["version"] != PROOF_VERSION:
        raise ProofError("version", "unsupported proof version " + repr(proof["version"])[:20])
    for name in PROOF_FIELDS[1:]:
        if not isinstance(proof[name], str) or not _ONE_LINE.match(proof[name]):
            raise ProofError(name, "must be a one-line string")
    for name in ("system_sha256", "prompt_sha256", "answer_sha256"):
        if not _SHA256_HEX.match(proof[name]):
            raise ProofError(name, "must be 64 lowercase hex digits")
    provider = proof["provider_proof_sha256"]
    if provider != NO_PROVIDER_PROOF and not _SHA256_HEX.match(provider):
        raise ProofError("provider_proof_sha256", "must be 64 lowercase hex digits or 'none'")
    if not _ADDRESS.match(proof["signer"]):
        raise ProofError("signer", "must be a 0x address of 40 hex digits")


def _expect(field, got, wanted, what):
    if got != wanted:
        raise ProofError(field, "does not match " + what)


def check_answer(proof, answer, prompt, cid, signers, model=None, system=None,
                 provider_proof=None):
    """Verify one answer's proof; return the signer's address or raise ProofError.

    `answer` and `prompt` are the texts received and sent, `cid` the CID the request went to,
    `signers` the pinned addresses (any case), `model` the model the result names (or None),
    `system` the system prompt when the caller knows it, `provider_proof` the nested provider
    proof when the answer carries one.
    """
    check_proof_shape(proof)
    _expect("cid", proof["cid"], cid, "the CID the request went to (" + str(cid) + ")")
    if model is not None:
        _expect("model", proof["model"], model, "the model of the answer")
    _expect("prompt_sha256", proof["prompt_sha256"], sha256_hex(prompt), "sha256 of the prompt")
    _expect("answer_sha256", proof["answer_sha256"], sha256_hex(answer), "sha256 of the answer")
    if system is not None:
        _expect("system_sha256", proof["system_sha256"], sha256_hex(system),
                "sha256 of the system prompt")
    if provider_proof is None:
        _expect("provider_proof_sha256", proof["provider_proof_sha256"], NO_PROVIDER_PROOF,
                "'none' (the answer carries no provider proof)")
    else:
        _expect("provider_proof_sha256", proof["provider_proof_sha256"],
                provider_proof_sha256(provider_proof), "sha256 of the provider proof")
    recovered = recover_signer(answer_text(proof), proof["signature"])
    _expect("signature", recovered.lower(), proof["signer"].lower(),
            "the proof's signer (recovered " + recovered + ")")
    pinned = set(address.lower() for address in signers)
    if not pinned:
        raise ProofError("signer", "no pinned signer to check " + recovered + " against")
    if recovered.lower() not in pinned:
        raise ProofError("signer", recovered + " is not a pinned signer for " + cid)
    return recovered
# --- END answer verifier ---
