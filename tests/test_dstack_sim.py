"""The stand-in guest agent, driven through the real `dstack_sdk` client (its protocol, not ours).

Oracles: dstack_sdk's own response models and RTMR replay, hashlib for the compose hash, the
TDX v4 offsets (header 48 bytes; RTMR3 at body offset 472, report_data at 520), eth-keys for
secp256k1.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from dstack_sdk import DstackClient
from eth_keys import keys
from eth_utils import keccak

from kit.dstack.compose import app_compose
from kit.dstack.simulator import GuestAgentStandIn, StandInServer

IMAGE = "ghcr.io/example/kit-gateway:0.1.0@sha256:" + "ab" * 32
RTMR3 = slice(48 + 472, 48 + 520)
REPORT_DATA = slice(48 + 520, 48 + 584)


@pytest.fixture()
def socket_dir():
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="kitsim") as path:  # short: AF_UNIX
        yield Path(path)


@pytest.fixture()
def server(socket_dir):
    agent = GuestAgentStandIn(app_compose(IMAGE, "demo"))
    with StandInServer(agent, socket_path=socket_dir / "dstack.sock", port=0) as running:
        yield running


def clients(server) -> list[DstackClient]:
    return [DstackClient(str(server.socket_path), timeout=5), DstackClient(server.url, timeout=5)]


def test_keys_are_deterministic_per_app_and_path(server, socket_dir) -> None:
    for client in clients(server):
        first = client.get_key("agent-contract-kit/bafy/answer", "signing")
        again = client.get_key("agent-contract-kit/bafy/answer", "other purpose")
        other = client.get_key("agent-contract-kit/bafy/other", "signing")
        assert first.key == again.key != other.key
        assert first.signature_chain[0] != again.signature_chain[0]  # the purpose is signed
        assert len(first.decode_key()) == 32
        keys.PrivateKey(first.decode_key())  # a valid secp256k1 scalar
    another_app = GuestAgentStandIn(app_compose(IMAGE, "another"))
    with StandInServer(another_app, socket_path=socket_dir / "b.sock", port=None) as second:
        theirs = DstackClient(str(second.socket_path), timeout=5).get_key(
            "agent-contract-kit/bafy/answer", "signing")
    assert theirs.key != first.key
    replica = GuestAgentStandIn(app_compose(IMAGE, "demo"), instance_id="00" * 20)
    assert replica.get_key("agent-contract-kit/bafy/answer")["key"] == first.key


def test_signature_chain_recovers_with_eth_keys(server) -> None:
    client = clients(server)[0]
    answer = client.get_key("p", "purpose")
    derived = keys.PrivateKey(answer.decode_key()).public_key.to_compressed_bytes().hex()
    signature = keys.Signature(answer.decode_signature_chain()[0])
    app_key = signature.recover_public_key_from_msg_hash(keccak(f"purpose:{derived}".encode()))
    other = keys.Signature(client.get_key("q", "purpose").decode_signature_chain()[0])
    derived_q = keys.PrivateKey(client.get_key("q").decode_key()).public_key
    assert other.recover_public_key_from_msg_hash(
        keccak(f"purpose:{derived_q.to_compressed_bytes().hex()}".encode())) == app_key


def test_ed25519_keys_go_through_the_sdk_version_probe(server) -> None:
    client = clients(server)[1]
    assert client.version().version.startswith("kit-dstack-sim")
    key = client.get_key("p", "x", algorithm="ed25519")
    assert len(key.decode_key()) == 32 and key.key != client.get_key("p").key


def test_quote_event_log_and_info_agree(server) -> None:
    document = app_compose(IMAGE, "demo")
    for client in clients(server):
        answer = client.get_quote(b"report data")
        quote = answer.decode_quote()
        assert quote.startswith(b"KIT-DEV-TDX-QUOTE")
        assert quote[REPORT_DATA] == b"report data".ljust(64, b"\0")
        rtmrs = answer.replay_rtmrs()
        assert quote[RTMR3].hex() == rtmrs[3]
        events = answer.decode_event_log()
        compose = [e for e in events if e.event == "compose-hash"]
        info = client.info()
        assert len(compose) == 1 and compose[0].event_payload == info.compose_hash
        assert info.tcb_info.rtmr3 == rtmrs[3]
        # the measured document hashes, with plain sha256, to the compose hash
        assert hashlib.sha256(info.tcb_info.app_compose.encode()).hexdigest() == \
            info.compose_hash
        assert json.loads(info.tcb_info.app_compose) == document
        assert info.app_id == info.compose_hash[:40]


def test_emit_event_extends_rtmr3(server) -> None:
    client = clients(server)[0]
    before = client.get_quote(b"x").replay_rtmrs()[3]
    client.emit_event("app-started", b"v1")
    answer = client.get_quote(b"x")
    assert answer.replay_rtmrs()[3] != before
    assert answer.decode_quote()[RTMR3].hex() == answer.replay_rtmrs()[3]
    assert answer.decode_event_log()[-1].event == "app-started"


def test_env_endpoint_and_bad_requests(server, monkeypatch) -> None:
    monkeypatch.setenv("DSTACK_SIMULATOR_ENDPOINT", server.url)
    assert DstackClient(timeout=5).info().app_name == "kit-dstack-sim"
    with pytest.raises(ValueError):
        DstackClient(timeout=5).get_quote(b"x" * 65)  # the SDK refuses it client-side
    with httpx.Client(base_url=server.url, timeout=5) as raw:
        assert raw.post("/GetQuote", json={"report_data": "00" * 65}).status_code == 400
        assert raw.post("/GetQuote", json={"report_data": "zz"}).status_code == 400
        assert raw.post("/Attest", json={}).status_code == 404
        assert raw.post("/GetKey", content=b"not json",
                        headers={"Content-Type": "application/json"}).status_code == 400
        assert raw.post("/GetKey", json={"algorithm": "rsa"}).status_code == 400


def test_cli_serves_for_a_bounded_time(socket_dir) -> None:
    sock = socket_dir / "cli.sock"
    compose_hash = hashlib.sha256(b"app").hexdigest()
    env = {k: v for k, v in os.environ.items() if k != "DSTACK_SIMULATOR_ENDPOINT"}
    process = subprocess.Popen(
        [sys.executable, "-m", "kit", "dstack-sim", "--socket", str(sock), "--no-tcp",
         "--compose-hash", compose_hash, "--seconds", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 15
        while not sock.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        info = DstackClient(str(sock), timeout=5).info()
        assert info.compose_hash == compose_hash
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    assert "STAND-IN" in out


def test_cli_refuses_bad_input(socket_dir) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kit", "dstack-sim", "-C", str(socket_dir), "--no-tcp",
         "--seconds", "0"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "kit dstack compose" in result.stderr
    assert "Traceback" not in result.stderr
    result = subprocess.run(
        [sys.executable, "-m", "kit", "dstack-sim", "--compose-hash", "xyz", "--no-tcp",
         "--socket", str(socket_dir / "s.sock"), "--seconds", "0"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr


# -- the Wapo globals from the guest agent (kit.dstack.guest) ---------------------------------

def test_derive_secret_is_per_cid_and_shared_by_replicas(server, socket_dir) -> None:
    from kit.dstack.guest import GuestAgent

    guest = GuestAgent(str(server.socket_path))
    first = guest.derive_secret("bafkreione", "code", b"salt")
    assert len(first) == 64 and first == guest.derive_secret("bafkreione", "code", b"salt")
    assert first != guest.derive_secret("bafkreitwo", "code", b"salt")
    assert first != guest.derive_secret("bafkreione", "code", b"salt2")
    replica = GuestAgentStandIn(app_compose(IMAGE, "demo"), instance_id="11" * 20)
    with StandInServer(replica, socket_path=socket_dir / "r.sock", port=None) as second:
        assert GuestAgent(str(second.socket_path)).derive_secret(
            "bafkreione", "code", b"salt") == first
    other = GuestAgentStandIn(app_compose(IMAGE, "other-app"))
    with StandInServer(other, socket_path=socket_dir / "o.sock", port=None) as third:
        assert GuestAgent(str(third.socket_path)).derive_secret(
            "bafkreione", "code", b"salt") != first


def test_quote_binds_cid_and_message(server) -> None:
    from kit.dstack.guest import GuestAgent
    from kit.trust import tdx
    from kit.trust.errors import NotVerified

    guest = GuestAgent(server.url)
    answer = guest.quote("bafkreione", "agent-contract-kit attest v1\ncid: bafkreione")
    assert answer["quote_type"] == "tdx"
    compose_hash = guest.compose_hash()
    message = "agent-contract-kit attest v1\ncid: bafkreione"
    report = tdx.verify_tdx_attestation(answer["quote"], answer["event_log"],
                                        tdx.tdx_report_data("bafkreione", message),
                                        compose_hash, allow_dev=True)
    assert report.compose_hash == compose_hash
    with pytest.raises(NotVerified) as err:
        tdx.verify_tdx_attestation(answer["quote"], answer["event_log"],
                                   tdx.tdx_report_data("bafkreitwo", message), compose_hash,
                                   allow_dev=True)
    assert err.value.field == "report_data"


def test_guest_agent_errors_are_mapped(socket_dir) -> None:
    from kit.dstack.guest import GuestAgent
    from kit.errors import ExternalError

    with pytest.raises(ExternalError, match="kit dstack-sim"):
        GuestAgent(str(socket_dir / "missing.sock"))
    with pytest.raises(ExternalError, match="GetKey"):
        GuestAgent("http://127.0.0.1:9", timeout=2).derive_secret("bafkreione", "c", b"s")
