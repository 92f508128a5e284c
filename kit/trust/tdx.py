"""TDX quotes from a dstack confidential VM: DCAP, RTMR3 replay, compose hash, report_data.

A dstack app's identity is its compose hash (sha256 of its app-compose document), which the
CVM measures as a runtime event into RTMR3 at boot. Verifying a quote from such an app takes
these steps, each failing closed with `NotVerified` naming the step:

1. ``dcap``: the quote is a TDX quote that `dcap-qvl` verifies against Intel's collateral at
   `now` with an accepted TCB status. Every later step reads the *verified* report.
2. ``os_measurements`` (only when sets are pinned, ``[verify] tdx_os_measurements``): MRTD and
   RTMR0-2, which measure the OS image the CVM booted (firmware, kernel, initrd, command line),
   equal one pinned set. Unpinned, any OS image passes, and an image of the host's choosing
   could extend RTMR3 with a genuine compose-hash event.
3. ``event_log``: every dstack runtime event (type 0x08000001) carries the digest that its name
   and payload give: ``sha384(le32(event_type) || ":" || event || ":" || payload)``. Without
   this a log could show one payload while its measured digest says another.
4. ``rtmr3``: replaying the log's RTMR3 digests, ``mr = sha384(mr || digest padded to 48 bytes)``
   from 48 zero bytes, gives the quote's RTMR3.
5. ``compose_hash``: exactly one ``compose-hash`` event in RTMR3, equal to the expected hash.
6. ``report_data``: the quote's 64-byte report_data equals the expected bytes.

report_data rule for the contract's quote inside a CVM (issue 15; defined here, once)::

    report_data = sha256(b"agent-contract-kit tdx report_data v1\\ncid: " + cid
                         + b"\\nmessage:\\n" + message) || 32 zero bytes

where ``cid`` is the contract's CID (ASCII, no newline) and ``message`` the UTF-8 bytes of the
attested message (for `/attestation`, the "agent-contract-kit attest v1" text). The label and
the fixed field order make it unambiguous; the message comes last, so it may hold newlines.

Dev quotes (the stand-in guest agent, `kit.dstack.simulator`) start with ``KIT-DEV-TDX-QUOTE``:
a TDX-shaped v4 body at the real offsets, signed by the stand-in's ed25519 key. They are refused
unless the caller passes ``allow_dev=True``, and even then they prove nothing about hardware.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Sequence  # Dict, Iterable: type comments below

from kit.trust.core import ProofError
from kit.trust.errors import NotVerified

REPORT_DATA_LABEL = b"agent-contract-kit tdx report_data v1"
DSTACK_RUNTIME_EVENT_TYPE = 0x08000001
COMPOSE_HASH_EVENT = "compose-hash"
MR_BYTES = 48
INIT_MR = bytes(MR_BYTES)

# TDX quote v4 layout (Intel TDX DCAP Quote Generation Library, "Quote Format"): a 48-byte
# header, then the 584-byte TD report body. Offsets below are within the body.
HEADER_BYTES = 48
BODY_BYTES = 584
BODY_FIELDS: dict[str, tuple[int, int]] = {
    "tee_tcb_svn": (0, 16), "mr_seam": (16, 48), "mr_signer_seam": (64, 48),
    "seam_attributes": (112, 8), "td_attributes": (120, 8), "xfam": (128, 8),
    "mr_td": (136, 48), "mr_config_id": (184, 48), "mr_owner": (232, 48),
    "mr_owner_config": (280, 48), "rt_mr0": (328, 48), "rt_mr1": (376, 48),
    "rt_mr2": (424, 48), "rt_mr3": (472, 48), "report_data": (520, 64),
}

DEV_QUOTE_MAGIC = b"KIT-DEV-TDX-QUOTE-v1\x00"  # padded with zeros to the 48-byte header
DEV_QUOTE_BYTES = HEADER_BYTES + BODY_BYTES + 32 + 64  # + ed25519 public key + signature

DEFAULT_ACCEPTED_STATUSES = (
    "UpToDate", "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}\Z")
# The registers that measure the OS image (TDX module spec: MRTD the virtual firmware, RTMR0 its
# configuration, RTMR1 the kernel, RTMR2 the command line and initrd); RTMR3 is the app's.
OS_REGISTERS = ("mr_td", "rt_mr0", "rt_mr1", "rt_mr2")


@dataclass(frozen=True)
class TdxReport:
    """What a verified TDX attestation established (hex strings, lower case)."""

    status: str  # dcap-qvl's TCB status, or "dev"
    advisory_ids: tuple[str, ...]
    mr_td: str
    rtmrs: tuple[str, str, str, str]
    report_data: str
    compose_hash: str
    app_id: str | None
    production: bool
    events: tuple[str, ...] = field(default=())  # names of the RTMR3 events, in order
    os_measurements: str = ""  # MRTD:RTMR0:RTMR1:RTMR2, the form [verify] pins

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "advisory_ids": list(self.advisory_ids), "mr_td": self.mr_td,
            "rtmr0": self.rtmrs[0], "rtmr1": self.rtmrs[1], "rtmr2": self.rtmrs[2],
            "rtmr3": self.rtmrs[3], "report_data": self.report_data,
            "compose_hash": self.compose_hash, "app_id": self.app_id,
            "production": self.production, "events": list(self.events),
            "os_measurements": self.os_measurements,
        }


@dataclass(frozen=True)
class Event:
    imr: int
    event_type: int
    digest: bytes
    event: str
    payload: bytes


# ---------------------------------------------------------------------------------------------
# report_data and measurement rules


def tdx_report_data(cid: str, message: bytes | str) -> bytes:
    """The 64 report_data bytes binding a contract's CID and a message (module docstring)."""
    if not cid or any(ch in cid for ch in "\r\n") or not cid.isascii():
        raise NotVerified("cid", "a CID must be non-empty ASCII without line breaks")
    body = message.encode("utf-8") if isinstance(message, str) else bytes(message)
    text = REPORT_DATA_LABEL + b"\ncid: " + cid.encode("ascii") + b"\nmessage:\n" + body
    return hashlib.sha256(text).digest() + bytes(32)


def runtime_event_digest(event: str, payload: bytes,
                         event_type: int = DSTACK_RUNTIME_EVENT_TYPE) -> bytes:
    """sha384(le32(event_type) || ":" || event || ":" || payload): a dstack runtime event."""
    return hashlib.sha384(event_type.to_bytes(4, "little") + b":" + event.encode("utf-8")
                          + b":" + payload).digest()


def replay_rtmr(digests: Sequence[bytes]) -> bytes:
    """mr = sha384(mr || digest zero-padded to 48 bytes), from 48 zero bytes."""
    mr = INIT_MR
    for digest in digests:
        mr = hashlib.sha384(mr + digest.ljust(MR_BYTES, b"\0")).digest()
    return mr


def os_measurements_of(values: Mapping[str, bytes]) -> str:
    """A quote's OS measurement set as `[verify] tdx_os_measurements` pins it: MRTD and RTMR0-2
    in lower-case hex, joined by ':'."""
    return ":".join(values[name].hex() for name in OS_REGISTERS)


def check_os_measurements(measured: str, pinned: Sequence[str]) -> None:
    """Step os_measurements: with sets pinned, the quote's must be one of them (whole sets:
    a bare string is refused, as `in` would match any substring of it)."""
    if isinstance(pinned, (str, bytes)):
        raise TypeError("pinned OS measurements are a sequence of sets, not one string")
    if pinned and measured not in set(pinned):
        raise NotVerified("os_measurements", "the quote's OS image (MRTD, RTMR0-2) is not one "
                                             "of the pinned verify.tdx_os_measurements")


# ---------------------------------------------------------------------------------------------
# event log


def parse_event_log(event_log: str | bytes | Sequence[Mapping[str, Any]]) -> list[Event]:
    """The guest agent's event log (a JSON string or the decoded list) -> events, strictly."""
    raw: Any = event_log
    if isinstance(raw, (str, bytes)):
        from kit import jsonsafe  # untrusted: depth-limited (see kit.jsonsafe)

        try:
            raw = jsonsafe.loads(raw)
        except ValueError as exc:  # also UnicodeDecodeError and jsonsafe.TooDeep
            raise NotVerified("event_log", f"not JSON ({exc})") from None
    if not isinstance(raw, list):
        raise NotVerified("event_log", "must be a JSON array of events")
    return [_parse_event(item, index) for index, item in enumerate(raw)]


def _parse_event(item: Any, index: int) -> Event:
    where = f"event #{index}"
    if not isinstance(item, Mapping):
        raise NotVerified("event_log", f"{where} is not an object")
    imr, event_type = item.get("imr"), item.get("event_type")
    if type(imr) is not int or not 0 <= imr <= 3:
        raise NotVerified("event_log", f"{where}: imr must be an integer 0..3")
    if type(event_type) is not int or event_type < 0 or event_type > 0xFFFFFFFF:
        raise NotVerified("event_log", f"{where}: event_type must be a 32-bit integer")
    name = item.get("event", "")
    if not isinstance(name, str):
        raise NotVerified("event_log", f"{where}: event must be a string")
    digest = _hex_field(item.get("digest"), f"{where}: digest")
    if len(digest) > MR_BYTES:
        raise NotVerified("event_log", f"{where}: digest longer than {MR_BYTES} bytes")
    payload = _hex_field(item.get("event_payload", ""), f"{where}: event_payload")
    return Event(imr, event_type, digest, name, payload)


def _hex_field(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise NotVerified("event_log", f"{where} must be a hex string")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise NotVerified("event_log", f"{where} is not hex") from None


def check_event_log(rtmr3: bytes, events: Sequence[Event],
                    expected_compose_hash: str) -> tuple[str, str | None, tuple[str, ...]]:
    """Steps event_log, rtmr3 and compose_hash. Returns (compose hash, app id, event names)."""
    expected = _compose_hash_argument(expected_compose_hash)
    rtmr3_events = [event for event in events if event.imr == 3]
    for index, event in enumerate(rtmr3_events):
        if event.event_type == DSTACK_RUNTIME_EVENT_TYPE and \
                runtime_event_digest(event.event, event.payload) != event.digest:
            raise NotVerified("event_log", f"RTMR3 event #{index} ({event.event[:40]!r}): its "
                                           "digest does not match its name and payload")
    if replay_rtmr([event.digest for event in rtmr3_events]) != rtmr3:
        raise NotVerified("rtmr3", "replaying the event log does not give the quote's RTMR3")
    found = [event for event in rtmr3_events if event.event == COMPOSE_HASH_EVENT
             and event.event_type == DSTACK_RUNTIME_EVENT_TYPE]
    if len(found) != 1:
        raise NotVerified("compose_hash", f"expected one {COMPOSE_HASH_EVENT} event in RTMR3, "
                                          f"found {len(found)}")
    actual = found[0].payload.hex()
    if actual != expected:
        raise NotVerified("compose_hash", f"the quote measures compose hash {actual[:64]}, "
                                          f"expected {expected}")
    app_ids = [e.payload.hex() for e in rtmr3_events if e.event == "app-id"]
    return actual, (app_ids[0] if len(app_ids) == 1 else None), \
        tuple(event.event for event in rtmr3_events)


def _compose_hash_argument(value: str) -> str:
    from kit.errors import InputError

    text = (value or "").strip().lower().removeprefix("0x")
    if not _HEX64.match(text):
        raise InputError("expected compose hash must be 64 hex digits (sha256); see "
                         "`kit dstack compose` or deployments/dstack.json")
    return text


# ---------------------------------------------------------------------------------------------
# the quote itself


def decode_quote(quote: bytes | str) -> bytes:
    if isinstance(quote, str):
        try:
            return bytes.fromhex(quote.strip().removeprefix("0x"))
        except ValueError:
            raise NotVerified("quote", "not hex") from None
    if not isinstance(quote, (bytes, bytearray)):
        raise NotVerified("quote", "must be bytes or hex")
    return bytes(quote)


def is_dev_quote(quote: bytes) -> bool:
    return quote.startswith(DEV_QUOTE_MAGIC)


def body_fields(quote: bytes) -> dict[str, bytes]:
    """The TD report fields at their v4 offsets (no verification: for dev quotes and tests)."""
    if len(quote) < HEADER_BYTES + BODY_BYTES:
        raise NotVerified("quote", "too short for a TDX v4 quote")
    body = quote[HEADER_BYTES:HEADER_BYTES + BODY_BYTES]
    return {name: body[start:start + size] for name, (start, size) in BODY_FIELDS.items()}


def verify_dcap(quote: bytes, collateral: Any = None, now: int | None = None,
                pccs_url: str | None = None, *,
                accepted_statuses: Sequence[str] = DEFAULT_ACCEPTED_STATUSES,
                timeout: float = 15.0) -> tuple[str, tuple[str, ...], dict[str, bytes]]:
    """Step dcap: (status, advisory ids, verified TD report fields as bytes)."""
    import dcap_qvl

    try:
        parsed = dcap_qvl.parse_quote(quote)
    except (ValueError, RuntimeError) as exc:
        raise NotVerified("dcap", f"not a parseable DCAP quote ({exc})") from None
    if not parsed.is_tdx():
        raise NotVerified("dcap", f"a {parsed.quote_type()} quote where TDX was expected")
    col = _collateral(dcap_qvl, quote, collateral, pccs_url, timeout)
    try:
        verified = dcap_qvl.verify(quote, col, int(time.time()) if now is None else int(now))
    except (ValueError, RuntimeError) as exc:
        raise NotVerified("dcap", f"dcap-qvl refused the quote ({exc})") from None
    if verified.status not in accepted_statuses:
        raise NotVerified("dcap", f"TCB status {verified.status} is not accepted "
                                  f"(accepted: {', '.join(accepted_statuses)})")
    report = json.loads(verified.to_json())["report"]
    td = next((report[key] for key in ("TD10", "TD15") if key in report), None)
    if td is None:
        raise NotVerified("dcap", f"verified report is not a TD report ({sorted(report)})")
    values = {name: bytes.fromhex(td[name]) for name in BODY_FIELDS if name in td}
    return verified.status, tuple(verified.advisory_ids), values


def _collateral(dcap_qvl: Any, quote: bytes, collateral: Any, pccs_url: str | None,
                timeout: float) -> Any:
    if collateral is None:
        return _fetch_collateral(dcap_qvl, quote, pccs_url, timeout)
    if isinstance(collateral, dcap_qvl.QuoteCollateralV3):
        return collateral
    try:
        text = collateral if isinstance(collateral, str) else json.dumps(collateral)
        return dcap_qvl.QuoteCollateralV3.from_json(text)
    except (ValueError, TypeError) as exc:
        raise NotVerified("dcap", f"collateral is not valid ({exc})") from None


def _fetch_collateral(dcap_qvl: Any, quote: bytes, pccs_url: str | None, timeout: float) -> Any:
    """Collateral from the PCCS, fetched in a child process (why: kit.trust.core)."""
    from kit.trust.core import ProofError, fetch_collateral_json

    try:
        text = fetch_collateral_json(pccs_url or dcap_qvl.PHALA_PCCS_URL, quote, timeout)
    except ProofError as exc:
        raise NotVerified("dcap", f"could not fetch collateral ({exc}); "
                                  "retry, or pass the collateral") from None
    return _collateral(dcap_qvl, quote, text, pccs_url, timeout)


def verify_dev_quote(quote: bytes) -> dict[str, bytes]:
    """A stand-in's dev quote: shape and ed25519 signature. Proves nothing about hardware."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if len(quote) != DEV_QUOTE_BYTES or quote[len(DEV_QUOTE_MAGIC):HEADER_BYTES].strip(b"\0"):
        raise NotVerified("quote", "malformed dev quote")
    signed = quote[:HEADER_BYTES + BODY_BYTES]
    public, signature = quote[len(signed):len(signed) + 32], quote[len(signed) + 32:]
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, signed)
    except (InvalidSignature, ValueError):
        raise NotVerified("quote", "dev quote signature does not verify") from None
    return body_fields(quote)


# ---------------------------------------------------------------------------------------------
# the whole check


def verify_tdx_attestation(
    quote: bytes | str,
    event_log: str | bytes | Sequence[Mapping[str, Any]],
    expected_report_data: bytes,
    expected_compose_hash: str,
    collateral: Any = None,
    now: int | None = None,
    pccs_url: str | None = None,
    *,
    allow_dev: bool = False,
    accepted_statuses: Sequence[str] = DEFAULT_ACCEPTED_STATUSES,
    timeout: float = 15.0,
    os_measurements: Sequence[str] = (),
) -> TdxReport:
    """Run every step of the module docstring; `NotVerified(step, ...)` on the first failure."""
    raw = decode_quote(quote)
    advisories: tuple[str, ...] = ()
    if len(expected_report_data) != 64:
        raise NotVerified("report_data", "expected report_data must be 64 bytes")
    if is_dev_quote(raw):
        if not allow_dev:
            raise NotVerified("quote", "a dev quote from the stand-in guest agent; refused by "
                                       "production verification (allow dev quotes to accept)")
        status, values = "dev", verify_dev_quote(raw)
    else:
        status, advisories, values = verify_dcap(raw, collateral, now, pccs_url,
                                                 accepted_statuses=accepted_statuses,
                                                 timeout=timeout)
    measured = os_measurements_of(values)
    check_os_measurements(measured, os_measurements)
    events = parse_event_log(event_log)
    compose_hash, app_id, names = check_event_log(values["rt_mr3"], events,
                                                  expected_compose_hash)
    if values["report_data"] != bytes(expected_report_data):
        raise NotVerified("report_data", "the quote's report_data does not bind this CID and "
                                         "message")
    return TdxReport(
        status=status, advisory_ids=advisories, mr_td=values["mr_td"].hex(),
        rtmrs=tuple(values[f"rt_mr{i}"].hex() for i in range(4)),  # type: ignore[arg-type]
        report_data=values["report_data"].hex(), compose_hash=compose_hash, app_id=app_id,
        production=status != "dev", events=names, os_measurements=measured,
    )


def verify_quote(attestation: Any, policy: Any) -> Any:
    """The `kit.trust.quotes` interface: an `/attestation` document with quote_type "tdx".

    Needs `policy.options["compose_hash"]` (the compose hash pinned for the app) and the
    document's `event_log`; report_data follows `tdx_report_data(cid, message)`. Checks
    `policy.options["os_measurements"]` (pinned sets) when given.
    """
    from kit.trust.quotes import QuoteVerdict

    compose_hash = (policy.options or {}).get("compose_hash")
    if not compose_hash:
        raise NotVerified("compose_hash", "no compose hash pinned for this app; a TDX quote "
                                          "cannot be checked without one")
    event_log = (attestation.document or {}).get("event_log")
    if event_log is None:
        raise NotVerified("event_log", "the attestation carries no event_log")
    report = verify_tdx_attestation(
        attestation.quote, event_log, tdx_report_data(attestation.cid, attestation.message),
        compose_hash, policy.collateral, policy.now, policy.pccs_url,
        allow_dev=policy.allow_dev, accepted_statuses=policy.accepted_statuses,
        timeout=policy.collateral_timeout,
        os_measurements=tuple((policy.options or {}).get("os_measurements", ())))
    return QuoteVerdict(quote_type="tdx", status=report.status, production=report.production,
                        details=report.to_dict())


# ---------------------------------------------------------------------------------------------
# the generated tool's copy (self-contained; see tool_verifier_source)

TOOL_BEGIN_MARKER = "# --- BEGIN tdx verifier (kit/trust/tdx.py) ---"
TOOL_END_MARKER = "# --- END tdx verifier ---"


def tool_verifier_source() -> str:
    """The region below, markers included, for the generated tool (after kit.trust.core's
    regions, whose ProofError it raises). tests/test_dstack_runtime.py checks that it gives
    the same verdicts as `verify_tdx_attestation` on the same vectors."""
    from pathlib import Path

    text = Path(__file__).read_text(encoding="utf-8")
    start = text.index("\n" + TOOL_BEGIN_MARKER + "\n") + 1
    stop = text.index("\n" + TOOL_END_MARKER + "\n", start) + 1 + len(TOOL_END_MARKER)
    return text[start:stop] + "\n"


# --- BEGIN tdx verifier (kit/trust/tdx.py) ---
# The TDX check of the agent-contract kit for quote_type "tdx" (the kit's gateway in a dstack
# confidential VM), copied from kit/trust/tdx.py by `kit tool`. Production only: the stand-in's
# dev quotes are refused. Steps, each refusing with ProofError naming it: dcap (dcap-qvl, Intel
# root CA pinned), os_measurements (MRTD and RTMR0-2 equal a pinned set, when sets are pinned),
# event_log (each runtime event's digest), rtmr3 (replay), compose_hash (one compose-hash event
# equal to the pinned hash), report_data (binds the CID and the message).
TDX_REPORT_DATA_LABEL = b"agent-contract-kit tdx report_data v1"
TDX_RUNTIME_EVENT = 0x08000001
TDX_MAX_JSON_DEPTH = 16


def tdx_expected_report_data(cid, message):
    # type: (str, str) -> bytes
    """sha256(label + "\\ncid: " + cid + "\\nmessage:\\n" + message) || 32 zero bytes."""
    import hashlib

    text = TDX_REPORT_DATA_LABEL + b"\ncid: " + cid.encode("ascii") + b"\nmessage:\n"
    return hashlib.sha256(text + message.encode("utf-8")).digest() + bytes(32)


def _tdx_events(event_log):
    # type: (Any) -> list
    """The RTMR3 events as (event_type, digest, name, payload); parsed with a depth limit."""
    if not isinstance(event_log, str):
        raise ProofError("event_log", "missing or not a JSON string")
    depth, deepest = 0, 0
    for char in event_log:  # json.loads recurses per level: refuse deep input first
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > TDX_MAX_JSON_DEPTH:
                raise ProofError("event_log", "JSON nested too deeply")
        elif char in "]}":
            depth -= 1
    try:
        items = json.loads(event_log)
    except ValueError:
        raise ProofError("event_log", "not JSON") from None
    if not isinstance(items, list):
        raise ProofError("event_log", "must be a JSON array of events")
    events = []
    for index, item in enumerate(items):
        where = "event #" + str(index)
        if not isinstance(item, dict) or item.get("imr") not in (0, 1, 2, 3):
            raise ProofError("event_log", where + " is malformed")
        kind, name = item.get("event_type"), item.get("event", "")
        if type(kind) is not int or not isinstance(name, str):
            raise ProofError("event_log", where + " is malformed")
        try:
            digest = bytes.fromhex(item.get("digest", ""))
            payload = bytes.fromhex(item.get("event_payload", ""))
        except (TypeError, ValueError):
            raise ProofError("event_log", where + ": digest or payload is not hex") from None
        if len(digest) > 48:
            raise ProofError("event_log", where + ": digest longer than 48 bytes")
        if item["imr"] == 3:
            events.append((kind, digest, name, payload))
    return events


def check_tdx_event_log(rtmr3, event_log, compose_hash):
    # type: (bytes, Any, str) -> str
    """Steps event_log, rtmr3 and compose_hash; returns the measured compose hash."""
    import hashlib

    mr = bytes(48)
    found = []
    for kind, digest, name, payload in _tdx_events(event_log):
        if kind == TDX_RUNTIME_EVENT:
            rebuilt = hashlib.sha384(kind.to_bytes(4, "little") + b":" + name.encode("utf-8")
                                     + b":" + payload).digest()
            if rebuilt != digest:
                raise ProofError("event_log", "event " + repr(name[:40]) + ": its digest does "
                                 "not match its name and payload")
            if name == "compose-hash":
                found.append(payload.hex())
        mr = hashlib.sha384(mr + digest.ljust(48, b"\0")).digest()
    if mr != rtmr3:
        raise ProofError("rtmr3", "replaying the event log does not give the quote's RTMR3")
    if len(found) != 1:
        raise ProofError("compose_hash", "expected one compose-hash event, found "
                         + str(len(found)))
    if found[0] != compose_hash.lower():
        raise ProofError("compose_hash", "the quote measures compose hash " + found[0]
                         + ", not the pinned " + compose_hash)
    return found[0]


def check_tdx_quote(quote, event_log, expected_report_data, compose_hash, collateral, now,
                    accepted_statuses=DEFAULT_ACCEPTED_STATUSES, os_measurements=()):
    # type: (bytes, Any, bytes, str, Any, int, Iterable[str], Iterable[str]) -> Dict[str, Any]
    """DCAP-verify a TDX quote, then its OS measurements (when `os_measurements` pins sets of
    MRTD:RTMR0:RTMR1:RTMR2), event log, compose hash and report_data."""
    import dcap_qvl  # type: ignore

    if quote.startswith(b"KIT-DEV-"):
        raise ProofError("quote", "a dev quote (a stand-in, no TEE): refused")
    try:
        parsed = dcap_qvl.parse_quote(quote)
    except (ValueError, TypeError, RuntimeError) as error:
        raise ProofError("dcap", "not a DCAP quote (" + str(error)[:200] + ")") from None
    if not parsed.is_tdx():
        raise ProofError("dcap", "the quote is " + parsed.quote_type() + ", not TDX")
    try:
        verified = dcap_qvl.verify(quote, collateral, now)
    except (ValueError, TypeError, RuntimeError) as error:
        problem = "DCAP verification failed (" + " ".join(str(error).split())[:200] + ")"
        raise ProofError("dcap", problem) from None
    accepted = list(accepted_statuses)
    if verified.status not in accepted:
        raise ProofError("dcap", "TCB status " + verified.status + " is not accepted ("
                         + ", ".join(accepted) + ")")
    report = json.loads(verified.to_json())["report"]
    td = report.get("TD10") or report.get("TD15")
    if not isinstance(td, dict):
        raise ProofError("dcap", "the verified report is not a TD report")
    os_image = ":".join(td[name].lower() for name in ("mr_td", "rt_mr0", "rt_mr1", "rt_mr2"))
    pinned = [] if isinstance(os_measurements, str) else list(os_measurements)
    if isinstance(os_measurements, str) or (pinned and os_image not in pinned):
        raise ProofError("os_measurements", "the quote's OS image (MRTD, RTMR0-2) is not one of "
                         "the pinned TDX_OS_MEASUREMENTS")
    measured = check_tdx_event_log(bytes.fromhex(td["rt_mr3"]), event_log, compose_hash)
    if bytes.fromhex(td["report_data"]) != expected_report_data:
        raise ProofError("report_data", "the quote does not bind this CID and message")
    return {"status": verified.status, "compose_hash": measured, "mr_td": td["mr_td"],
            "os_measurements": os_image, "advisory_ids": list(verified.advisory_ids)}


# --- END tdx verifier ---
