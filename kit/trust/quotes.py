"""Quote dispatch: the types every quote module shares, the report_data rule, the registry.

A quote module (`kit.trust.sgx`, `kit.trust.dev`, `kit.trust.tdx`) exposes

    verify_quote(attestation: Attestation, policy: AttestationPolicy) -> QuoteVerdict

and raises `NotVerified` naming the field or step that failed. `verify_by_type` picks the module
by the document's `quote_type` and refuses any type not in `QUOTE_VERIFIERS`.

report_data (shared/REFERENCE.md section 6, the real worker's `sgx_quote_app_data`):
`keccak256(0x65 || app_address || message) || 32 zero bytes`, 0x65 being `ContentType::AppData`.
`app_address` is the address of the running app in the worker. For the real worker it is not
settled whether that app is the script or the shared JavaScript runtime, so it is a named
parameter that the caller must establish (`AttestationPolicy.app_address`); nothing guesses it.
For the local runtime (dev quotes) it is sha256 of the contract's code bytes.
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, field
from typing import Any, Mapping

from kit.trust import core
from kit.trust.errors import NotVerified, refusals

APP_DATA_CONTENT_TYPE = core.APP_DATA_CONTENT_TYPE  # wapod-crypto-types ContentType::AppData
REPORT_DATA_BYTES = 64

# quote_type -> module implementing verify_quote(attestation, policy)
QUOTE_VERIFIERS: dict[str, str] = {
    "sgx": "kit.trust.sgx",
    "dev": "kit.trust.dev",
    "tdx": "kit.trust.tdx",
}

# TCB statuses accepted by default (dcap-qvl's names). Phala's SGX workers commonly report the
# hardening/configuration statuses; OutOfDate*, Revoked and anything unknown are refused.
DEFAULT_ACCEPTED_STATUSES = core.DEFAULT_ACCEPTED_STATUSES


@dataclass(frozen=True)
class Attestation:
    """A parsed `/attestation` document whose message already matched its fields."""

    cid: str
    signer: str
    encryption_key: str
    nonce: str
    message: str
    worker_public_key: str
    worker_signature: str
    quote: bytes
    quote_type: str
    document: Mapping[str, Any] = field(default_factory=dict)  # as received (e.g. tdx extras)


@dataclass(frozen=True)
class AttestationPolicy:
    """What the verifier accepts. Production defaults: no dev quotes, no guessed app address."""

    allow_dev: bool = False
    app_address: bytes | None = None  # the real worker's app address; required for sgx
    local_app_address: bytes | None = None  # the local runtime's: sha256 of the code (dev)
    mr_enclaves: tuple[bytes, ...] = ()  # pinned SGX MRENCLAVE values; required for sgx
    accepted_statuses: tuple[str, ...] = DEFAULT_ACCEPTED_STATUSES
    pccs_url: str | None = None  # None: dcap-qvl's default PCCS
    collateral_timeout: float = 15.0
    collateral: Any = None  # given collateral (offline checks); fetched when None
    now: int | None = None  # unix seconds for the collateral's validity; None: the clock
    options: Mapping[str, Any] = field(default_factory=dict)  # per quote type (e.g. tdx)


@dataclass(frozen=True)
class QuoteVerdict:
    quote_type: str
    status: str  # the TCB status, or "dev"
    production: bool  # False for dev quotes
    details: Mapping[str, Any] = field(default_factory=dict)


def report_data_for(app_address: bytes, message: bytes) -> bytes:
    """keccak256(0x65 || app_address || message) || 32 zero bytes (kit.trust.core)."""
    with refusals():
        return core.report_data_for(app_address, message.decode("utf-8"))


def expected_report_data(attestation: Attestation, policy: AttestationPolicy) -> bytes:
    """The binding a quote of this type must carry; dev quotes use the local app address."""
    if attestation.quote_type == "dev":
        address = policy.local_app_address
        unknown = "the local runtime's app address (sha256 of the contract code) is not known"
    else:
        address = policy.app_address
        unknown = (f"the app address that the {attestation.quote_type} quote binds cannot be "
                   "established (for the real worker it is not settled whether it is the "
                   "script or the shared JavaScript runtime); give it explicitly")
    if address is None:
        raise NotVerified("app_address", unknown)
    if len(address) != 32:
        raise NotVerified("app_address", f"must be 32 bytes, got {len(address)}")
    return report_data_for(address, attestation.message.encode("utf-8"))


def verify_by_type(attestation: Attestation, policy: AttestationPolicy) -> QuoteVerdict:
    """Dispatch on `quote_type`; unknown types (and missing modules) are refused."""
    module_name = QUOTE_VERIFIERS.get(attestation.quote_type)
    if module_name is None:
        known = ", ".join(sorted(QUOTE_VERIFIERS))
        raise NotVerified("quote_type", f"unknown quote type {attestation.quote_type!r:.40}; "
                                        f"known: {known}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise NotVerified("quote_type", f"{attestation.quote_type} quotes cannot be verified "
                                        f"here ({exc})") from None
    return module.verify_quote(attestation, policy)


def sha256_app_address(code: bytes) -> bytes:
    """The local runtime's app address: sha256 of the contract's code bytes."""
    return hashlib.sha256(code).digest()
