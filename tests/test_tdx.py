"""kit.trust.tdx against real TDX data.

Vectors (used as they are):
- shared/vectors/dcap-qvl/tdx_quote + tdx_quote_collateral.json: a real Intel TDX v4
  quote and its collateral, from Phala-Network/dcap-qvl `sample/` at commit 9bffe30b (see
  SOURCE.md there). It verifies with dcap-qvl inside its collateral's validity window. Its
  RTMR3 is all zeros (no runtime events): it is not a dstack CVM's quote.
- tests/data/dstack_simulator/quote.hex + eventlog.json: a quote from a dstack CVM and its event
  log, from Phala-Network/dstack `sdk/simulator/` at commit 45fe4b4a (see SOURCE.md there). No
  collateral ships with it; it is the oracle for RTMR replay, the runtime-event digest and the
  compose-hash event.
Offsets are computed here from the TDX v4 quote layout, independently of the module.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import dcap_qvl
import pytest
from dstack_sdk.dstack_client import GetQuoteResponse, replay_rtmr as sdk_replay_rtmr

from fixtures.vectors import DCAP_QVL
from kit.dstack.simulator import GuestAgentStandIn
from kit.errors import InputError
from kit.trust import tdx
from kit.trust.errors import NotVerified

# shared/ sits beside the repository (CI copies it there); /work/shared on a session machine
VECTORS = DCAP_QVL
DSTACK = Path(__file__).parent / "data" / "dstack_simulator"
DSTACK_COMPOSE_HASH = "ea549f02e1a25fabd1cb788380e033ec5461b2ffe4328d753642cf035452e48b"

# TDX quote v4: 48-byte header, then the TD report body, fields in this order and size.
HEADER = 48
LAYOUT = [("tee_tcb_svn", 16), ("mr_seam", 48), ("mr_signer_seam", 48),
          ("seam_attributes", 8), ("td_attributes", 8), ("xfam", 8), ("mr_td", 48),
          ("mr_config_id", 48), ("mr_owner", 48), ("mr_owner_config", 48), ("rt_mr0", 48),
          ("rt_mr1", 48), ("rt_mr2", 48), ("rt_mr3", 48), ("report_data", 64)]


def offsets() -> dict[str, tuple[int, int]]:
    result, position = {}, HEADER
    for name, size in LAYOUT:
        result[name] = (position, size)
        position += size
    assert position == HEADER + 584
    return result


def field_of(quote: bytes, name: str) -> bytes:
    start, size = offsets()[name]
    return quote[start:start + size]


def iso(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, dict, int]:
    quote = (VECTORS / "tdx_quote").read_bytes()
    collateral = json.loads((VECTORS / "tdx_quote_collateral.json").read_text())
    tcb, qe = json.loads(collateral["tcb_info"]), json.loads(collateral["qe_identity"])
    now = max(iso(tcb["issueDate"]), iso(qe["issueDate"])) + 60
    assert now < min(iso(tcb["nextUpdate"]), iso(qe["nextUpdate"]))
    return quote, collateral, now


@pytest.fixture(scope="module")
def dstack_sample() -> tuple[bytes, str]:
    quote = bytes.fromhex((DSTACK / "quote.hex").read_text().strip())
    return quote, (DSTACK / "eventlog.json").read_text().strip()


# -- the real DCAP sample ---------------------------------------------------------------------

def test_module_offsets_match_the_layout() -> None:
    for name, (start, size) in offsets().items():
        assert tdx.BODY_FIELDS[name] == (start - HEADER, size)


def test_sample_parses_and_fields_sit_at_the_v4_offsets(sample) -> None:
    quote, _, _ = sample
    parsed = dcap_qvl.parse_quote(quote)
    assert parsed.is_tdx() and parsed.header.version == 4 and parsed.header.tee_type == 0x81
    assert int.from_bytes(quote[0:2], "little") == 4  # header.version, read by hand
    for name, _ in LAYOUT:
        assert getattr(parsed.report, name) == field_of(quote, name), name
    assert tdx.body_fields(quote)["report_data"] == field_of(quote, "report_data")


def test_sample_verifies_with_dcap_at_its_collateral_time(sample) -> None:
    quote, collateral, now = sample
    status, advisories, values = tdx.verify_dcap(quote, collateral, now)
    assert status == dcap_qvl.verify(
        quote, dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral)), now).status
    assert status == "UpToDate" and advisories == ()
    for name in ("report_data", "rt_mr3", "mr_td", "rt_mr0"):
        assert values[name] == field_of(quote, name)


def test_sample_passes_dcap_and_rtmr3_then_stops_at_compose_hash(sample) -> None:
    # Its RTMR3 is 48 zero bytes: the replay of an empty RTMR3 log. It has no compose hash.
    quote, collateral, now = sample
    assert field_of(quote, "rt_mr3") == bytes(48) == bytes.fromhex(sdk_replay_rtmr([]))
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(quote, "[]", field_of(quote, "report_data"),
                                   DSTACK_COMPOSE_HASH, collateral, now)
    assert err.value.field == "compose_hash"


@pytest.mark.parametrize("name", ["report_data", "rt_mr3", "mr_td", "signature", "header"])
def test_tampered_sample_is_refused_by_dcap(sample, name: str) -> None:
    quote, collateral, now = sample
    data = bytearray(quote)
    position = {"signature": HEADER + 584 + 4 + 10, "header": 8}.get(name)
    position = offsets()[name][0] if position is None else position
    data[position] ^= 0x01
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(bytes(data), "[]", field_of(quote, "report_data"),
                                   DSTACK_COMPOSE_HASH, collateral, now)
    assert err.value.field == "dcap"


def test_sample_outside_its_collateral_window_is_refused(sample) -> None:
    quote, collateral, _ = sample
    late = iso(json.loads(collateral["tcb_info"])["nextUpdate"]) + 86400
    with pytest.raises(NotVerified) as err:
        tdx.verify_dcap(quote, collateral, late)
    assert err.value.field == "dcap"


def test_sgx_quote_and_strict_status_are_refused(sample) -> None:
    sgx = (VECTORS / "sgx_quote").read_bytes()
    sgx_collateral = json.loads((VECTORS / "sgx_quote_collateral.json").read_text())
    with pytest.raises(NotVerified, match="SGX quote where TDX"):
        tdx.verify_dcap(sgx, sgx_collateral, 0)
    quote, collateral, now = sample
    with pytest.raises(NotVerified, match="TCB status UpToDate is not accepted"):
        tdx.verify_dcap(quote, collateral, now, accepted_statuses=("OutOfDate",))


def test_wrong_report_data_is_refused_after_everything_else(sample) -> None:
    # A log that replays to the sample's zero RTMR3 cannot name a compose hash, so the
    # report_data step is reached through the dev path below; here: a wrong length.
    quote, collateral, now = sample
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(quote, "[]", bytes(32), DSTACK_COMPOSE_HASH, collateral, now)
    assert err.value.field == "report_data"


# -- the dstack CVM sample: replay, runtime events, compose hash ------------------------------

def test_replay_matches_the_quote_and_the_sdk(dstack_sample) -> None:
    quote, log = dstack_sample
    parsed = dcap_qvl.parse_quote(quote)
    events = tdx.parse_event_log(log)
    sdk = GetQuoteResponse(quote=quote.hex(), event_log=log).replay_rtmrs()
    for index in range(4):
        mine = tdx.replay_rtmr([e.digest for e in events if e.imr == index])
        assert mine.hex() == sdk[index] == getattr(parsed.report, f"rt_mr{index}").hex()
    assert field_of(quote, "rt_mr3") == parsed.report.rt_mr3


def test_runtime_event_digest_matches_the_real_log(dstack_sample) -> None:
    _, log = dstack_sample
    runtime = [e for e in json.loads(log) if e["event_type"] == 0x08000001]
    assert {e["event"] for e in runtime} >= {"app-id", "compose-hash", "instance-id"}
    for event in runtime:
        digest = tdx.runtime_event_digest(event["event"], bytes.fromhex(event["event_payload"]))
        assert digest.hex() == event["digest"]


def test_event_log_check_finds_the_compose_hash(dstack_sample) -> None:
    quote, log = dstack_sample
    rtmr3 = dcap_qvl.parse_quote(quote).report.rt_mr3
    found, app_id, names = tdx.check_event_log(rtmr3, tdx.parse_event_log(log),
                                               DSTACK_COMPOSE_HASH.upper())
    assert found == DSTACK_COMPOSE_HASH
    assert app_id == "ea549f02e1a25fabd1cb788380e033ec5461b2ff"
    assert names[0] == "system-preparing" and names[-1] == "system-ready"


def _tampered(log: str, how: str) -> list[dict]:
    events = json.loads(log)
    index = next(i for i, e in enumerate(events) if e["event"] == "compose-hash")
    event = events[index]
    if how == "payload":
        event["event_payload"] = "00" * 32
    elif how == "digest":
        event["digest"] = "11" * 48
    elif how == "both":  # a consistent event for another compose: the replay must catch it
        event["event_payload"] = "00" * 32
        event["digest"] = tdx.runtime_event_digest("compose-hash", bytes(32)).hex()
    elif how == "drop":
        del events[index]
    elif how == "reorder":
        events[index], events[index + 1] = events[index + 1], events[index]
    elif how == "duplicate":
        events.append(dict(event))
    elif how == "imr":
        event["imr"] = 2
    return events


@pytest.mark.parametrize("how, step", [
    ("payload", "event_log"), ("digest", "event_log"), ("both", "rtmr3"), ("drop", "rtmr3"),
    ("reorder", "rtmr3"), ("duplicate", "rtmr3"), ("imr", "rtmr3"),
])
def test_tampered_event_log_is_refused(dstack_sample, how: str, step: str) -> None:
    quote, log = dstack_sample
    rtmr3 = dcap_qvl.parse_quote(quote).report.rt_mr3
    with pytest.raises(NotVerified) as err:
        tdx.check_event_log(rtmr3, tdx.parse_event_log(_tampered(log, how)), DSTACK_COMPOSE_HASH)
    assert err.value.field == step


def test_other_compose_hash_is_refused(dstack_sample) -> None:
    quote, log = dstack_sample
    rtmr3 = dcap_qvl.parse_quote(quote).report.rt_mr3
    other = hashlib.sha256(b"another app").hexdigest()
    with pytest.raises(NotVerified) as err:
        tdx.check_event_log(rtmr3, tdx.parse_event_log(log), other)
    assert err.value.field == "compose_hash"
    with pytest.raises(InputError):
        tdx.check_event_log(rtmr3, tdx.parse_event_log(log), "not-a-hash")


@pytest.mark.parametrize("bad", ["{", "{}", "[1]", '[{"imr": 4, "event_type": 1, "digest": ""}]',
                                 '[{"imr": 3, "event_type": 1, "digest": "zz"}]',
                                 '[{"imr": 3, "event_type": 1, "digest": "' + "00" * 49 + '"}]'])
def test_malformed_event_logs_are_refused(bad: str) -> None:
    with pytest.raises(NotVerified) as err:
        tdx.parse_event_log(bad)
    assert err.value.field == "event_log"


# -- the report_data rule ---------------------------------------------------------------------

def test_report_data_rule() -> None:
    cid, message = "bafkreiexample", "agent-contract-kit attest v1\ncid: bafkreiexample"
    text = (b"agent-contract-kit tdx report_data v1\ncid: bafkreiexample\nmessage:\n"
            + message.encode())
    assert tdx.tdx_report_data(cid, message) == hashlib.sha256(text).digest() + bytes(32)
    assert tdx.tdx_report_data(cid, message) != tdx.tdx_report_data(cid + "x", message)
    assert tdx.tdx_report_data(cid, message) != tdx.tdx_report_data(cid, message + " ")
    with pytest.raises(NotVerified):
        tdx.tdx_report_data("bafy\nmessage:", message)


# -- dev quotes from the stand-in --------------------------------------------------------------

@pytest.fixture()
def dev() -> tuple[GuestAgentStandIn, bytes, str, bytes]:
    agent = GuestAgentStandIn(compose_hash=DSTACK_COMPOSE_HASH)
    report_data = tdx.tdx_report_data("bafkreiexample", "hello")
    answer = agent.get_quote(report_data.hex())
    return agent, bytes.fromhex(answer["quote"]), answer["event_log"], report_data


def test_dev_quote_is_refused_by_production_verification(dev, sample) -> None:
    _, quote, log, report_data = dev
    _, collateral, now = sample
    assert quote.startswith(b"KIT-DEV-TDX-QUOTE")
    with pytest.raises(ValueError):
        dcap_qvl.parse_quote(quote)  # dcap-qvl itself refuses it
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(quote, log, report_data, DSTACK_COMPOSE_HASH, collateral, now)
    assert err.value.field == "quote"


def test_dev_quote_accepted_only_when_asked(dev) -> None:
    agent, quote, log, report_data = dev
    report = tdx.verify_tdx_attestation(quote, log, report_data, DSTACK_COMPOSE_HASH,
                                        allow_dev=True)
    assert report.status == "dev" and not report.production
    assert report.compose_hash == DSTACK_COMPOSE_HASH and report.app_id == agent.app_id
    # the dev quote is TDX-shaped: the independent offsets find its RTMR3 and report_data
    assert field_of(quote, "report_data") == report_data
    sdk = GetQuoteResponse(quote=quote.hex(), event_log=log).replay_rtmrs()
    assert field_of(quote, "rt_mr3").hex() == sdk[3] == report.rtmrs[3]


def test_pinned_os_measurements_on_a_dev_attestation(dev) -> None:
    """The set is MRTD:RTMR0:RTMR1:RTMR2 read at the quote's v4 offsets (read here by hand)."""
    _, quote, log, report_data = dev
    measured = ":".join(field_of(quote, name).hex() for name in
                        ("mr_td", "rt_mr0", "rt_mr1", "rt_mr2"))
    report = tdx.verify_tdx_attestation(quote, log, report_data, DSTACK_COMPOSE_HASH,
                                        allow_dev=True, os_measurements=(measured,))
    assert report.os_measurements == measured == report.to_dict()["os_measurements"]
    other = measured.replace(field_of(quote, "rt_mr1").hex(), "cd" * 48)
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(quote, log, report_data, DSTACK_COMPOSE_HASH,
                                   allow_dev=True, os_measurements=(other,))
    assert err.value.field == "os_measurements"


@pytest.mark.parametrize("what, step", [
    ("quote_report_data", "quote"), ("quote_rtmr3", "quote"), ("signature", "quote"),
    ("event_payload", "event_log"), ("event_added", "rtmr3"), ("compose_hash", "compose_hash"),
    ("report_data", "report_data"),
])
def test_every_tampering_of_a_dev_attestation_is_refused(dev, what: str, step: str) -> None:
    _, quote, log, report_data = dev
    data, events, expected, compose = bytearray(quote), json.loads(log), report_data, \
        DSTACK_COMPOSE_HASH
    if what == "quote_report_data":
        data[offsets()["report_data"][0]] ^= 1
    elif what == "quote_rtmr3":
        data[offsets()["rt_mr3"][0]] ^= 1
    elif what == "signature":
        data[-1] ^= 1
    elif what == "event_payload":
        events[2]["event_payload"] = "00" * 32
    elif what == "event_added":
        events.append({"imr": 3, "event_type": 0x08000001, "event": "x", "event_payload": "",
                       "digest": tdx.runtime_event_digest("x", b"").hex()})
    elif what == "compose_hash":
        compose = hashlib.sha256(b"another app").hexdigest()
    elif what == "report_data":
        expected = tdx.tdx_report_data("bafkreiother", "hello")
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(bytes(data), events, expected, compose, allow_dev=True)
    assert err.value.field == step


def test_an_emitted_second_compose_hash_event_is_refused() -> None:
    agent = GuestAgentStandIn(compose_hash=DSTACK_COMPOSE_HASH)
    agent.emit_event("compose-hash", hashlib.sha256(b"evil").hexdigest())
    answer = agent.get_quote(bytes(64).hex())
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(answer["quote"], answer["event_log"], bytes(64),
                                   DSTACK_COMPOSE_HASH, allow_dev=True)
    assert err.value.field == "compose_hash"


def test_quote_dispatch_interface(dev) -> None:
    quotes = pytest.importorskip("kit.trust.quotes")
    _, quote, log, _ = dev
    message = "hello"
    answer = GuestAgentStandIn(compose_hash=DSTACK_COMPOSE_HASH).get_quote(
        tdx.tdx_report_data("bafkreiexample", message).hex())
    attestation = quotes.Attestation(
        cid="bafkreiexample", signer="0x0", encryption_key="", nonce="", message=message,
        worker_public_key="", worker_signature="", quote=bytes.fromhex(answer["quote"]),
        quote_type="tdx", document={"event_log": answer["event_log"]})
    policy = quotes.AttestationPolicy(allow_dev=True,
                                      options={"compose_hash": DSTACK_COMPOSE_HASH})
    verdict = quotes.verify_by_type(attestation, policy)
    assert verdict.quote_type == "tdx" and verdict.status == "dev" and not verdict.production
    with pytest.raises(NotVerified) as err:
        quotes.verify_by_type(attestation, quotes.AttestationPolicy(
            options={"compose_hash": DSTACK_COMPOSE_HASH}))
    assert err.value.field == "quote"
    with pytest.raises(NotVerified) as err:
        quotes.verify_by_type(attestation, quotes.AttestationPolicy(allow_dev=True))
    assert err.value.field == "compose_hash"
