"""Confidential-inference providers (issue 12): their attestation report and their signatures.

A confidential provider (Phala's confidential AI API, RedPill: OpenAI-compatible, models in GPU
TEEs; shared/REFERENCE.md section 5) signs each completion with a key generated inside its TEE:

    GET {base_url}/signature/{chat_id}?model=..&signing_algo=ecdsa
        -> {text, signature, signing_address, signing_algo}
    text = sha256_hex(request body) + ":" + sha256_hex(response body)   (the exact bytes)

and attests that key:

    GET {base_url}/attestation/report?model=..&nonce=<64 hex>
        -> {signing_address, signing_algo, request_nonce, intel_quote (hex TDX quote),
            nvidia_payload (JSON text: {nonce, evidence_list, arch}), event_log, info}
        (several GPU nodes: the same fields per node under `all_attestations`)

report_data layout (64 bytes), from the provider's own code: nearai/private-ml-sdk,
vllm-proxy/src/app/quote/quote.py `_build_report_data` (what the proxy asks dstack to quote) and
vllm-proxy/verifiers/attestation_verifier.py `check_report_data` (the verifier its docs give):

    report_data = signing address (20 bytes for ecdsa), zero-padded on the right to 32 bytes
                  || the request nonce (32 bytes)

Anything else fails loudly, naming the field: other signing algorithms, and the newer layout of
the same family that hashes a TLS certificate fingerprint with the address (sha256(address ||
fingerprint)), which this kit does not verify; and a TD in debug mode. What a verified report
proves: a genuine TDX VM (DCAP, dcap-qvl, Intel's root CA), not in debug mode, quoted this
signing address for this fresh nonce. It does not
check which software image that VM runs (its compose hash / mr_config) nor the GPU evidence
(NVIDIA's NRAS verifies that online): both are reported, not trusted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from kit import jsonsafe
from kit.errors import InputError
from kit.trust.errors import NotVerified, refusals

SIGNING_ALGO = "ecdsa"
NONCE_BYTES = 32
MAX_REPORT_BYTES = 2 * 1024 * 1024  # a report with GPU evidence is some hundred kB
PROVIDER_PROOF_FIELDS = ("chat_id", "signature", "signing_address", "text")
_SIGNED_TEXT = re.compile(r"[0-9a-f]{64}:[0-9a-f]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_NONCE = re.compile(r"[0-9a-f]{64}")


def provider_report_data(address: str, nonce: bytes) -> bytes:
    """The 64 report_data bytes a provider's quote carries for `address` and `nonce`."""
    if not _ADDRESS.fullmatch(address or ""):
        raise NotVerified("signing_address", "must be a 0x address of 40 hex digits")
    if len(nonce) != NONCE_BYTES:
        raise NotVerified("nonce", f"must be {NONCE_BYTES} bytes")
    return bytes.fromhex(address[2:]).ljust(32, b"\0") + nonce


def checksum_address(address: str) -> str:
    from eth_utils import to_checksum_address

    return str(to_checksum_address(address))


# --- the attestation report --------------------------------------------------------------


@dataclass(frozen=True)
class GpuPayload:
    """What the report says about NVIDIA GPU evidence (carried, not verified here)."""

    present: bool
    evidence_items: int = 0
    nonce_matches: bool | None = None
    arch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"present": self.present, "evidence_items": self.evidence_items,
                "nonce_matches": self.nonce_matches, "arch": self.arch, "verified": False}


@dataclass(frozen=True)
class ProviderAttestation:
    """One attested signing key: the quote verified and its report_data binding checked."""

    signing_address: str  # EIP-55
    nonce: str
    quote_kind: str  # "tdx" (DCAP-verified) or "dev" (the stand-in's; proves no hardware)
    status: str  # dcap-qvl's TCB status, or "dev"
    production: bool
    report_data: str
    gpu: GpuPayload
    advisory_ids: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {"signing_address": self.signing_address, "nonce": self.nonce,
                "quote_kind": self.quote_kind, "status": self.status,
                "production": self.production, "report_data": self.report_data,
                "advisory_ids": list(self.advisory_ids), "nvidia_payload": self.gpu.to_dict()}


def report_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/attestation/report"


def fetch_report(base_url: str, model: str, nonce: str, *, timeout: float = 30.0) -> Any:
    """GET the provider's attestation report for `nonce`; GatewayError when it fails."""
    from kit.trust.attestation import fetch_json

    return fetch_json(report_url(base_url), {"model": model, "nonce": nonce}, timeout=timeout,
                      max_bytes=MAX_REPORT_BYTES)


def report_entries(document: Any) -> list[dict[str, Any]]:
    """The attested nodes of a report: `all_attestations` when given, else the document."""
    if not isinstance(document, dict):
        raise NotVerified("report", "the attestation report is not a JSON object")
    entries = document.get("all_attestations")
    if entries is None:
        return [document]
    if not isinstance(entries, list) or not entries or \
            not all(isinstance(entry, dict) for entry in entries):
        raise NotVerified("all_attestations", "must be a non-empty list of objects")
    return entries


def verify_report(document: Any, *, nonce: str, allow_dev: bool = False,
                  collateral: Any = None, now: int | None = None, pccs_url: str | None = None,
                  timeout: float = 15.0) -> list[ProviderAttestation]:
    """Every node of the report, verified for `nonce`; NotVerified naming the first failure."""
    if not _NONCE.fullmatch(nonce):
        raise InputError("the nonce sent must be 64 lowercase hex digits")
    return [verify_entry(entry, nonce=nonce, allow_dev=allow_dev, collateral=collateral,
                         now=now, pccs_url=pccs_url, timeout=timeout)
            for entry in report_entries(document)]


def verify_entry(entry: dict[str, Any], *, nonce: str, allow_dev: bool = False,
                 collateral: Any = None, now: int | None = None, pccs_url: str | None = None,
                 timeout: float = 15.0) -> ProviderAttestation:
    algo = entry.get("signing_algo", SIGNING_ALGO)
    if algo != SIGNING_ALGO:
        raise NotVerified("signing_algo", f"{str(algo)[:20]!r} is not supported; the kit "
                                          "checks ecdsa (EIP-191) signatures only")
    address = entry.get("signing_address")
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise NotVerified("signing_address", "missing or not a 0x address of 40 hex digits")
    echoed = entry.get("request_nonce", nonce)
    if echoed != nonce:
        raise NotVerified("request_nonce", "differs from the fresh nonce sent (a replay)")
    quote = _quote_bytes(entry.get("intel_quote"))
    kind, status, advisories, report_data = quote_report_data(
        quote, allow_dev=allow_dev, collateral=collateral, now=now, pccs_url=pccs_url,
        timeout=timeout)
    check_binding(report_data, address, nonce)
    return ProviderAttestation(
        signing_address=checksum_address(address), nonce=nonce, quote_kind=kind, status=status,
        production=kind != "dev", report_data=report_data.hex(),
        gpu=gpu_payload(entry.get("nvidia_payload"), nonce), advisory_ids=advisories)


def _quote_bytes(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise NotVerified("intel_quote", "missing: nothing attests the signing address")
    try:
        return bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise NotVerified("intel_quote", "not hex") from None


def quote_report_data(quote: bytes, *, allow_dev: bool = False, collateral: Any = None,
                      now: int | None = None, pccs_url: str | None = None,
                      timeout: float = 15.0) -> tuple[str, str, tuple[str, ...], bytes]:
    """Verify a TDX quote (kit.trust.tdx) -> (kind, status, advisory ids, report_data).

    Collateral, when not given, comes from `pccs_url` (default: Intel's PCS) through
    kit.trust.core's child-process fetch, killed at `timeout` seconds."""
    from kit.trust import tdx

    if tdx.is_dev_quote(quote):
        if not allow_dev:
            raise NotVerified("intel_quote", "a DEV quote (the kit's stand-in): it proves no "
                                             "hardware and is refused by production "
                                             "verification; --allow-dev-quote for local work")
        return "dev", "dev", (), tdx.verify_dev_quote(quote)["report_data"]
    if collateral is None:
        collateral = _fetch_collateral(quote, pccs_url, timeout)
    status, advisories, values = tdx.verify_dcap(quote, collateral, now, pccs_url,
                                                 timeout=timeout)
    refuse_debug_td(values.get("td_attributes", b""))
    return "tdx", status, advisories, values["report_data"]


def refuse_debug_td(td_attributes: bytes) -> None:
    """TDATTRIBUTES bit 0 is DEBUG (Intel TDX module ABI): the host can read a debug TD's
    memory, keys included, so its quote attests nothing about the signing key."""
    if len(td_attributes) != 8:
        raise NotVerified("td_attributes", "missing from the verified report")
    if td_attributes[0] & 1:
        raise NotVerified("td_attributes", "the TD runs in debug mode: the host can read its "
                                           "memory and so the signing key")


def _fetch_collateral(quote: bytes, pccs_url: str | None, timeout: float) -> str:
    import dcap_qvl

    from kit.trust.core import fetch_collateral_json

    with refusals():
        return fetch_collateral_json(pccs_url or dcap_qvl.INTEL_PCS_URL, quote, timeout)


def check_binding(report_data: bytes, address: str, nonce: str) -> None:
    """report_data must be the provider layout for `address` and `nonce` (module docstring)."""
    expected = provider_report_data(address, bytes.fromhex(nonce))
    if len(report_data) != 64:
        raise NotVerified("report_data", "is not 64 bytes")
    if report_data[32:] != expected[32:]:
        raise NotVerified("report_data", "does not embed the nonce sent in its last 32 bytes "
                                         "(a replayed report, or a layout the kit does not know)")
    if report_data[:32] != expected[:32]:
        raise NotVerified("report_data", "its first 32 bytes are not the signing address "
                                         "zero-padded (another key, or a layout the kit does "
                                         "not verify, e.g. one binding a TLS fingerprint)")


def gpu_payload(value: Any, nonce: str) -> GpuPayload:
    """Whether an NVIDIA payload is present, how much evidence, and whether it names the nonce."""
    if value is None or value == "":
        return GpuPayload(present=False)
    try:
        payload = jsonsafe.loads(value) if isinstance(value, str) else value
    except ValueError:
        raise NotVerified("nvidia_payload", "is not JSON (or nested too deeply)") from None
    if not isinstance(payload, dict):
        raise NotVerified("nvidia_payload", "is not a JSON object")
    evidence = payload.get("evidence_list")
    given = payload.get("nonce")
    return GpuPayload(
        present=True, evidence_items=len(evidence) if isinstance(evidence, list) else 0,
        nonce_matches=given.lower() == nonce if isinstance(given, str) else None,
        arch=payload.get("arch") if isinstance(payload.get("arch"), str) else None)


# --- the provider proof inside an answer -------------------------------------------------


def check_provider_proof(proof: Any, pinned: Iterable[str]) -> str:
    """The provider signer of a nested `provider_proof` ({text, signature, signing_address,
    chat_id}), which must recover from the signature, equal `signing_address` and be pinned.

    Offline, the text's two hashes cannot be recomputed (they are of the bytes the contract
    exchanged with the provider): the contract checked them before signing its own proof."""
    from kit.trust.core import recover_signer

    if not isinstance(proof, dict):
        raise NotVerified("provider_proof", "not a JSON object")
    extra = sorted(set(proof) - set(PROVIDER_PROOF_FIELDS))
    if extra:
        raise NotVerified(f"provider_proof.{extra[0]}"[:80], "unknown field")
    for name in PROVIDER_PROOF_FIELDS:
        if not isinstance(proof.get(name), str) or not proof[name]:
            raise NotVerified(f"provider_proof.{name}", "missing or not a string")
    if not _SIGNED_TEXT.fullmatch(proof["text"]):
        raise NotVerified("provider_proof.text", "must be <64 hex>:<64 hex> (request and "
                                                 "response sha256)")
    if not _ADDRESS.fullmatch(proof["signing_address"]):
        raise NotVerified("provider_proof.signing_address", "must be a 0x address")
    try:
        with refusals():
            recovered = recover_signer(proof["text"], proof["signature"])
    except NotVerified as exc:
        raise NotVerified("provider_proof.signature", exc.problem) from None
    if recovered.lower() != proof["signing_address"].lower():
        raise NotVerified("provider_proof.signature", f"recovers {recovered}, not the proof's "
                                                      "signing_address")
    allowed = {address.lower() for address in pinned}
    if not allowed:
        raise NotVerified("provider_proof.signing_address", "no pinned provider signer to check "
                                                            f"{recovered} against")
    if recovered.lower() not in allowed:
        raise NotVerified("provider_proof.signing_address", f"{recovered} is not a provider "
                                                            "signer the contract pins")
    return recovered


_CONFIG_MARK = "const CONFIG = "


def contract_signing_addresses(code: bytes) -> list[str]:
    """provider.signing_addresses compiled into a built contract (its CONFIG literal)."""
    text = code.decode("utf-8", "replace")
    start = text.find(_CONFIG_MARK)
    if start < 0:
        return []
    try:
        config, _ = json.JSONDecoder().raw_decode(text, start + len(_CONFIG_MARK))
    except ValueError:
        return []
    provider = config.get("provider") if isinstance(config, dict) else None
    addresses = provider.get("signing_addresses") if isinstance(provider, dict) else None
    return [a for a in addresses if isinstance(a, str)] if isinstance(addresses, list) else []


def pinned_provider_signers(project_dir: Path, cid: Any) -> list[str]:
    """The provider signers the contract at `cid` pins: read from the project's built contract
    when a deployment record names that CID and the artifact still hashes to it."""
    from kit.ipfs.records import load_history, load_latest
    from kit.trust.attestation import deployed_code

    if not isinstance(cid, str) or not (Path(project_dir) / "deployments").is_dir():
        return []
    for record in [load_latest(project_dir), *load_history(project_dir)]:
        if record is not None and record.cid == cid:
            code = deployed_code(project_dir, record.artifact, cid)
            if code is not None:
                return contract_signing_addresses(code)
    return []


# --- kit provider attest -----------------------------------------------------------------


@dataclass(frozen=True)
class ProviderAttestResult:
    base_url: str
    model: str
    attested: tuple[ProviderAttestation, ...]
    added: tuple[str, ...]  # addresses newly written into agent.toml
    config_path: str

    def to_dict(self) -> dict[str, Any]:
        return {"verified": True, "base_url": self.base_url, "model": self.model,
                "attestations": [a.to_dict() for a in self.attested],
                "signing_addresses_added": list(self.added), "config": self.config_path}


def attest_provider(project_dir: Path, *, model: str | None = None, pccs_url: str | None = None,
                    allow_dev: bool = False, timeout: float = 30.0,
                    collateral: Any = None, now: int | None = None) -> ProviderAttestResult:
    """Fetch the provider's report with a fresh nonce, verify every node, then (only then) add
    the attested signing addresses to agent.toml `provider.signing_addresses`."""
    from kit.contract.config import CONFIG_FILE, load_config
    from kit.trust.attestation import new_nonce

    config = load_config(project_dir)
    if config.provider.kind != "confidential":
        raise InputError(f"provider.kind is {config.provider.kind!r}: `kit provider attest` is "
                         "for provider.kind = \"confidential\"")
    chosen = model or config.provider.default_model
    if chosen not in config.provider.models:
        raise InputError(f"--model {chosen[:80]!r} is not one of provider.models")
    nonce = new_nonce()
    document = fetch_report(config.provider.base_url, chosen, nonce, timeout=timeout)
    attested = verify_report(document, nonce=nonce, allow_dev=allow_dev, collateral=collateral,
                             now=now, pccs_url=pccs_url, timeout=timeout)
    path = config.root / CONFIG_FILE
    added = add_signing_addresses(path, [a.signing_address for a in attested])
    return ProviderAttestResult(config.provider.base_url, chosen, tuple(attested), tuple(added),
                                str(path))


def add_signing_addresses(path: Path, addresses: Iterable[str]) -> list[str]:
    """Append the addresses not yet in `provider.signing_addresses` (case-insensitive), keeping
    the file's comments and layout (tomlkit); the result is validated before the atomic write."""
    import tomlkit

    from kit.contract.config import parse_config
    from kit.fsutil import atomic_write

    text = path.read_text(encoding="utf-8")
    document = tomlkit.parse(text)
    provider = document.get("provider")
    if provider is None:
        provider = tomlkit.table()
        document["provider"] = provider
    current = provider.get("signing_addresses")
    if current is None:
        current = tomlkit.array()
        current.multiline(True)
        provider["signing_addresses"] = current
    known = {str(value).lower() for value in current}
    added = [a for a in dict.fromkeys(addresses) if a.lower() not in known]
    if not added:
        return []
    current.extend(added)
    updated = tomlkit.dumps(document)
    _validate(updated, path.parent, parse_config)
    atomic_write(path, updated)
    return added


def _validate(text: str, root: Path, parse_config: Any) -> None:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    parse_config(tomllib.loads(text), root)
