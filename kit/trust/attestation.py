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

import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from kit import jsonsafe
from kit.errors import GatewayError, InputError
from kit.trust.core import check_attestation_fields, hex_bytes
from kit.trust.errors import refusals
from kit.trust.quotes import Attestation, AttestationPolicy, QuoteVerdict, verify_by_type

MAX_DOCUMENT_BYTES = 256 * 1024


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


def parse_attestation(document: Any, *, cid: str, nonce: str) -> Attestation:
    """Check the document's fields, nonce, cid and message (kit.trust.core, the same code the
    generated tool runs); the quote is checked separately."""
    with refusals():
        fields = check_attestation_fields(document, cid, nonce)
        quote = hex_bytes("quote", fields["quote"])
    return Attestation(
        cid=fields["cid"], signer=fields["signer"], encryption_key=fields["encryption_key"],
        nonce=fields["nonce"], message=fields["message"],
        worker_public_key=fields["worker_public_key"],
        worker_signature=fields["worker_signature"], quote=quote,
        quote_type=fields["quote_type"], document=dict(document),
    )


def verify_attestation(document: Any, *, cid: str, nonce: str,
                       policy: AttestationPolicy) -> AttestedSigner:
    """The signer this document attests for `cid`, or NotVerified naming the failed step."""
    attestation = parse_attestation(document, cid=cid, nonce=nonce)
    verdict = verify_by_type(attestation, policy)
    return AttestedSigner(attestation.cid, attestation.signer, attestation.encryption_key, verdict)


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine (127.0.0.0/8, ::1, localhost): the local runtime."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def attestation_url(gateway_url: str, cid: str) -> str:
    return f"{gateway_url.rstrip('/')}/ipfs/{cid}/attestation"


def fetch_attestation(gateway_url: str, cid: str, nonce: str, *, timeout: float = 30.0) -> Any:
    """GET the contract's /attestation with `nonce`; GatewayError when unreachable or not 200."""
    return fetch_json(attestation_url(gateway_url, cid), {"nonce": nonce}, timeout=timeout,
                      max_bytes=MAX_DOCUMENT_BYTES)


def fetch_json(url: str, params: dict[str, str], *, timeout: float, max_bytes: int) -> Any:
    """GET a JSON document of at most `max_bytes` (nesting bounded: kit.jsonsafe);
    GatewayError when unreachable, too large, not 200 or not JSON."""
    import requests

    body = bytearray()
    try:
        with requests.get(url, params=params, timeout=timeout, stream=True) as response:
            for chunk in response.iter_content(65536):
                body += chunk
                if len(body) > max_bytes:
                    raise GatewayError(f"{url} sent more than {max_bytes} bytes")
    except requests.Timeout:
        raise GatewayError(f"{url} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        raise GatewayError(f"cannot reach {url} ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise GatewayError(f"{url} answered HTTP {response.status_code}: "
                           f"{body[:200].decode('utf-8', 'replace')}")
    try:
        return jsonsafe.loads(bytes(body))
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
    from kit.ipfs.records import add_signers, load_latest
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
