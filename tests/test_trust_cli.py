"""`kit verify-answer` and `kit attest`: exit codes, messages naming the field, the record.

Proofs are signed here with eth-account (the oracle); `/attestation` is served by a stand-in
HTTP server on 127.0.0.1 (named as such) that answers with a dev quote built by hand from the
shared layout, for whatever nonce it is sent — or replays a fixed one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fixtures.ipfs_node import run_cli
from test_trust_answer import ANSWER, CID, KEY, MODEL, PROMPT, SIGNER, make_proof
from test_trust_quotes import dev_document

from kit.cid import bytes_cid

CODE = b"// the contract's code bytes\n"  # the bytes dev_document's default app address hashes
CODE_CID = bytes_cid(CODE, version=0)  # setup only: what the stand-in deployment records


def write_result(tmp_path: Path, proof: dict[str, Any], answer: str = ANSWER,
                 name: str = "result.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"answer": answer, "model": MODEL, "proof": proof}))
    return str(path)


def test_verify_answer_exit_codes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = write_result(tmp_path, make_proof())
    code, out, err = run_cli(capsys, "verify-answer", good, "--prompt", PROMPT, "--cid", CID,
                             "--signer", SIGNER)
    assert code == 0 and f"proof: verified (signer {SIGNER})" in out, err

    code, out, err = run_cli(capsys, "verify-answer", good, "--prompt", PROMPT + "?",
                             "--signer", SIGNER)
    assert code == 1 and "prompt_sha256" in err and "Traceback" not in err

    bad = write_result(tmp_path, make_proof(), answer=ANSWER + " (edited)", name="bad.json")
    code, out, err = run_cli(capsys, "verify-answer", bad, "--prompt", PROMPT, "--signer",
                             SIGNER, "--json")
    assert code == 1 and json.loads(out) == {
        "verified": False, "field": "answer_sha256",
        "problem": "does not match sha256 of the answer"}

    code, out, err = run_cli(capsys, "verify-answer", good, "--prompt", PROMPT)
    assert code == 1 and "signer" in err  # nothing pinned: never a pass

    for args in (["missing.json", "--prompt", "p"], [good], [good, "--prompt", "p",
                                                             "--prompt-file", good],
                 [good, "--prompt", "p", "--signer", "0x12"]):
        code, out, err = run_cli(capsys, "verify-answer", *args, "-C", str(tmp_path))
        assert code == 2 and err.startswith("error:"), (args, err)
    (tmp_path / "junk.json").write_text("{not json")
    code, _, err = run_cli(capsys, "verify-answer", str(tmp_path / "junk.json"), "--prompt", "p")
    assert code == 2 and "not JSON" in err


def test_verify_answer_reads_stdin_and_a_mech_delivery(tmp_path: Path) -> None:
    delivery = json.dumps({"requestId": "7", "prompt": PROMPT, "tool": "x", "result": json.dumps(
        {"answer": ANSWER, "model": MODEL, "proof": make_proof()})})
    done = subprocess.run([sys.executable, "-m", "kit", "verify-answer", "-", "--signer", SIGNER,
                           "--json"], input=delivery, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["signer"] == SIGNER


# --- kit attest ------------------------------------------------------------------------------


def make_project(tmp_path: Path, gateway_url: str, code: bytes = CODE) -> Path:
    project = tmp_path / "project"
    (project / "dist").mkdir(parents=True)
    (project / "dist" / "agent.js").write_bytes(code)
    record = {"cid": CODE_CID, "cid_version": 0, "gateway_url": gateway_url, "verified_via": "x",
              "artifact": "dist/agent.js", "size": len(CODE), "config_sha256": "0" * 64,
              "template_version": "1", "kit_version": "0", "backend": "node",
              "deployed_at": "2026-01-01T00:00:00Z"}
    (project / "deployments").mkdir()
    (project / "deployments" / "latest.json").write_text(json.dumps(record))
    (project / "deployments" / "history.json").write_text(json.dumps([record]))
    return project


class StandInAttestation(BaseHTTPRequestHandler):
    """Stand-in for a contract's GET /ipfs/<cid>/attestation (dev quote)."""

    replay_nonce: str | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        nonce = self.replay_nonce or parse_qs(url.query).get("nonce", [""])[0]
        if url.path != f"/ipfs/{CODE_CID}/attestation":
            body, status = b'{"error": {"code": "not_found", "message": "no"}}', 404
        else:
            body, status = json.dumps(dev_document(nonce=nonce, cid=CODE_CID)).encode(), 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInAttestation)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    StandInAttestation.replay_nonce = None


@pytest.fixture
def project(tmp_path: Path, stand_in: ThreadingHTTPServer) -> Path:
    return make_project(tmp_path, f"http://127.0.0.1:{stand_in.server_address[1]}")


def test_attest_refuses_dev_quotes_by_default(capsys: pytest.CaptureFixture[str],
                                              project: Path) -> None:
    latest = project / "deployments" / "latest.json"
    before = latest.read_bytes()
    code, _, err = run_cli(capsys, "attest", "-C", str(project))
    assert code == 1 and "quote_type" in err and "never passes production" in err
    assert latest.read_bytes() == before
    # built code that no longer hashes to the deployed CID: no local app address, refused
    (project / "dist" / "agent.js").write_bytes(CODE + b"// edited\n")
    code, _, err = run_cli(capsys, "attest", "-C", str(project), "--allow-dev-quote")
    assert code == 1 and "app_address" in err and latest.read_bytes() == before


def test_attest_with_dev_quotes_allowed(capsys: pytest.CaptureFixture[str],
                                        project: Path) -> None:
    code, out, err = run_cli(capsys, "attest", "-C", str(project), "--allow-dev-quote", "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["signer"] == SIGNER and view["quote_type"] == "dev" and view["recorded"]
    assert view["production"] is False
    latest = json.loads((project / "deployments" / "latest.json").read_text())
    history = json.loads((project / "deployments" / "history.json").read_text())
    assert latest["signers"] == [SIGNER] and history == [latest]
    code, out, _ = run_cli(capsys, "attest", "-C", str(project), "--allow-dev-quote")
    assert code == 0 and "already recorded" in out and "NOT hardware" in out

    # the recorded signer is what verify-answer pins by default
    result = project / "result.json"
    result.write_text(json.dumps({"answer": ANSWER, "model": MODEL,
                                  "proof": make_proof(key=KEY, cid=CODE_CID)}))
    code, out, err = run_cli(capsys, "verify-answer", str(result), "--prompt", PROMPT,
                             "-C", str(project))
    assert code == 0 and SIGNER in out, err


def test_attest_refuses_a_replayed_nonce_and_an_unreachable_gateway(
        capsys: pytest.CaptureFixture[str], project: Path) -> None:
    latest = project / "deployments" / "latest.json"
    before = latest.read_bytes()
    StandInAttestation.replay_nonce = "0f" * 32
    code, _, err = run_cli(capsys, "attest", "-C", str(project), "--allow-dev-quote")
    assert code == 1 and "nonce" in err and latest.read_bytes() == before
    code, _, err = run_cli(capsys, "attest", "-C", str(project), "--allow-dev-quote",
                           "--gateway", "http://127.0.0.1:9", "--timeout", "2")
    assert code == 1 and "cannot reach" in err and latest.read_bytes() == before
    code, _, err = run_cli(capsys, "attest", "-C", str(project), "--gateway", "ftp://x")
    assert code == 2
    code, _, err = run_cli(capsys, "attest", "-C", str(project), "--app-address", "zz")
    assert code == 2 and "--app-address" in err


# --- kit deploy records the local runtime's signer -------------------------------------------


def test_deploy_records_the_signer_the_contract_signs_with(
        project_factory: Any, ipfs_node: Any, local_gateway_factory: Any, mock_llm: Any) -> None:
    """The real chain: contract in the local runtime behind the local gateway (dev quote from a
    loopback gateway), its answer's proof recovered by eth-account to the recorded signer."""
    import requests
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from fixtures.servers import MOCK_LLM_KEY

    from kit.ipfs.deploy import deploy

    gateway = local_gateway_factory(ipfs_api=ipfs_node.api)
    project = project_factory(provider="openai-compatible", base_url=mock_llm.base_url,
                              gateway_url=gateway.url, models=("gpt-4o-mini",))
    result = deploy(project, ipfs_api=ipfs_node.api)
    assert len(result.record["signers"]) == 1, result.warnings
    signer = result.record["signers"][0]
    vault = requests.post(f"{gateway.url}/vaults", timeout=10, json={
        "cid": result.cid, "data": {"apiKey": MOCK_LLM_KEY}}).json()
    answer = requests.post(f"{gateway.url}/ipfs/{result.cid}", params={"key": vault["key"]},
                           json={"prompt": PROMPT, "model": "gpt-4o-mini"}, timeout=30).json()
    proof = answer["proof"]
    text = (f"agent-contract-kit answer v1\ncid: {result.cid}\nmodel: {proof['model']}\n"
            f"system_sha256: {proof['system_sha256']}\n"
            f"prompt_sha256: {hashlib.sha256(PROMPT.encode()).hexdigest()}\n"
            f"answer_sha256: {hashlib.sha256(answer['message'].encode()).hexdigest()}\n"
            "provider_proof_sha256: none")
    recovered = Account.recover_message(encode_defunct(text=text), signature=proof["signature"])
    assert recovered == signer
