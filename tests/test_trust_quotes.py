"""Quotes and attestations (kit.trust): the real SGX sample, dev quotes, the /attestation checks.

Test data: shared/vectors/dcap-qvl/ (copied unchanged from Phala-Network/dcap-qvl, folder
`sample/`, commit 9bffe30b4da53acc05f2e3a36fafc0f6418973b8, MIT; see SOURCE.md there): a real
SGX DCAP quote (v3) with its collateral, which verifies at tcb_info's issueDate + 60 s with
status ConfigurationAndSWHardeningNeeded (recorded in SOURCE.md). Offsets in the quote come from
Intel's SGX quote v3 layout, computed here by hand: a 48-byte header, then the 384-byte report
body with MRENCLAVE at body offset 64 and report_data at body offset 320.

Dev quotes are built here by hand from the shared layout (magic, report_data, Ed25519 key,
Ed25519 signature over magic + report_data) with pycryptodome, and report_data with
pycryptodome's Keccak, independently of kit.trust.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import threading
import time
from datetime import datetime
from typing import Any, Iterator

import pytest
from Crypto.Hash import keccak
from Crypto.PublicKey import ECC
from Crypto.Signature import eddsa

from test_trust_answer import SIGNER

from fixtures.vectors import DCAP_QVL
from kit.trust import sgx
from kit.trust.attestation import verify_attestation
from kit.trust.errors import NotVerified
from kit.trust.quotes import AttestationPolicy

VECTORS = DCAP_QVL
HEADER_BYTES, MR_ENCLAVE_AT, REPORT_DATA_AT = 48, 64, 320
CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
ENCRYPTION_KEY = "02" + "ab" * 32
NONCE = "0f" * 32
CODE = b"// the contract's code bytes\n"
DEV_MAGIC = b"KIT-DEV-QUOTE-v1\x00"


@pytest.fixture(scope="module")
def sample() -> dict[str, Any]:
    quote = (VECTORS / "sgx_quote").read_bytes()
    collateral_text = (VECTORS / "sgx_quote_collateral.json").read_text()
    issued = json.loads(json.loads(collateral_text)["tcb_info"])["issueDate"]
    when = int(datetime.fromisoformat(issued.replace("Z", "+00:00")).timestamp()) + 60
    body = quote[HEADER_BYTES:HEADER_BYTES + 384]
    return {"quote": quote, "collateral": sgx.load_collateral(collateral_text), "now": when,
            "report_data": body[REPORT_DATA_AT:REPORT_DATA_AT + 64],
            "mr_enclave": body[MR_ENCLAVE_AT:MR_ENCLAVE_AT + 32]}


def sample_policy(sample: dict[str, Any], **overrides: Any) -> AttestationPolicy:
    values: dict[str, Any] = {"collateral": sample["collateral"], "now": sample["now"],
                              "mr_enclaves": (sample["mr_enclave"],)}
    return AttestationPolicy(**{**values, **overrides})


def test_the_sample_is_an_sgx_v3_quote(sample: dict[str, Any]) -> None:
    version, key_type = struct.unpack_from("<HH", sample["quote"], 0)
    assert (version, key_type) == (3, 2)  # v3, ECDSA-256 with P-256
    parsed = sgx.parse_sgx_quote(sample["quote"])
    assert parsed.report.report_data == sample["report_data"]
    assert parsed.report.mr_enclave == sample["mr_enclave"]


def test_the_sample_verifies_at_its_collateral_time(sample: dict[str, Any]) -> None:
    verdict = sgx.verify_sgx_quote(sample["quote"], sample["report_data"], sample_policy(sample))
    assert verdict.status == "ConfigurationAndSWHardeningNeeded"  # as SOURCE.md records
    assert verdict.production and verdict.details["mr_enclave"] == sample["mr_enclave"].hex()


@pytest.mark.parametrize("change, field", [
    ({}, "report_data"),  # another binding expected
    ({"mr_enclaves": ()}, "mr_enclave"),
    ({"mr_enclaves": (bytes(32),)}, "mr_enclave"),
    ({"accepted_statuses": ("UpToDate",)}, "quote.status"),
    ({"now": 4_000_000_000}, "quote"),  # long after the collateral expired
])
def test_sample_refusals_name_the_step(sample: dict[str, Any], change: dict[str, Any],
                                       field: str) -> None:
    expected = sample["report_data"] if change else bytes(64)
    with pytest.raises(NotVerified) as caught:
        sgx.verify_sgx_quote(sample["quote"], expected, sample_policy(sample, **change))
    assert caught.value.field == field, str(caught.value)


def test_a_tampered_quote_or_a_tdx_quote_is_refused(sample: dict[str, Any]) -> None:
    tampered = bytearray(sample["quote"])
    tampered[HEADER_BYTES + REPORT_DATA_AT] ^= 1
    with pytest.raises(NotVerified) as caught:
        sgx.verify_sgx_quote(bytes(tampered), bytes(tampered[368:432]), sample_policy(sample))
    assert caught.value.field == "quote"
    tdx = (VECTORS / "tdx_quote").read_bytes()
    with pytest.raises(NotVerified) as caught:
        sgx.verify_sgx_quote(tdx, bytes(64), sample_policy(sample))
    assert caught.value.field == "quote_type"


# --- attestation documents and dev quotes ----------------------------------------------------


def message(nonce: str = NONCE, cid: str = CID) -> str:
    return (f"agent-contract-kit attest v1\ncid: {cid}\nsigner: {SIGNER}\n"
            f"encryption_key: {ENCRYPTION_KEY}\nnonce: {nonce}")


def binding(app_address: bytes, text: str) -> bytes:
    digest = keccak.new(digest_bits=256, data=b"\x65" + app_address + text.encode()).digest()
    return digest + bytes(32)


def dev_document(*, seed: bytes = b"\x07" * 32, app_address: bytes | None = None,
                 nonce: str = NONCE, cid: str = CID, **overrides: Any) -> dict[str, Any]:
    key = ECC.construct(curve="ed25519", seed=seed)
    public = key.public_key().export_key(format="raw")
    report_data = binding(app_address or hashlib.sha256(CODE).digest(), message(nonce, cid))
    signature = eddsa.new(key, "rfc8032").sign(DEV_MAGIC + report_data)
    document = {"cid": cid, "signer": SIGNER, "encryption_key": ENCRYPTION_KEY, "nonce": nonce,
                "message": message(nonce, cid), "worker_public_key": public.hex(),
                "worker_signature": "ab" * 64, "quote_type": "dev",
                "quote": (DEV_MAGIC + report_data + public + signature).hex()}
    return {**document, **overrides}


DEV_POLICY = AttestationPolicy(allow_dev=True, local_app_address=hashlib.sha256(CODE).digest())


def refused(document: dict[str, Any], field: str, policy: AttestationPolicy = DEV_POLICY,
            nonce: str = NONCE) -> None:
    with pytest.raises(NotVerified) as caught:
        verify_attestation(document, cid=CID, nonce=nonce, policy=policy)
    assert caught.value.field == field, str(caught.value)


def test_a_dev_quote_passes_only_when_dev_quotes_are_allowed() -> None:
    attested = verify_attestation(dev_document(), cid=CID, nonce=NONCE, policy=DEV_POLICY)
    assert attested.signer == SIGNER and not attested.quote.production
    refused(dev_document(), "quote_type", AttestationPolicy())  # production verification
    refused(dev_document(), "quote_type", AttestationPolicy(app_address=bytes(32)))
    refused(dev_document(quote_type="sgx"), "quote", AttestationPolicy(app_address=bytes(32)))


def test_attestation_tampering_is_refused() -> None:
    refused(dev_document(), "nonce", nonce="1f" * 32)  # a replayed attestation
    refused(dev_document(cid="QmOther"), "cid")
    refused(dev_document(signer="0x" + "12" * 20), "message")  # the signer swapped
    refused(dev_document(app_address=b"\x01" * 32), "report_data")  # another contract's code
    refused(dev_document(worker_public_key="00" * 32), "worker_public_key")
    document = dev_document()
    quote = bytearray.fromhex(document["quote"])
    quote[-1] ^= 1
    refused(dict(document, quote=quote.hex()), "quote.signature")
    refused(dict(document, quote=None), "quote")
    refused(dict(document, quote_type="sev"), "quote_type")
    refused(dict(document, encryption_key="04" + "ab" * 64), "encryption_key")
    refused(dev_document(), "app_address", AttestationPolicy(allow_dev=True))


def test_an_sgx_attestation_needs_an_established_app_address(sample: dict[str, Any]) -> None:
    document = dev_document(quote_type="sgx", quote=sample["quote"].hex())
    refused(document, "app_address", sample_policy(sample))
    # with an address, the real quote is checked and its report_data does not bind this message
    refused(document, "report_data", sample_policy(sample, app_address=bytes(32)))


# --- collateral: timeout and cache ------------------------------------------------------------


@pytest.fixture
def silent_pccs() -> Iterator[str]:
    """A TCP server that accepts and never answers: a hung PCCS."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[socket.socket] = []

    def accept() -> None:
        try:
            while True:
                held.append(server.accept()[0])
        except OSError:
            return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection in held:
        connection.close()


def test_a_hung_pccs_times_out(sample: dict[str, Any], silent_pccs: str) -> None:
    sgx.clear_collateral_cache()
    policy = AttestationPolicy(pccs_url=silent_pccs, collateral_timeout=1.5, now=sample["now"],
                               mr_enclaves=(sample["mr_enclave"],))
    started = time.monotonic()
    with pytest.raises(NotVerified) as caught:
        sgx.verify_sgx_quote(sample["quote"], sample["report_data"], policy)
    assert caught.value.field == "collateral" and "1.5" in caught.value.problem
    assert time.monotonic() - started < 10


def test_fetched_collateral_is_cached_until_it_expires(sample: dict[str, Any],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    sgx.clear_collateral_cache()
    text = (VECTORS / "sgx_quote_collateral.json").read_text()
    fetches: list[str] = []
    monkeypatch.setattr(sgx, "_fetch_in_child",
                        lambda url, quote, timeout: fetches.append(url) or text)
    clock = [float(sample["now"])]
    monkeypatch.setattr(sgx.time, "time", lambda: clock[0])
    policy = AttestationPolicy(pccs_url="http://127.0.0.1:9", now=sample["now"],
                               mr_enclaves=(sample["mr_enclave"],))
    for _ in range(3):
        sgx.verify_sgx_quote(sample["quote"], sample["report_data"], policy)
    assert len(fetches) == 1
    clock[0] += sgx.COLLATERAL_MAX_AGE + 1  # past the cache's age limit: fetched again
    sgx.verify_sgx_quote(sample["quote"], sample["report_data"], policy)
    assert len(fetches) == 2
    sgx.clear_collateral_cache()


def test_the_local_runtime_dev_quote_verifies_only_when_allowed() -> None:
    """Agreement with kit.local.runtime (the contract side's Wapo.sgxQuote): same layout and binding."""
    from kit.local.runtime import dev_quote, worker_public_key

    code = CODE.decode()
    worker_key = bytes(range(32))
    document = dev_document(
        quote=dev_quote(worker_key, code, message().encode()).hex(),
        worker_public_key=worker_public_key(worker_key).hex())
    attested = verify_attestation(document, cid=CID, nonce=NONCE, policy=DEV_POLICY)
    assert attested.quote.quote_type == "dev" and attested.signer == SIGNER
    refused(document, "quote_type", AttestationPolicy(app_address=bytes(32)))


class StandInPccs:
    """STAND-IN PCCS on 127.0.0.1 speaking the PCCS v4 protocol that dcap-qvl's get_collateral
    uses (Phala-Network/dcap-qvl src/collateral.rs): it serves the sample's collateral parts."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import quote

        parts = json.loads((VECTORS / "sgx_quote_collateral.json").read_text())
        chain = {name: quote(parts[name], safe="") for name in
                 ("pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain")}
        routes = {
            "/sgx/certification/v4/pckcrl": (
                bytes.fromhex(parts["pck_crl"]),
                {"SGX-PCK-CRL-Issuer-Chain": chain["pck_crl_issuer_chain"]}),
            "/sgx/certification/v4/rootcacrl": (parts["root_ca_crl"].encode(), {}),
            "/sgx/certification/v4/tcb": (
                ('{"tcbInfo":' + parts["tcb_info"] + ',"signature":"'
                 + parts["tcb_info_signature"] + '"}').encode(),
                {"TCB-Info-Issuer-Chain": chain["tcb_info_issuer_chain"]}),
            "/sgx/certification/v4/qe/identity": (
                ('{"enclaveIdentity":' + parts["qe_identity"] + ',"signature":"'
                 + parts["qe_identity_signature"] + '"}').encode(),
                {"SGX-Enclave-Identity-Issuer-Chain": chain["qe_identity_issuer_chain"]}),
        }
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                outer.paths.append(self.path)
                body, headers = routes.get(self.path.split("?")[0], (b"", {}))
                self.send_response(200 if body else 404)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_collateral_fetched_through_dcap_qvl_verifies_and_is_cached(
        sample: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    sgx.clear_collateral_cache()
    pccs = StandInPccs()
    try:
        monkeypatch.setattr(sgx.time, "time", lambda: float(sample["now"]))
        policy = AttestationPolicy(pccs_url=pccs.url, collateral_timeout=30, now=sample["now"],
                                   mr_enclaves=(sample["mr_enclave"],))
        verdict = sgx.verify_sgx_quote(sample["quote"], sample["report_data"], policy)
        assert verdict.status == "ConfigurationAndSWHardeningNeeded"
        fetched = len(pccs.paths)
        assert any(path.startswith("/sgx/certification/v4/tcb?fmspc=") for path in pccs.paths)
        sgx.verify_sgx_quote(sample["quote"], sample["report_data"], policy)
        assert len(pccs.paths) == fetched  # cached: no second fetch
    finally:
        pccs.close()
        sgx.clear_collateral_cache()
