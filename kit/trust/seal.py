"""Private requests (issue 14): prompts sealed to the contract's attested key, answers sealed to
the requester's key, and the proof (answer text v2) that binds both ciphertexts.

Encryption is ECIES exactly as `eciespy` 0.4.x and `eciesjs` define it by default, through
`eciespy` itself (pinned): it is the format's Python reference, by the same maintainers as
`eciesjs`, small (its ECIES is ~40 lines over coincurve and pycryptodome, which the kit already
depends on), and re-implementing it would only add a way to drift from the format. Its layout,
which the contract's implementation (noble, contract_template) follows and the tests check
against independently (HKDF and AES-GCM from `cryptography`):

    ephemeral public key (65 bytes, uncompressed) || nonce (16) || tag (16) || AES-256-GCM body
    key = HKDF-SHA256(ikm = ephemeral public key (65) || shared point (65, uncompressed),
                      salt = none (32 zero bytes), info = empty, length 32)

The sealed request (the prompt the mech passes on) is `{"sealed": "<base64>", "v": 1}`; inside,
the JSON `{"prompt", "reply_to": "<compressed secp256k1 public key, hex>", "model"?, "nonce":
"<64 hex>"}`. The contract answers `{"sealed_answer": "<base64>", "model", "usage", "proof"}`;
the sealed answer opens to `{"answer", "model", "nonce", "provider_proof"?}`.

The proof (version 2) is public: it travels with the mech's delivery. So its plaintext hashes
are salted with the request's nonce (a secret only the requester and the contract know):
`prompt_sha256 = sha256(nonce bytes || prompt)` and `answer_sha256 = sha256(nonce bytes ||
answer)`; unsalted, a short answer ("yes") could be read off its hash by anyone.

The region between the markers is embedded verbatim in the generated mech tool (after the answer
verifier of kit/trust/core.py, whose ProofError, recover_signer and patterns it uses): the tool
checks the proof over the ciphertexts without any key that could open them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional

from kit.errors import InputError
from kit.trust.core import (  # the answer verifier region the sealed one builds on
    ANSWER_HASHES,
    NO_PROVIDER_PROOF,
    PROOF_FIELDS,
    ProofError,
    answer_lines,
    check_proof_shape,
    _expect,
    provider_proof_sha256,
    recover_signer,
)
from kit.trust.errors import NotVerified, refusals

BEGIN_MARKER = "# --- BEGIN sealed answer verifier (kit/trust/seal.py) ---"
END_MARKER = "# --- END sealed answer verifier ---"


def sealed_verifier_source() -> str:
    """The sealed answer verifier region, markers included, as the tool renders it."""
    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index("\n" + BEGIN_MARKER + "\n") + 1
    stop = text.index("\n" + END_MARKER + "\n", start) + 1 + len(END_MARKER)
    return text[start:stop] + "\n"


# --- BEGIN sealed answer verifier (kit/trust/seal.py) ---
# The sealed answer check of the agent-contract kit, copied from kit/trust/seal.py by
# `kit tool`. It sees only ciphertexts: it checks their sha256 against the proof (answer
# text v2), the CID, the signature and the pinned signers. It needs the answer verifier
# above (ProofError, recover_signer, _expect and its patterns); the module around it
# imports base64, binascii, hashlib, json and re.
SEALED_ANSWER_HEADER_V2 = "agent-contract-kit answer v2"
SEALED_PROOF_VERSION = 2
SEALED_ENVELOPE_VERSION = 1
SEALED_PROOF_FIELDS = (
    PROOF_FIELDS[:-2]  # version 1's fields before signer and signature
    + ("sealed_request_sha256", "sealed_answer_sha256", "requester")
    + PROOF_FIELDS[-2:]
)
# ephemeral public key (65) + AES-GCM nonce (16) + tag (16): the least ECIES ciphertext
ECIES_OVERHEAD = 97
_SEALED_BASE64 = re.compile(r"^[A-Za-z0-9+/]+={0,2}\Z")


def sealed_answer_text(proof: Dict[str, Any]) -> str:
    """The exact text the contract signs for a sealed answer (version 2): version 1's lines,
    then the ciphertexts' hashes and the requester."""
    sealed_lines = (
        "sealed_request_sha256: " + proof["sealed_request_sha256"],
        "sealed_answer_sha256: " + proof["sealed_answer_sha256"],
        "requester: " + proof["requester"],
    )
    return "\n".join((SEALED_ANSWER_HEADER_V2,) + answer_lines(proof) + sealed_lines)


def sealed_bytes(field: str, value: Any) -> bytes:
    """The ciphertext in a base64 field (standard alphabet, padded), else ProofError."""
    if not isinstance(value, str) or not _SEALED_BASE64.match(value):
        raise ProofError(field, "missing or not base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ProofError(field, "not valid base64") from None
    if len(raw) <= ECIES_OVERHEAD:
        raise ProofError(field, "too short to be an ECIES ciphertext")
    return raw


def sealed_request_bytes(prompt: Any) -> Optional[bytes]:
    """The ciphertext of a sealed request `{"sealed", "v": 1}` given as the prompt text.

    None when the prompt is not one (a JSON object with "sealed"); ProofError when it
    is malformed.
    """
    if not isinstance(prompt, str) or not prompt.lstrip().startswith("{"):
        return None
    if '"sealed"' not in prompt:
        return None
    # only a flat object: json.loads then cannot recurse (see kit/jsonsafe.py)
    if prompt.count("{") != 1 or prompt.count("}") != 1 or "[" in prompt:
        raise ProofError("sealed_request", 'must be the flat object {"sealed", "v"}')
    try:
        envelope = json.loads(prompt)
    except ValueError:
        raise ProofError("sealed_request", "is not valid JSON") from None
    if not isinstance(envelope, dict):
        raise ProofError("sealed_request", 'must be the flat object {"sealed", "v"}')
    if set(envelope) != {"sealed", "v"}:
        raise ProofError("sealed_request", 'must hold exactly "sealed" and "v"')
    version = envelope["v"]
    if type(version) is not int or version != SEALED_ENVELOPE_VERSION:
        raise ProofError("sealed_request", "unsupported version " + repr(version)[:20])
    return sealed_bytes("sealed_request", envelope["sealed"])


def check_sealed_proof_shape(proof: Any) -> None:
    """Every v2 field present, typed and one line; nothing else."""
    sealed_hashes = ("sealed_request_sha256", "sealed_answer_sha256")
    check_proof_shape(
        proof,
        SEALED_PROOF_FIELDS,
        SEALED_PROOF_VERSION,
        ANSWER_HASHES + sealed_hashes,
        ("requester", "signer"),
    )


def check_sealed_proof(
    proof: Any,
    sealed_request: bytes,
    sealed_answer: bytes,
    cid: str,
    signers: Iterable[str],
) -> str:
    """Verify a sealed answer's proof over the two ciphertexts; return the signer.

    `sealed_request` is the ciphertext sent, `sealed_answer` the one received, `cid`
    the CID the request went to, `signers` the pinned addresses (any case). Raises
    ProofError.
    """
    check_sealed_proof_shape(proof)
    _expect("cid", proof["cid"], cid, "the CID the request went to (" + cid + ")")
    wanted = hashlib.sha256(sealed_request).hexdigest()
    what = "sha256 of the sealed request sent"
    _expect("sealed_request_sha256", proof["sealed_request_sha256"], wanted, what)
    wanted = hashlib.sha256(sealed_answer).hexdigest()
    what = "sha256 of the sealed answer received"
    _expect("sealed_answer_sha256", proof["sealed_answer_sha256"], wanted, what)
    recovered = recover_signer(sealed_answer_text(proof), proof["signature"])
    what = "the proof's signer (recovered " + recovered + ")"
    _expect("signature", recovered.lower(), proof["signer"].lower(), what)
    pinned = set(address.lower() for address in signers)
    if not pinned:
        problem = "no pinned signer to check " + recovered + " against"
        raise ProofError("signer", problem)
    if recovered.lower() not in pinned:
        raise ProofError("signer", recovered + " is not a pinned signer for " + cid)
    return recovered


# --- END sealed answer verifier ---

_KEY_HEX = re.compile(r"^(0x)?([0-9a-fA-F]{64})\Z")
_COMPRESSED_KEY = re.compile(r"^(0x)?(0[23][0-9a-fA-F]{64})\Z")
_NONCE = re.compile(r"^[0-9a-f]{64}\Z")
INNER_ANSWER_FIELDS = {"answer", "model", "nonce", "provider_proof"}


def _ecies_config() -> Any:
    """eciespy's default configuration, as a fresh object (its module-level one is mutable)."""
    from ecies.config import Config

    return Config()


def ecies_encrypt(public_key: bytes, data: bytes) -> bytes:
    """ECIES-encrypt `data` to a secp256k1 public key (33 or 65 bytes), eciespy's default format."""
    import ecies

    return ecies.encrypt(public_key, data, config=_ecies_config())


def ecies_decrypt(secret: bytes, data: bytes) -> bytes:
    """Open an ECIES ciphertext; NotVerified (naming nothing of its content) when it does not."""
    import ecies

    if len(data) <= ECIES_OVERHEAD:
        raise NotVerified("sealed_answer", "too short to be an ECIES ciphertext")
    try:
        return ecies.decrypt(secret, data, config=_ecies_config())
    except Exception:  # a wrong key, a bad point or a failed tag: all the same to the caller
        raise NotVerified("sealed_answer", "does not open with this key (wrong recipient or "
                                           "tampered ciphertext)") from None


def salted_sha256(nonce: str, text: str) -> str:
    """Hex sha256 of the nonce's 32 bytes followed by the text's UTF-8 bytes (proof v2)."""
    return hashlib.sha256(bytes.fromhex(nonce) + text.encode("utf-8")).hexdigest()


# --- the requester's key ---------------------------------------------------------------------


@dataclass(frozen=True)
class RequesterKey:
    """A secp256k1 account key: the secret stays out of repr and of every message."""

    secret: bytes = field(repr=False)
    public_key: str  # compressed, 33 bytes as hex (what `reply_to` carries)
    address: str  # EIP-55


def key_from_hex(text: str, where: str = "the key") -> RequesterKey:
    """A key from hex (0x optional, surrounding whitespace ignored); InputError otherwise."""
    from coincurve import PrivateKey

    match = _KEY_HEX.match(text.strip())
    if match is None:
        raise InputError(f"{where} is not a secp256k1 private key (64 hex digits, 0x optional; "
                         "content not shown)")
    secret = bytes.fromhex(match.group(2))
    try:
        private = PrivateKey(secret)
    except Exception:
        raise InputError(f"{where} is not a valid secp256k1 private key (content not "
                         "shown)") from None
    return RequesterKey(secret, private.public_key.format(True).hex(),
                        address_of(private.public_key.format(False)))


def load_key(path: Path | str) -> RequesterKey:
    """The key file mech-client uses (`ethereum_private_key.txt`: hex, 0x optional)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a hex key file (content not shown)") from None
    return key_from_hex(text, str(path))


def address_of(public_key: bytes) -> str:
    """The EIP-55 address of an uncompressed secp256k1 public key (65 bytes)."""
    from eth_utils import keccak, to_checksum_address

    return str(to_checksum_address(keccak(public_key[1:])[-20:]))


def compressed_key(value: str, field_name: str = "encryption_key") -> bytes:
    """A compressed secp256k1 public key from hex, checked to be on the curve."""
    from coincurve import PublicKey

    match = _COMPRESSED_KEY.match(value) if isinstance(value, str) else None
    if match is None:
        raise NotVerified(field_name, "must be a compressed secp256k1 key (33 bytes, hex)")
    raw = bytes.fromhex(match.group(2))
    try:
        PublicKey(raw)
    except Exception:
        raise NotVerified(field_name, "is not a point on secp256k1") from None
    return raw


# --- sealing a request -----------------------------------------------------------------------


@dataclass(frozen=True)
class SealedRequest:
    """A sealed request: `text` is what the mech passes on as the prompt."""

    text: str
    ciphertext: bytes = field(repr=False)
    nonce: str = field(repr=False)  # the salt of the proof's plaintext hashes: keep it private

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.ciphertext).hexdigest()


def seal_request(prompt: str, encryption_key: str, key: RequesterKey, *,
                 model: str | None = None, nonce: str | None = None) -> SealedRequest:
    """Seal `prompt` to the contract's attested `encryption_key`; answers come back to `key`."""
    if not isinstance(prompt, str) or not prompt:
        raise InputError("the prompt must be a non-empty string")
    nonce = nonce if nonce is not None else secrets.token_hex(32)
    if not _NONCE.match(nonce):
        raise InputError("the nonce must be 64 lowercase hex digits")
    inner: dict[str, str] = {"prompt": prompt, "reply_to": key.public_key, "nonce": nonce}
    if model is not None:
        inner["model"] = model
    with refusals():
        recipient = compressed_key(encryption_key)
    plain = json.dumps(inner, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    ciphertext = ecies_encrypt(recipient, plain)
    envelope = {"sealed": base64.b64encode(ciphertext).decode("ascii"),
                "v": SEALED_ENVELOPE_VERSION}
    return SealedRequest(json.dumps(envelope, separators=(",", ":")), ciphertext, nonce)


# --- opening an answer -----------------------------------------------------------------------


@dataclass(frozen=True)
class SealedResult:
    """A delivered sealed result: the tool's, the contract's, or a mech delivery of either."""

    sealed_answer: bytes
    proof: Any
    model: str | None
    delivered_request: bytes | None  # the sealed request a mech delivery carries


@dataclass(frozen=True)
class OpenedAnswer:
    answer: str = field(repr=False)
    model: str
    signer: str
    cid: str
    requester: str
    provider_proof: Any = field(default=None, repr=False)
    checked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        view = {"verified": True, "answer": self.answer, "model": self.model,
                "signer": self.signer, "cid": self.cid, "requester": self.requester,
                "checked": list(self.checked)}
        if self.provider_proof is not None:
            view["provider_proof"] = self.provider_proof
        return view


def parse_sealed_result(data: bytes | str | dict[str, Any]) -> SealedResult:
    """Read a delivered sealed result; InputError (exit 2) when it is not one."""
    from kit import jsonsafe

    value: Any = data
    if not isinstance(data, dict):
        try:
            value = jsonsafe.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InputError("the result is not JSON") from None
    delivered = None
    if isinstance(value, dict) and isinstance(value.get("result"), str) and "proof" not in value:
        try:
            with refusals():
                delivered = sealed_request_bytes(value.get("prompt"))
        except NotVerified:
            delivered = None
        try:
            value = jsonsafe.loads(value["result"])
        except ValueError:
            raise InputError("the delivery's 'result' is not a sealed result (JSON)") from None
    if not isinstance(value, dict) or "sealed_answer" not in value:
        raise InputError("the result has no 'sealed_answer': it is not a sealed result")
    if "proof" not in value:
        raise InputError("the result has no 'proof'; it cannot be verified")
    with refusals():
        answer = sealed_bytes("sealed_answer", value["sealed_answer"])
    model = value.get("model") if isinstance(value.get("model"), str) else None
    return SealedResult(answer, value["proof"], model, delivered)


def _request_ciphertext(request: SealedRequest | str | bytes | None,
                        result: SealedResult) -> tuple[bytes, str]:
    if isinstance(request, SealedRequest):
        return request.ciphertext, "given"
    if isinstance(request, bytes):
        return request, "given"
    if isinstance(request, str):
        with refusals():
            ciphertext = sealed_request_bytes(request)
        if ciphertext is None:
            raise InputError('the sealed request must be the JSON {"sealed", "v"} that was sent')
        return ciphertext, "given"
    if result.delivered_request is not None:
        return result.delivered_request, "delivery"
    raise InputError("the sealed request that was sent is needed to check the proof: give it "
                     "(kit decrypt --request FILE)")


def _inner_answer(plain: bytes) -> dict[str, Any]:
    from kit import jsonsafe

    try:
        inner = jsonsafe.loads(plain.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise NotVerified("sealed_answer", "does not hold a JSON answer") from None
    if not isinstance(inner, dict) or not set(inner) <= INNER_ANSWER_FIELDS:
        raise NotVerified("sealed_answer", "is not an answer object (answer, model, nonce)")
    for name in ("answer", "model", "nonce"):
        if not isinstance(inner.get(name), str):
            raise NotVerified("sealed_answer", f"its '{name}' is missing or not a string")
    if not _NONCE.match(inner["nonce"]):
        raise NotVerified("sealed_answer", "its 'nonce' is not 64 lowercase hex digits")
    return inner


def open_answer(result: bytes | str | dict[str, Any] | SealedResult, key: RequesterKey, *,
                signers: Iterable[str], cid: str | None = None,
                request: SealedRequest | str | bytes | None = None,
                prompt: str | None = None) -> OpenedAnswer:
    """Verify a sealed result's whole proof and open its answer with `key`.

    Checked, in order (NotVerified names the first failure, and nothing of the plaintext): the
    proof's shape, CID (`cid`, else the proof's own), the sha256 of the sealed request sent
    (`request`, else the one a mech delivery carries) and of the sealed answer, the signature
    and the pinned `signers`, the requester address (= `key`'s), then the answer opens with
    `key`, names the proof's model, and the salted hashes of the answer (and of `prompt`, when
    given; and the nonce, when `request` is the SealedRequest made here) match.
    """
    sealed = result if isinstance(result, SealedResult) else parse_sealed_result(result)
    request_bytes, source = _request_ciphertext(request, sealed)
    proof = sealed.proof
    expected_cid = cid if cid is not None else (proof.get("cid") if isinstance(proof, dict)
                                                else None)
    if not isinstance(expected_cid, str):
        raise NotVerified("cid", "the proof names no CID and none was given")
    with refusals():
        signer = check_sealed_proof(proof, request_bytes, sealed.sealed_answer, expected_cid,
                                    list(signers))
    if proof["requester"].lower() != key.address.lower():
        raise NotVerified("requester", f"the answer was sealed for {proof['requester']}, not "
                                       f"for this key ({key.address})")
    inner = _inner_answer(ecies_decrypt(key.secret, sealed.sealed_answer))
    checked = ["cid", "sealed_request_sha256 (" + source + ")", "sealed_answer_sha256",
               "signature", "signer", "requester"]
    _check_inner(proof, inner, request, prompt, checked)
    return OpenedAnswer(inner["answer"], proof["model"], signer, expected_cid,
                        proof["requester"], inner.get("provider_proof"), tuple(checked))


def _check_inner(proof: dict[str, Any], inner: dict[str, Any],
                 request: SealedRequest | str | bytes | None, prompt: str | None,
                 checked: list[str]) -> None:
    nonce = inner["nonce"]
    if isinstance(request, SealedRequest):
        if not secrets.compare_digest(nonce, request.nonce):
            raise NotVerified("nonce", "the answer names another request's nonce")
        checked.append("nonce")
    if inner["model"] != proof["model"]:
        raise NotVerified("model", "the sealed answer names another model than the proof")
    if salted_sha256(nonce, inner["answer"]) != proof["answer_sha256"]:
        raise NotVerified("answer_sha256", "does not match the salted sha256 of the answer")
    checked.append("answer_sha256")
    if prompt is not None:
        if salted_sha256(nonce, prompt) != proof["prompt_sha256"]:
            raise NotVerified("prompt_sha256", "does not match the salted sha256 of the prompt "
                                               "given")
        checked.append("prompt_sha256")
    wanted = (NO_PROVIDER_PROOF if inner.get("provider_proof") is None
              else provider_proof_sha256(inner["provider_proof"]))
    if proof["provider_proof_sha256"] != wanted:
        raise NotVerified("provider_proof_sha256", "does not match the sealed answer's "
                                                   "provider proof")
    checked.append("provider_proof_sha256")


__all__ = [
    "OpenedAnswer", "RequesterKey", "SealedRequest", "SealedResult", "check_sealed_proof",
    "key_from_hex", "load_key", "open_answer", "parse_sealed_result", "seal_request",
    "sealed_answer_text", "sealed_request_bytes", "sealed_verifier_source",
]
