"""`GET /ipfs/<cid>/attestation?nonce=<64 hex>`: fetch with a fresh nonce and verify.

The document is `{cid, signer, encryption_key, nonce, message, worker_public_key,
worker_signature, quote, quote_type}` (issue 11). Verification, in order, each step refusing
with the field's name: the fields' shapes, nonce == the one sent, cid == the expected CID,
message == the attest v1 text rebuilt from the fields (kit.trust.core), then the quote by its
`quote_type` (kit.trust.quotes): its report_data must bind the message.

`worker_signature` is carried but not what is trusted: on the real worker it is an sr25519
signature whose key means something only through Phala's worker registry, while the quote binds
the same message to attested hardware. A missing quote (`null`) is refused.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from kit.errors import GatewayError, InputError
from kit.trust.core import attest_message
from kit.trust.errors import NotVerified
from kit.trust.quotes import Attestation, AttestationPolicy, QuoteVerdict, verify_by_type

FIELDS = ("cid", "signer", "encryption_key", "nonce", "message", "worker_public_key",
          "worker_signature", "quote", "quote_type")
MAX_DOCUMENT_BYTES = 256 * 1024
_NONCE = re.compile(r"^[0-9a-f]{64}$")
_ADDRESS = re.compile(r"^0x[0-9a-fA-F]{40}$")
_COMPRESSED_KEY = re.compile(r"^(0x)?0[23][0-9a-fA-F]{64}$")
_HEX = re.compile(r"^(0x)?([0-9a-fA-F]{2})+$")


@dataclass(frozen=True)
class AttestedSigner:
    cid: str
    signer: str
    encryption_key: str
    quote: QuoteVerdict

    def to_dict(self) -> dict[str, Any]:
        return {"verified": True, "cid": self.cid, "signer": self.signer,
                "encryption_key": self.encryption_key, "quote_type": self.quote.quote_type,
                "status": self.quote.status, "production": self.quote.production,
                "details": dict(self.quote.details)}


def new_nonce() -> str:
    """A fresh random nonce: 32 bytes as 64 lowercase hex digits."""
    return secrets.token_hex(32)


def _text(document: Mapping[str, Any], name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise NotVerified(name, "missing or not a string")
    return value


def _hex_bytes(name: str, value: str) -> bytes:
    if not _HEX.match(value):
        raise NotVerified(name, "must be hex")
    return bytes.fromhex(value.removeprefix("0x"))


def parse_attestation(document: Any, *, cid: str, nonce: str) -> Attestation:
    """Check the document's fields, nonce, cid and message; the quote is checked separately."""
    if not isinstance(document, dict):
        raise NotVerified("attestation", "not a JSON object")
    if document.get("quote") is None:
        raise NotVerified("quote", "the runtime gave no quote: nothing attests this signer")
    text = {name: _text(document, name) for name in FIELDS}
    if text["nonce"] != nonce:
        raise NotVerified("nonce", "differs from the fresh nonce sent (a replayed attestation)")
    if text["cid"] != cid:
        raise NotVerified("cid", f"the attestation is for {text['cid']:.80}, not {cid}")
    if not _ADDRESS.match(text["signer"]):
        raise NotVerified("signer", "must be a 0x address of 40 hex digits")
    if not _COMPRESSED_KEY.match(text["encryption_key"]):
        raise NotVerified("encryption_key", "must be a compressed secp256k1 key (33 bytes, hex)")
    rebuilt = attest_message(text["cid"], text["signer"], text["encryption_key"], text["nonce"])
    if text["message"] != rebuilt:
        raise NotVerified("message", "is not the attest v1 text of these fields")
    _hex_bytes("worker_public_key", text["worker_public_key"])
    _hex_bytes("worker_signature", text["worker_signature"])
    return Attestation(
        cid=text["cid"], signer=text["signer"], encryption_key=text["encryption_key"],
        nonce=text["nonce"], message=text["message"],
        worker_public_key=text["worker_public_key"], worker_signature=text["worker_signature"],
        quote=_hex_bytes("quote", text["quote"]), quote_type=text["quote_type"],
        document=dict(document),
    )


def verify_attestation(document: Any, *, cid: str, nonce: str,
                       policy: AttestationPolicy) -> AttestedSigner:
    """The signer this document attests for `cid`, or NotVerified naming the failed step."""
    if not _NONCE.match(nonce):
        raise NotVerified("nonce", "the nonce sent must be 64 lowercase hex digits")
    attestation = parse_attestation(document, cid=cid, nonce=nonce)
    verdict = verify_by_type(attestation, policy)
    return AttestedSigner(attestation.cid, attestation.signer, attestation.encryption_key, verdict)


def attestation_url(gateway_url: str, cid: str) -> str:
    return f"{gateway_url.rstrip('/')}/ipfs/{cid}/attestation"


def fetch_attestation(gateway_url: str, cid: str, nonce: str, *, timeout: float = 30.0) -> Any:
    """GET the contract's /attestation with `nonce`; GatewayError when unreachable or not 200."""
    import requests

    url = attestation_url(gateway_url, cid)
    body = bytearray()
    try:
        with requests.get(url, params={"nonce": nonce}, timeout=timeout, stream=True) as response:
            for chunk in response.iter_content(65536):
                body += chunk
                if len(body) > MAX_DOCUMENT_BYTES:
                    raise GatewayError(f"{url} sent more than {MAX_DOCUMENT_BYTES} bytes")
    except requests.Timeout:
        raise GatewayError(f"{url} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise GatewayError(f"cannot reach {url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise GatewayError(f"{url} answered HTTP {response.status_code}: "
                           f"{body[:200].decode('utf-8', 'replace')}")
    try:
        return json.loads(body)
    except ValueError:
        raise GatewayError(f"{url} answered with a body that is not JSON") from None


def attest(gateway_url: str, cid: str, *, policy: AttestationPolicy,
           timeout: float = 30.0) -> AttestedSigner:
    """Fetch `/attestation` with a fresh random nonce and verify it."""
    nonce = new_nonce()
    document = fetch_attestation(gateway_url, cid, nonce, timeout=timeout)
    return verify_attestation(document, cid=cid, nonce=nonce, policy=policy)


@dataclass(frozen=True)
class DeploymentAttestation:
    attested: AttestedSigner
    gateway_url: str
    recorded: bool  # False: the signer was already in the deployment record

    def to_dict(self) -> dict[str, Any]:
        return {**self.attested.to_dict(), "gateway_url": self.gateway_url,
                "recorded": self.recorded}


def deployed_code(project_dir: Path, artifact: str, cid: str) -> bytes | None:
    """The built contract when its bytes still hash to the deployed CID, else None."""
    from kit.cid import bytes_cid, cid_version_of

    try:
        data = (Path(project_dir) / artifact).read_bytes()
    except OSError:
        return None
    return data if bytes_cid(data, version=cid_version_of(cid)) == cid else None


def attest_deployment(project_dir: Path, *, gateway_url: str | None = None,
                      policy: AttestationPolicy = AttestationPolicy(),
                      timeout: float = 30.0) -> DeploymentAttestation:
    """Attest the latest deployment's signer at its gateway and add it to the record.

    The local app address (dev quotes) is sha256 of the built contract, used only when its
    bytes still hash to the deployed CID."""
    from kit.records import add_signers, load_latest
    from kit.trust.quotes import sha256_app_address

    latest = load_latest(project_dir)
    if latest is None:
        raise InputError("no deployment recorded in this project: run `kit deploy` first")
    if policy.local_app_address is None:
        code = deployed_code(project_dir, latest.artifact, latest.cid)
        if code is not None:
            policy = replace(policy, local_app_address=sha256_app_address(code))
    gateway = gateway_url or latest.gateway_url
    attested = attest(gateway, latest.cid, policy=policy, timeout=timeout)
    recorded = add_signers(project_dir, latest.cid, [attested.signer])
    return DeploymentAttestation(attested, gateway, recorded)
