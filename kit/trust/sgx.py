"""SGX DCAP quotes (a Phala worker's `Wapo.sgxQuote`), verified with `dcap-qvl`.

Steps, each refusing with the step's name: parse (`dcap_qvl.parse_quote`, must be SGX), collateral
(given, else fetched from a PCCS with a timeout and cached until its nextUpdate), DCAP
verification at `now` (`dcap_qvl.verify`: Intel root CA pinned inside dcap-qvl, signatures,
CRLs, TCB), TCB status in the accepted set, MRENCLAVE in the pinned set, report_data equal to
the expected binding (kit.trust.quotes).

SGX quote v3 layout (Intel SGX ECDSA Quote Library reference): a 48-byte header, then the
384-byte enclave report body, in which MRENCLAVE is at offset 64 and report_data at offset 320
(so bytes 112..144 and 368..432 of the quote).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime
from typing import Any

from kit.trust import core
from kit.trust.errors import NotVerified, refusals
from kit.trust.quotes import Attestation, AttestationPolicy, QuoteVerdict, expected_report_data

COLLATERAL_MAX_AGE = 3600.0  # seconds a fetched collateral is reused, at most
_cache: dict[tuple[str, str, str], tuple[Any, float]] = {}
_cache_lock = threading.Lock()


def parse_sgx_quote(quote: bytes) -> Any:
    import dcap_qvl

    try:
        parsed = dcap_qvl.parse_quote(quote)
    except (ValueError, TypeError) as exc:
        raise NotVerified("quote", f"not a DCAP quote ({_short(exc)})") from None
    if not parsed.is_sgx():
        raise NotVerified("quote_type", f"the quote is {parsed.quote_type()}, not SGX")
    return parsed


def load_collateral(text: str) -> Any:
    """Collateral from its JSON (as `QuoteCollateralV3.to_json` writes it)."""
    import dcap_qvl

    try:
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except ValueError as exc:
        raise NotVerified("collateral", f"unreadable collateral ({_short(exc)})") from None


def _expiry(collateral: Any, fetched_at: float) -> float:
    """The earliest nextUpdate of the TCB info and QE identity, capped at COLLATERAL_MAX_AGE."""
    expiry = fetched_at + COLLATERAL_MAX_AGE
    for document in (collateral.tcb_info, collateral.qe_identity):
        try:
            stamp = json.loads(document)["nextUpdate"].replace("Z", "+00:00")
            expiry = min(expiry, datetime.fromisoformat(stamp).timestamp())
        except (ValueError, KeyError, TypeError, AttributeError):
            return fetched_at  # unreadable: do not cache
    return expiry


def fetch_collateral(quote: bytes, parsed: Any, pccs_url: str | None, timeout: float) -> Any:
    """The quote's collateral from a PCCS, with a timeout; cached per (PCCS, FMSPC, CA)."""
    import dcap_qvl

    url = pccs_url or dcap_qvl.PHALA_PCCS_URL
    try:
        key = (url, parsed.fmspc(), parsed.ca())
    except ValueError as exc:
        raise NotVerified("quote", f"no FMSPC/CA in the quote ({_short(exc)})") from None
    now = time.time()
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit[1] > now:
            return hit[0]

    collateral = load_collateral(_fetch_in_child(url, quote, timeout))
    with _cache_lock:
        _cache[key] = (collateral, _expiry(collateral, now))
    return collateral


def _fetch_in_child(url: str, quote: bytes, timeout: float) -> str:
    """`dcap_qvl.get_collateral` in a child process (why: kit.trust.core)."""
    with refusals():
        return core.fetch_collateral_json(url, quote, timeout)


def clear_collateral_cache() -> None:
    with _cache_lock:
        _cache.clear()


def verify_sgx_quote(quote: bytes, expected_report_data: bytes,
                     policy: AttestationPolicy) -> QuoteVerdict:
    """DCAP-verify an SGX quote and check it binds `expected_report_data` (64 bytes); the
    checks are kit.trust.core's, the same code the generated tool runs."""
    parsed = parse_sgx_quote(quote)
    collateral = policy.collateral
    if collateral is None:
        collateral = fetch_collateral(quote, parsed, policy.pccs_url, policy.collateral_timeout)
    now = int(time.time()) if policy.now is None else int(policy.now)
    with refusals():
        details = core.check_sgx_quote(quote, expected_report_data, policy.mr_enclaves,
                                       collateral, now, policy.accepted_statuses)
    return QuoteVerdict("sgx", details.pop("status"), production=True, details=details)


def verify_quote(attestation: Attestation, policy: AttestationPolicy) -> QuoteVerdict:
    """The attestation's SGX quote must verify and bind its message (kit.trust.quotes)."""
    return verify_sgx_quote(attestation.quote, expected_report_data(attestation, policy), policy)


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__
