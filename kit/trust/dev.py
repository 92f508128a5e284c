"""Dev quotes: what the local runtime's `Wapo.sgxQuote` returns. They never pass production checks.

Layout (the shared constant of the kit's helpers, hex when returned by the runtime):

    magic        b"KIT-DEV-QUOTE-v1\\x00"  says "dev" in the first bytes
    report_data  64 bytes                  same rule as the real worker (kit.trust.quotes)
    public_key   32 bytes                  Ed25519 key of the local worker key
    signature    64 bytes                  Ed25519 (RFC 8032) over magic + report_data

A dev quote proves only that whoever holds the local worker key saw the message: nothing about
hardware. It is accepted only when the policy says `allow_dev` (`--allow-dev-quote`).
"""

from __future__ import annotations

from dataclasses import dataclass

from kit.trust.errors import NotVerified
from kit.trust.quotes import (
    REPORT_DATA_BYTES, Attestation, AttestationPolicy, QuoteVerdict, expected_report_data,
)

MAGIC = b"KIT-DEV-QUOTE-v1\x00"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
QUOTE_BYTES = len(MAGIC) + REPORT_DATA_BYTES + PUBLIC_KEY_BYTES + SIGNATURE_BYTES


@dataclass(frozen=True)
class DevQuote:
    report_data: bytes
    public_key: bytes
    signature: bytes


def is_dev_quote(quote: bytes) -> bool:
    return quote.startswith(MAGIC)


def parse_dev_quote(quote: bytes) -> DevQuote:
    if not is_dev_quote(quote):
        raise NotVerified("quote", "not a dev quote (magic missing)")
    if len(quote) != QUOTE_BYTES:
        raise NotVerified("quote", f"a dev quote has {QUOTE_BYTES} bytes, got {len(quote)}")
    start = len(MAGIC)
    key_at = start + REPORT_DATA_BYTES
    return DevQuote(quote[start:key_at], quote[key_at:key_at + PUBLIC_KEY_BYTES],
                    quote[key_at + PUBLIC_KEY_BYTES:])


def check_dev_signature(dev: DevQuote) -> None:
    from Crypto.Signature import eddsa

    try:
        key = eddsa.import_public_key(dev.public_key)
        eddsa.new(key, "rfc8032").verify(MAGIC + dev.report_data, dev.signature)
    except ValueError:
        raise NotVerified("quote.signature", "the dev quote's Ed25519 signature does not "
                                             "verify") from None


def verify_quote(attestation: Attestation, policy: AttestationPolicy) -> QuoteVerdict:
    """Refused unless `policy.allow_dev`; then magic, signature, worker key and report_data."""
    if not policy.allow_dev:
        raise NotVerified("quote_type", "a dev quote (local runtime) never passes production "
                                        "verification; allow dev quotes only for local work")
    dev = parse_dev_quote(attestation.quote)
    check_dev_signature(dev)
    if dev.public_key.hex() != attestation.worker_public_key.lower().removeprefix("0x"):
        raise NotVerified("worker_public_key", "differs from the key that signed the dev quote")
    if dev.report_data != expected_report_data(attestation, policy):
        raise NotVerified("report_data", "the dev quote does not bind this message and app "
                                         "address")
    return QuoteVerdict("dev", "dev", production=False,
                        details={"public_key": dev.public_key.hex()})
