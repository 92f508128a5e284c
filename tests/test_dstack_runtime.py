"""The Wapo globals from the guest agent under `kit gateway serve` (issue 15, item 2): the whole
path offline, through the real `dstack_sdk` client against the stand-in guest agent.

The template contract is fetched by CID from a stand-in IPFS gateway (CIDs from aleph-cid, an
independent implementation), its vault is sealed, `/attestation` answers a TDX (dev) quote with
its event log and compose hash, and verification goes through kit.trust's quote dispatcher.
Independent oracles: `dstack_sdk.get_compose_hash` (the compose hash), the `dstack_sdk` client
itself (GetKey on the documented path, for Wapo.deriveSecret), hashlib (the report_data rule as
documented in kit/trust/tdx.py, recomputed here), eth-account (signer recovery), and the TDX v4
layout (Intel TDX DCAP quote: 48-byte header, report_data at body offset 520).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tempfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import requests

from fixtures.vectors import DCAP_QVL
from fixtures.ipfs_node import oracle_cid, reply, standin_http
from fixtures.servers import MOCK_LLM_KEY
from kit.dstack.compose import app_compose
from kit.dstack.serve import production_gateway
from kit.dstack.simulator import GuestAgentStandIn, StandInServer

TIMEOUT = 30
IMAGE = "ghcr.io/example/kit-gateway:0.1.0@sha256:" + "ab" * 32
NONCE = "7c" * 32
HEADER_BYTES, REPORT_DATA_AT = 48, 520  # TDX quote v4: header, then the TD report body


@pytest.fixture()
def socket_dir():
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="kitrt") as path:
        yield Path(path)


def serve_bytes(files: dict[str, bytes]):
    def handle(request: BaseHTTPRequestHandler) -> None:
        cid = request.path.removeprefix("/ipfs/")
        reply(request, 200, files[cid]) if cid in files else reply(request, 404, b"")
    return standin_http(handle)


class Cvm:
    """A started stand-in guest agent + production gateway for one app (compose document)."""

    def __init__(self, socket_dir: Path, data_dir: Path, ipfs_url: str, name: str = "app",
                 instance_id: str | None = None) -> None:
        self.compose = app_compose(IMAGE, name)
        self.agent = StandInServer(GuestAgentStandIn(self.compose, instance_id=instance_id),
                                   socket_path=socket_dir / f"{name}-{instance_id}.sock",
                                   port=None).start()
        self.gateway = production_gateway(
            gateways=[ipfs_url], ipfs_api=None, data_dir=data_dir,
            dstack_endpoint=str(self.agent.socket_path), port=0)
        self.url = self.gateway.start()

    def stop(self) -> None:
        self.gateway.stop()
        self.agent.stop()


@pytest.fixture()
def contract(project_factory, mock_llm) -> tuple[str, bytes, str]:
    from kit.contract.config import load_config

    project = project_factory(provider="openai-compatible", base_url=mock_llm.base_url)
    code = (project / "dist" / "agent.js").read_bytes()
    return oracle_cid(code, 1), code, load_config(project).provider.key_secret


@pytest.fixture()
def cvm(contract, socket_dir, tmp_path):
    cid, code, _ = contract
    with serve_bytes({cid: code}) as ipfs_url:
        started = Cvm(socket_dir, tmp_path / "app", ipfs_url)
        try:
            yield started
        finally:
            started.stop()


def attestation(url: str, cid: str, nonce: str = NONCE) -> dict[str, Any]:
    answer = requests.get(f"{url}/ipfs/{cid}/attestation", params={"nonce": nonce},
                          timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def policy(compose_hash: str, allow_dev: bool = True) -> Any:
    from kit.trust.quotes import AttestationPolicy

    return AttestationPolicy(allow_dev=allow_dev, options={"compose_hash": compose_hash})


def oracle_compose_hash(document: dict[str, Any]) -> str:
    from dstack_sdk import get_compose_hash

    return get_compose_hash(document)


def oracle_report_data(cid: str, message: str) -> bytes:
    text = b"agent-contract-kit tdx report_data v1\ncid: " + cid.encode() + b"\nmessage:\n" + \
        message.encode("utf-8")
    return hashlib.sha256(text).digest() + bytes(32)


# -- /attestation answers a TDX quote that binds the CID and the message --------------------------


def test_attestation_is_a_tdx_quote_with_event_log_and_compose_hash(cvm, contract) -> None:
    from kit.trust.attestation import verify_attestation

    cid = contract[0]
    document = attestation(cvm.url, cid)
    expected_hash = oracle_compose_hash(cvm.compose)
    assert document["quote_type"] == "tdx"
    assert document["compose_hash"] == expected_hash
    quote = bytes.fromhex(document["quote"])
    at = HEADER_BYTES + REPORT_DATA_AT
    assert quote[at:at + 64] == oracle_report_data(cid, document["message"])
    events = json.loads(document["event_log"])
    assert [e["event_payload"] for e in events if e["event"] == "compose-hash"] == [expected_hash]
    attested = verify_attestation(document, cid=cid, nonce=NONCE, policy=policy(expected_hash))
    assert attested.signer == document["signer"]
    assert attested.quote.quote_type == "tdx" and attested.quote.production is False


def test_answers_are_signed_by_the_attested_key_and_replicas_share_it(
        contract, socket_dir, tmp_path) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    from kit.trust.core import answer_text

    cid, code, key_secret = contract
    with serve_bytes({cid: code}) as ipfs_url:
        signers = {}
        for label, name, instance in (("app", "app", None), ("replica", "app", "33" * 20),
                                      ("other", "other-app", None)):
            cvm = Cvm(socket_dir, tmp_path / label, ipfs_url, name=name, instance_id=instance)
            try:
                signers[label] = attestation(cvm.url, cid)["signer"]
                if label == "app":
                    stored = requests.post(f"{cvm.url}/vaults", timeout=TIMEOUT, json={
                        "cid": cid, "data": {key_secret: MOCK_LLM_KEY}}).json()
                    answer = requests.post(f"{cvm.url}/ipfs/{cid}", params={"key": stored["key"]},
                                           json={"prompt": "hello"}, timeout=TIMEOUT)
                    assert answer.status_code == 200, answer.text
                    proof = answer.json()["proof"]
                    recovered = Account.recover_message(encode_defunct(text=answer_text(proof)),
                                                        signature=proof["signature"])
                    assert recovered == proof["signer"] == signers["app"]
            finally:
                cvm.stop()
    assert signers["app"] == signers["replica"] != signers["other"]


DERIVE = b"""
async function main() {
  const secret = Wapo.deriveSecret("agent-contract-kit/answer-signing/v1");
  return JSON.stringify({ status: 200, body: Array.from(secret, (b) =>
    b.toString(16).padStart(2, "0")).join(""), headers: {} });
}
main().then((out) => { globalThis.scriptOutput = out; });
"""


def test_derive_secret_follows_the_documented_get_key_path(socket_dir, tmp_path) -> None:
    from dstack_sdk import DstackClient

    cid = oracle_cid(DERIVE, 1)
    salt = b"agent-contract-kit/answer-signing/v1"
    with serve_bytes({cid: DERIVE}) as ipfs_url:
        cvm = Cvm(socket_dir, tmp_path / "app", ipfs_url)
        try:
            got = requests.get(f"{cvm.url}/ipfs/{cid}", timeout=TIMEOUT).text
            path = f"agent-contract-kit/wapo/derive-secret/v1/{cid}/" + \
                hashlib.sha256(salt).hexdigest()
            key = DstackClient(str(cvm.agent.socket_path)).get_key(path).decode_key()
        finally:
            cvm.stop()
    expected = hmac.new(key, b"agent-contract-kit wapo deriveSecret v1"
                        + hashlib.sha256(DERIVE).digest() + salt, hashlib.sha512).hexdigest()
    assert got == expected


def test_kit_dev_keeps_dev_quotes(contract, local_gateway_factory, tmp_path) -> None:
    cid, code, _ = contract
    project = tmp_path / "dev"
    (project / "dist").mkdir(parents=True)
    (project / "dist" / "agent.js").write_bytes(code)
    gateway = local_gateway_factory(project)
    document = attestation(gateway.url, cid)
    assert document["quote_type"] == "dev"
    assert bytes.fromhex(document["quote"]).startswith(b"KIT-DEV-QUOTE-v1\x00")
    assert "event_log" not in document and "compose_hash" not in document


# -- every tampering is refused, naming the step -----------------------------------------------


def _flip(hex_text: str, byte_at: int) -> str:
    data = bytearray(bytes.fromhex(hex_text))
    data[byte_at] ^= 0x01
    return data.hex()


def _tampered_event_log(text: str) -> str:
    events = json.loads(text)
    for event in events:
        if event["event"] == "compose-hash":
            event["event_payload"] = "00" * 32
    return json.dumps(events)


def test_every_tampering_is_refused(cvm, contract) -> None:
    from kit.trust.attestation import verify_attestation
    from kit.trust.errors import NotVerified

    cid = contract[0]
    document = attestation(cvm.url, cid)
    other = attestation(cvm.url, cid, nonce="8d" * 32)  # a genuine quote for another message
    good_hash = oracle_compose_hash(cvm.compose)
    cases = [
        ("quote body", {"quote": _flip(document["quote"], HEADER_BYTES + 200)}, good_hash,
         "quote"),
        ("report_data bytes", {"quote": _flip(document["quote"], HEADER_BYTES + REPORT_DATA_AT)},
         good_hash, "quote"),
        ("quote of another message", {"quote": other["quote"]}, good_hash, "report_data"),
        ("event log payload", {"event_log": _tampered_event_log(document["event_log"])},
         good_hash, "event_log"),
        ("event log dropped", {"event_log": "[]"}, good_hash, "rtmr3"),
        ("no event log", {"event_log": None}, good_hash, "event_log"),
        # eth-account (imported by the verifier) raises the recursion limit: json.loads of this
        # would crash the process instead of refusing it
        ("event log nested too deep", {"event_log": "[" * 200_000 + "]" * 200_000}, good_hash,
         "event_log"),
        ("another app's compose hash", {}, "ee" * 32, "compose_hash"),
        ("unknown quote type", {"quote_type": "tdx2"}, good_hash, "quote_type"),
        ("tdx quote sold as sgx", {"quote_type": "sgx"}, good_hash, "app_address"),
    ]
    for what, changes, compose_hash, step in cases:
        forged = {**document, **changes}
        with pytest.raises(NotVerified) as err:
            verify_attestation(forged, cid=cid, nonce=NONCE, policy=policy(compose_hash))
        assert err.value.field == step, what
    with pytest.raises(NotVerified) as err:  # production verification refuses dev quotes
        verify_attestation(document, cid=cid, nonce=NONCE, policy=policy(good_hash, False))
    assert err.value.field == "quote"
    with pytest.raises(NotVerified) as err:  # no compose hash pinned: nothing to compare with
        verify_attestation(document, cid=cid, nonce=NONCE,
                           policy=replace(policy(good_hash), options={}))
    assert err.value.field == "compose_hash"


def test_contract_bytes_not_matching_the_cid_are_refused(contract, socket_dir, tmp_path) -> None:
    cid, code, _ = contract
    with serve_bytes({cid: code.replace(b"agent-contract-kit", b"agent-contract-kiT", 1)}) \
            as ipfs_url:
        cvm = Cvm(socket_dir, tmp_path / "app", ipfs_url)
        try:
            answer = requests.get(f"{cvm.url}/ipfs/{cid}/attestation", params={"nonce": NONCE},
                                  timeout=TIMEOUT)
        finally:
            cvm.stop()
    assert answer.status_code == 502 and answer.json()["error"]["code"] == "cid_mismatch"


def test_guest_agent_failure_reaches_the_contract_as_an_error(contract, socket_dir,
                                                              tmp_path) -> None:
    cid, code, _ = contract
    with serve_bytes({cid: code}) as ipfs_url:
        cvm = Cvm(socket_dir, tmp_path / "app", ipfs_url)
        try:
            cvm.agent.stop()  # the guest agent goes away after the gateway started
            answer = requests.get(f"{cvm.url}/ipfs/{cid}/attestation", params={"nonce": NONCE},
                                  timeout=TIMEOUT)
        finally:
            cvm.gateway.stop()
    assert answer.status_code == 500
    assert "guest agent" in answer.text and "Traceback" not in answer.text


# -- the generated tool's copy of the TDX check gives the kit's verdicts -----------------------
# Vectors as in tests/test_tdx.py: shared/vectors/dcap-qvl/tdx_quote (+ collateral), a real
# Intel TDX quote from Phala-Network/dcap-qvl `sample/` (commit 9bffe30b, see SOURCE.md there);
# tests/data/dstack_simulator/{quote.hex, eventlog.json} from Phala-Network/dstack
# `sdk/simulator/` (commit 45fe4b4a).

VECTORS = DCAP_QVL
DSTACK = Path(__file__).parent / "data" / "dstack_simulator"
DSTACK_COMPOSE_HASH = "ea549f02e1a25fabd1cb788380e033ec5461b2ffe4328d753642cf035452e48b"


def tool_namespace() -> dict[str, Any]:
    """The verifier regions exactly as `kit tool` embeds them, run in a fresh namespace."""
    from kit.trust.core import attestation_verifier_source, verifier_source
    from kit.trust.tdx import tool_verifier_source

    namespace: dict[str, Any] = {}
    exec("import hashlib, json, re\nfrom typing import Any, Dict, Iterable, Optional\n"
         + verifier_source() + attestation_verifier_source() + tool_verifier_source(), namespace)
    return namespace


def _iso(value: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


def _verdicts(quote: bytes, event_log: str, report_data: bytes, compose_hash: str,
              collateral: Any, now: int, statuses: tuple[str, ...] | None = None,
              os_measurements: tuple[str, ...] = ()):
    import dcap_qvl

    from kit.trust import tdx
    from kit.trust.errors import NotVerified

    tool = tool_namespace()
    extra: dict[str, Any] = {} if statuses is None else {"accepted_statuses": statuses}
    if os_measurements:
        extra["os_measurements"] = os_measurements
    try:
        tdx.verify_tdx_attestation(quote, event_log, report_data, compose_hash, collateral,
                                   now, **extra)
        kit_verdict = "verified"
    except NotVerified as exc:
        kit_verdict = exc.field
    parsed = dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral))
    try:
        tool["check_tdx_quote"](quote, event_log, report_data, compose_hash, parsed, now,
                                **extra)
        tool_verdict = "verified"
    except tool["ProofError"] as exc:
        tool_verdict = exc.field
    return kit_verdict, tool_verdict


def test_tool_copy_gives_the_kits_verdicts_on_the_real_tdx_sample() -> None:
    quote = (VECTORS / "tdx_quote").read_bytes()
    collateral = json.loads((VECTORS / "tdx_quote_collateral.json").read_text())
    tcb, qe = json.loads(collateral["tcb_info"]), json.loads(collateral["qe_identity"])
    now = max(_iso(tcb["issueDate"]), _iso(qe["issueDate"])) + 60
    report_data = quote[HEADER_BYTES + REPORT_DATA_AT:HEADER_BYTES + REPORT_DATA_AT + 64]
    tampered = bytearray(quote)
    tampered[HEADER_BYTES + REPORT_DATA_AT] ^= 1
    cases = {  # the sample's RTMR3 is zero (no events): it passes dcap and rtmr3, no compose hash
        "genuine, no compose-hash event": ((quote, "[]", report_data, DSTACK_COMPOSE_HASH,
                                            collateral, now), "compose_hash"),
        "tampered report_data": ((bytes(tampered), "[]", report_data, DSTACK_COMPOSE_HASH,
                                  collateral, now), "dcap"),
        "after the collateral's window": ((quote, "[]", report_data, DSTACK_COMPOSE_HASH,
                                           collateral, _iso(tcb["nextUpdate"]) + 86400), "dcap"),
        "an event the quote does not measure": ((quote, (DSTACK / "eventlog.json").read_text(),
                                                 report_data, DSTACK_COMPOSE_HASH, collateral,
                                                 now), "rtmr3"),
    }
    for what, (args, step) in cases.items():
        assert _verdicts(*args) == (step, step), what
    assert _verdicts(quote, "[]", report_data, DSTACK_COMPOSE_HASH, collateral, now,
                     ("OutOfDate",)) == ("dcap", "dcap")


def test_pinned_os_measurements_are_checked_on_the_real_tdx_sample() -> None:
    """MRTD and RTMR0-2 as dcap-qvl's own parser reads them (the oracle) pass the
    os_measurements step, so the real sample goes on to stop at compose_hash (it has no
    compose-hash event); a set with one register changed stops it at os_measurements, in the
    kit's verifier and in the tool's copy alike."""
    import dcap_qvl

    quote = (VECTORS / "tdx_quote").read_bytes()
    collateral = json.loads((VECTORS / "tdx_quote_collateral.json").read_text())
    tcb, qe = json.loads(collateral["tcb_info"]), json.loads(collateral["qe_identity"])
    now = max(_iso(tcb["issueDate"]), _iso(qe["issueDate"])) + 60
    report_data = quote[HEADER_BYTES + REPORT_DATA_AT:HEADER_BYTES + REPORT_DATA_AT + 64]
    body = dcap_qvl.parse_quote(quote).report
    registers = [getattr(body, name).hex() for name in ("mr_td", "rt_mr0", "rt_mr1", "rt_mr2")]
    genuine = ":".join(registers)
    args = (quote, "[]", report_data, DSTACK_COMPOSE_HASH, collateral, now)
    for changed in range(4):
        other = list(registers)
        other[changed] = ("00" if other[changed][:2] != "00" else "11") + other[changed][2:]
        pinned = (":".join(other),)
        assert _verdicts(*args, os_measurements=pinned) == ("os_measurements",) * 2, changed
    assert _verdicts(*args, os_measurements=(genuine,)) == ("compose_hash",) * 2
    assert _verdicts(*args, os_measurements=(pinned[0], genuine)) == ("compose_hash",) * 2
    assert _verdicts(*args) == ("compose_hash",) * 2  # nothing pinned: not checked
    # one bare string (where `in` would match a substring) is refused, not searched
    from kit.trust import tdx

    with pytest.raises(TypeError):
        tdx.check_os_measurements(genuine, genuine)
    tool = tool_namespace()
    with pytest.raises(tool["ProofError"]) as err:
        tool["check_tdx_quote"](quote, "[]", report_data, DSTACK_COMPOSE_HASH,
                                dcap_qvl.QuoteCollateralV3.from_json(json.dumps(collateral)),
                                now, os_measurements=genuine + ":" + genuine)
    assert err.value.field == "os_measurements"


def test_tool_copy_checks_the_dstack_event_log_as_the_kit_does() -> None:
    from kit.trust import tdx
    from kit.trust.errors import NotVerified

    tool = tool_namespace()
    quote = bytes.fromhex((DSTACK / "quote.hex").read_text().strip())
    log = (DSTACK / "eventlog.json").read_text().strip()
    rtmr3 = quote[HEADER_BYTES + 472:HEADER_BYTES + 520]
    assert tool["check_tdx_event_log"](rtmr3, log, DSTACK_COMPOSE_HASH) == DSTACK_COMPOSE_HASH
    events = json.loads(log)
    payload_changed = json.loads(log)
    next(e for e in payload_changed if e.get("event") == "compose-hash")["event_payload"] = \
        "00" * 32
    for what, text, compose_hash in (
            ("another app", log, "ee" * 32),
            ("payload changed", json.dumps(payload_changed), DSTACK_COMPOSE_HASH),
            ("event dropped", json.dumps(events[:-1]), DSTACK_COMPOSE_HASH),
            ("too deep", "[" * 5000 + "]" * 5000, DSTACK_COMPOSE_HASH)):
        with pytest.raises(NotVerified) as kit_err:
            tdx.check_event_log(rtmr3, tdx.parse_event_log(text), compose_hash)
        with pytest.raises(tool["ProofError"]) as tool_err:
            tool["check_tdx_event_log"](rtmr3, text, compose_hash)
        assert kit_err.value.field == tool_err.value.field, what
    stand_in = GuestAgentStandIn(compose_hash=DSTACK_COMPOSE_HASH)
    dev = stand_in.get_quote(oracle_report_data("bafkreione", "m").hex())
    with pytest.raises(tool["ProofError"]) as err:  # the tool never accepts dev quotes
        tool["check_tdx_quote"](bytes.fromhex(dev["quote"]), dev["event_log"],
                                oracle_report_data("bafkreione", "m"), DSTACK_COMPOSE_HASH,
                                None, 0)
    assert err.value.field == "quote"
    assert tool["tdx_expected_report_data"]("bafkreione", "m") == \
        tdx.tdx_report_data("bafkreione", "m") == oracle_report_data("bafkreione", "m")


# -- `kit attest` on a TDX gateway: the compose hash from deployments/dstack.json ----------------


def test_kit_attest_checks_the_recorded_compose_hash(deployed_factory, mock_llm, socket_dir,
                                                     tmp_path, capsys) -> None:
    from fixtures.ipfs_node import run_cli
    from kit.dstack.compose import write_compose
    from kit.ipfs.records import load_latest

    project = deployed_factory(provider="openai-compatible", base_url=mock_llm.base_url)
    cid = load_latest(project).cid
    record = write_compose(project, image=IMAGE)
    document = json.loads((project / record.app_compose).read_text())
    assert oracle_compose_hash(document) == record.compose_hash
    with serve_bytes({cid: (project / "dist" / "agent.js").read_bytes()}) as ipfs_url:
        cvm = Cvm(socket_dir, tmp_path / "app", ipfs_url, name=document["name"])
        try:
            assert cvm.compose == document
            production = run_cli(capsys, "attest", "-C", str(project), "--gateway", cvm.url,
                                 "--json")
            other_app = run_cli(capsys, "attest", "-C", str(project), "--gateway", cvm.url,
                                "--allow-dev-quote", "--compose-hash", "ee" * 32)
            bad_input = run_cli(capsys, "attest", "-C", str(project), "--gateway", cvm.url,
                                "--allow-dev-quote", "--compose-hash", "xyz")
            code, out, _ = run_cli(capsys, "attest", "-C", str(project), "--gateway", cvm.url,
                                   "--allow-dev-quote", "--json")
            quote = bytes.fromhex(requests.get(f"{cvm.url}/ipfs/{cid}/attestation", params={
                "nonce": "00" * 32}, timeout=TIMEOUT).json()["quote"])
            # the OS registers read by hand at the TDX v4 offsets: MRTD, then RTMR0-2
            os_image = ":".join(quote[HEADER_BYTES + at:HEADER_BYTES + at + 48].hex()
                                for at in (136, 328, 376, 424))
            pinned = _pin_os_images(project, [os_image])
            pinned_ok = run_cli(capsys, "attest", "-C", str(project), "--gateway", cvm.url,
                                "--allow-dev-quote")
            key_file = tmp_path / "ethereum_private_key.txt"
            key_file.write_text("0x" + "5a" * 32)
            sealed = run_cli(capsys, "encrypt", "--cid", cid, "--gateway", cvm.url,
                             "--key-file", str(key_file), "--prompt", "hi", "-C", str(project),
                             "--allow-dev-quote", "--json")
            _pin_os_images(project, [os_image.replace(os_image[:2], "ee", 1)], pinned)
            other_os = [run_cli(capsys, verb, *args, "-C", str(project), "--gateway", cvm.url,
                                "--allow-dev-quote")
                        for verb, args in (("attest", ()), ("encrypt", (
                            "--cid", cid, "--key-file", str(key_file), "--prompt", "hi")))]
        finally:
            cvm.stop()
    assert production[0] == 1 and "quote" in production[2]
    assert other_app[0] == 1 and "compose_hash" in other_app[2]
    assert bad_input[0] == 2 and "--compose-hash" in bad_input[2]
    view = json.loads(out)
    assert code == 0 and view["quote_type"] == "tdx" and view["production"] is False
    assert view["details"]["compose_hash"] == record.compose_hash
    assert view["details"]["os_measurements"] == os_image
    assert view["signer"] in load_latest(project).signers
    assert pinned_ok[0] == 0 and os_image in pinned_ok[1]
    # kit encrypt checks a TDX attestation by the same policy (compose hash and OS pins)
    assert sealed[0] == 0 and json.loads(sealed[1])["quote_type"] == "tdx", sealed[2]
    for code_, _, err in other_os:
        assert code_ == 1 and "os_measurements" in err, err


def _pin_os_images(project: Path, sets: list[str], original: str | None = None) -> str:
    """Append [verify] tdx_os_measurements to agent.toml (to the original text when given)."""
    config = project / "agent.toml"
    original = config.read_text() if original is None else original
    config.write_text(original + "\n[verify]\ntdx_os_measurements = " + json.dumps(sets) + "\n")
    return original


# -- the generated tool in "attested" mode against a TDX gateway --------------------------------


def test_attested_tool_pins_the_compose_hash_and_refuses_dev_tdx_quotes(
        project_factory, mock_llm, socket_dir, tmp_path) -> None:
    from fixtures.mech import KeyChain, load_like_mech
    from kit.cid import bytes_cid
    from kit.contract.config import load_config
    from kit.dstack.compose import write_compose
    from kit.mech.package import generate_tool
    from kit.contract.project import build_project

    project = project_factory(provider="openai-compatible", base_url=mock_llm.base_url)
    os_image = ":".join(["ab" * 48] * 4)
    (project / "agent.toml").write_text((project / "agent.toml").read_text()
                                        + '\n[verify]\nanswers = "attested"\n'
                                        + f'tdx_os_measurements = ["{os_image.upper()}"]\n')
    build = build_project(project)
    code = build.path.read_bytes()
    cid = bytes_cid(code, version=build.cid_version)
    record = write_compose(project, image=IMAGE)
    files = {cid: code}
    with serve_bytes(files) as ipfs_url:
        cvm = Cvm(socket_dir, tmp_path / "app", ipfs_url, name=record.name)
        try:
            deployment = {"cid": cid, "cid_version": build.cid_version, "gateway_url": cvm.url,
                          "verified_via": ipfs_url, "artifact": "dist/agent.js",
                          "size": build.size, "config_sha256": "0" * 64,
                          "template_version": build.template_version, "kit_version": "0",
                          "backend": "node", "deployed_at": "2026-01-01T00:00:00Z",
                          "signers": []}
            (project / "deployments" / "latest.json").write_text(json.dumps(deployment))
            (project / "deployments" / "history.json").write_text(json.dumps([deployment]))
            package = generate_tool(project).package_dir
            run, namespace = load_like_mech(package)
            assert namespace["COMPOSE_HASH"] == record.compose_hash
            assert namespace["TDX_OS_MEASUREMENTS"] == [os_image]
            assert "check_tdx_quote" in namespace and namespace["PINNED_SIGNERS"] == []
            stored = requests.post(f"{cvm.url}/vaults", timeout=TIMEOUT, json={
                "cid": cid, "data": {load_config(project).provider.key_secret: MOCK_LLM_KEY}}
            ).json()
            model = load_config(project).provider.default_model
            outcome = run(tool=namespace["PREFIX"] + model, prompt="hello", model=model,
                          api_keys=KeyChain({"tee_vault_key": [stored["key"]]}),
                          counter_callback=None)
        finally:
            cvm.stop()
    # the unknown signer sent the tool to /attestation: a stand-in's dev TDX quote never passes
    assert outcome[0].startswith("Error: ") and "quote" in outcome[0], outcome[0]
    assert "stand-in answer" not in outcome[0]  # the unverified answer is never returned
