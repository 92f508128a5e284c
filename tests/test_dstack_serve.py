"""`kit gateway serve` (kit.dstack.serve): contracts fetched by CID from IPFS gateways and
re-hashed, a vault sealed with a key from the guest agent (the stand-in, through the real
dstack_sdk client). CIDs come from aleph-cid, an independent implementation; the IPFS gateway
is a stand-in HTTP server on 127.0.0.1 serving the real contract bytes (or tampered ones).
"""

from __future__ import annotations

import json
import tempfile
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
import requests

from fixtures.ipfs_node import oracle_cid, reply, standin_http
from kit.dstack.compose import app_compose
from kit.dstack.serve import SealedVault, production_gateway, sealing_key
from kit.dstack.simulator import GuestAgentStandIn, StandInServer
from kit.local.vault import VaultFileInvalid

TIMEOUT = 20
IMAGE = "ghcr.io/example/kit-gateway:0.1.0@sha256:" + "cd" * 32
ECHO = b"""
async function main(raw) {
  const request = JSON.parse(raw);
  return JSON.stringify({ status: 200, body: JSON.stringify(request),
                          headers: { "content-type": "application/json" } });
}
main.apply(null, globalThis.scriptArgs).then((out) => { globalThis.scriptOutput = out; });
"""
CID = oracle_cid(ECHO, 1)


@pytest.fixture()
def socket_dir():
    with tempfile.TemporaryDirectory(dir="/tmp", prefix="kitsrv") as path:
        yield Path(path)


def guest_agent(socket_dir: Path, name: str):
    return StandInServer(GuestAgentStandIn(app_compose(IMAGE, name)),
                         socket_path=socket_dir / f"{name}.sock", port=None)


def ipfs_gateway(body: bytes):
    def handle(request: BaseHTTPRequestHandler) -> None:
        if request.path == f"/ipfs/{CID}":
            reply(request, 200, body)
        else:
            reply(request, 404, b"not found")
    return standin_http(handle)


def start(socket_dir: Path, data_dir: Path, gateways: list[str], name: str = "app"):
    gateway = production_gateway(gateways=gateways, ipfs_api=None, data_dir=data_dir,
                                 dstack_endpoint=str(socket_dir / f"{name}.sock"), port=0)
    gateway.start()
    return gateway


def test_contract_is_fetched_verified_and_run(socket_dir, tmp_path) -> None:
    with guest_agent(socket_dir, "app"), ipfs_gateway(ECHO) as url:
        gateway = start(socket_dir, tmp_path, [url])
        try:
            answer = requests.get(f"{gateway.url}/ipfs/{CID}?q=1", timeout=TIMEOUT)
            assert answer.status_code == 200 and answer.json()["queries"] == {"q": ["1"]}
        finally:
            gateway.stop()
    assert (tmp_path / "code" / f"{CID}.js").read_bytes() == ECHO  # the verified-code cache


def test_bytes_that_do_not_hash_to_the_cid_are_refused(socket_dir, tmp_path) -> None:
    tampered = ECHO.replace(b"status: 200", b"status: 201")
    with guest_agent(socket_dir, "app"), ipfs_gateway(tampered) as bad, \
            ipfs_gateway(ECHO) as good:
        gateway = start(socket_dir, tmp_path, [bad])
        try:
            answer = requests.get(f"{gateway.url}/ipfs/{CID}", timeout=TIMEOUT)
            assert answer.status_code == 502
            assert answer.json()["error"]["code"] == "cid_mismatch"
        finally:
            gateway.stop()
        assert not (tmp_path / "code" / f"{CID}.js").exists()
        gateway = start(socket_dir, tmp_path, [bad, good])  # the next source is tried
        try:
            assert requests.get(f"{gateway.url}/ipfs/{CID}", timeout=TIMEOUT).status_code == 200
        finally:
            gateway.stop()


def test_a_tampered_disk_cache_is_not_run(socket_dir, tmp_path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{CID}.js").write_bytes(ECHO + b"//x")
    with guest_agent(socket_dir, "app"), ipfs_gateway(ECHO) as url:
        gateway = start(socket_dir, tmp_path, [url])
        try:
            assert requests.get(f"{gateway.url}/ipfs/{CID}", timeout=TIMEOUT).status_code == 200
        finally:
            gateway.stop()
    assert (tmp_path / "code" / f"{CID}.js").read_bytes() == ECHO


def test_vault_is_sealed_bound_to_its_cid_and_unreadable_by_another_app(socket_dir,
                                                                        tmp_path) -> None:
    secret = "vault-test-value-123"
    with guest_agent(socket_dir, "app"), guest_agent(socket_dir, "other"), \
            ipfs_gateway(ECHO) as url:
        gateway = start(socket_dir, tmp_path, [url])
        try:
            stored = requests.post(f"{gateway.url}/vaults", timeout=TIMEOUT, json={
                "cid": CID, "data": {"API_KEY": secret}}).json()
            seen = requests.get(f"{gateway.url}/ipfs/{CID}?key={stored['key']}",
                                timeout=TIMEOUT).json()
            assert seen["secret"] == {"API_KEY": secret}
        finally:
            gateway.stop()
        sealed = (tmp_path / "vault.sealed").read_bytes()
        assert secret.encode() not in sealed and stored["token"].encode() not in sealed
        assert not list(tmp_path.glob(".unused-plain-vault*"))
        same_app = sealing_key(str(socket_dir / "app.sock"))
        replica = SealedVault(tmp_path / "vault.sealed", same_app)
        assert replica.read(stored["key"], stored["token"]) == {"API_KEY": secret}
        assert replica.secret_for("bafkreiothercid", stored["key"]) is None
        with pytest.raises(VaultFileInvalid, match="another app"):
            SealedVault(tmp_path / "vault.sealed", sealing_key(str(socket_dir / "other.sock")))
    altered = bytearray(sealed)
    altered[-1] ^= 1
    (tmp_path / "vault.sealed").write_bytes(bytes(altered))
    with pytest.raises(VaultFileInvalid):
        SealedVault(tmp_path / "vault.sealed", same_app)
    (tmp_path / "vault.sealed").write_text(json.dumps({"version": 1, "entries": []}))
    with pytest.raises(VaultFileInvalid, match="not a sealed vault"):
        SealedVault(tmp_path / "vault.sealed", same_app)


DERIVE = b"""
async function main(raw) {
  const secret = Wapo.deriveSecret("agent-contract-kit/test/v1");
  const hex = Array.from(secret, (b) => b.toString(16).padStart(2, "0")).join("");
  return JSON.stringify({ status: 200, body: hex, headers: {} });
}
main.apply(null, globalThis.scriptArgs).then((out) => { globalThis.scriptOutput = out; });
"""


def test_derived_secrets_come_from_the_app_key(socket_dir, tmp_path) -> None:
    cid = oracle_cid(DERIVE, 1)

    def handle(request: BaseHTTPRequestHandler) -> None:
        reply(request, 200, DERIVE) if request.path == f"/ipfs/{cid}" else \
            reply(request, 404, b"")

    seen = {}
    with guest_agent(socket_dir, "app"), guest_agent(socket_dir, "other"), \
            standin_http(handle) as url:
        replica = StandInServer(GuestAgentStandIn(app_compose(IMAGE, "app"),
                                                  instance_id="22" * 20),
                                socket_path=socket_dir / "replica.sock", port=None)
        with replica:
            for name in ("app", "replica", "other"):
                gateway = start(socket_dir, tmp_path / name, [url], name=name)
                try:
                    answer = requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT)
                    assert answer.status_code == 200
                    seen[name] = answer.text
                finally:
                    gateway.stop()
    assert len(bytes.fromhex(seen["app"])) == 64
    assert seen["app"] == seen["replica"] != seen["other"]
