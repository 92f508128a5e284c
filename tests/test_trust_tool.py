"""The generated tool verifies before it answers, with the same verdicts as kit.trust.

The tool is generated for a project whose deployment record pins SIGNER, then loaded exactly as
the mech loads it. A STAND-IN gateway on 127.0.0.1 answers with proofs signed by eth-account
(the oracle); the vectors are the tamperings of tests/test_trust_answer.py.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from eth_account import Account
from fixtures.ipfs_node import reply, run_cli, standin_http
from fixtures.mech import KeyChain, load_like_mech
from test_trust_answer import ANSWER, KEY, OTHER_KEY, PROMPT, SIGNER, make_proof
from test_trust_quotes import dev_document

from kit.cid import bytes_cid
from kit.mech.package import generate_tool
from kit.contract.project import build_project, init_project
from kit.trust.answer import parse_result, verify_answer
from kit.trust.errors import NotVerified

MODEL = "gpt-4o-mini"
FAST = {"BACKOFF_BASE": 0.01, "BACKOFF_MAX": 0.05, "CONNECT_TIMEOUT": 2.0, "READ_TIMEOUT": 5.0}


def make_tool(tmp_path: Path, verify: str = "signature", result: str = "json",
              signers: tuple[str, ...] = (SIGNER,)) -> Path:
    project = tmp_path / f"project-{verify}-{result}-{len(signers)}"
    init_project(project, name="demo")
    config = (project / "agent.toml").read_text()
    config = config.replace("[tool]", f'[tool]\nresult = "{result}"', 1) if "[tool]" in config \
        else config + f'\n[tool]\nresult = "{result}"\n'
    (project / "agent.toml").write_text(config + f'\n[verify]\nanswers = "{verify}"\n')
    build = build_project(project)
    record = {"cid": bytes_cid(build.path.read_bytes(), version=build.cid_version),
              "cid_version": build.cid_version, "gateway_url": "http://127.0.0.1:9",
              "verified_via": "x", "artifact": "dist/agent.js", "size": build.size,
              "config_sha256": "0" * 64, "template_version": build.template_version,
              "kit_version": "0", "backend": "node", "deployed_at": "2026-01-01T00:00:00Z",
              "signers": list(signers)}
    (project / "deployments").mkdir()
    (project / "deployments" / "latest.json").write_text(json.dumps(record))
    (project / "deployments" / "history.json").write_text(json.dumps([record]))
    return generate_tool(project).package_dir


@pytest.fixture(scope="module")
def tool(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    package = make_tool(tmp_path_factory.mktemp("tool"))
    run, namespace = load_like_mech(package)
    return {"package": package, "run": run, "ns": namespace, "cid": namespace["CID"]}


def vectors(cid: str) -> list[tuple[str, dict[str, Any], str, str | None]]:
    """(name, result, prompt, expected refused field or None) for one CID."""
    proof = make_proof(cid=cid, model=MODEL)
    other_cid = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"

    def result(p: dict[str, Any], answer: str = ANSWER, model: str = MODEL) -> dict[str, Any]:
        return {"message": answer, "model": model, "proof": p}

    flipped = bytearray.fromhex(proof["signature"][2:])
    flipped[5] ^= 1
    return [
        ("honest", result(proof), PROMPT, None),
        ("answer text", result(proof, answer=ANSWER + "!"), PROMPT, "answer_sha256"),
        ("prompt", result(proof), PROMPT + " again", "prompt_sha256"),
        ("model", result(proof, model="gpt-4"), PROMPT, "model"),
        ("model in proof", result(dict(proof, model="gpt-4"), model="gpt-4"), PROMPT,
         "signature"),
        ("cid in proof", result(dict(proof, cid=other_cid)), PROMPT, "cid"),
        ("signer", result(dict(proof, signer=Account.from_key(OTHER_KEY).address)), PROMPT,
         "signature"),
        ("unpinned key", result(make_proof(key=OTHER_KEY, cid=cid, model=MODEL)), PROMPT,
         "signer"),
        ("signature", result(dict(proof, signature="0x" + flipped.hex())), PROMPT, "signature"),
        ("proof from another CID", result(make_proof(cid=other_cid, model=MODEL)), PROMPT, "cid"),
        ("replayed for another prompt", result(make_proof(prompt="2 + 2?", cid=cid, model=MODEL)),
         PROMPT, "prompt_sha256"),
        ("no proof", {"message": ANSWER, "model": MODEL}, PROMPT, "proof"),
    ]


def kit_verdict(result: dict[str, Any], prompt: str, cid: str) -> str | None:
    delivered = parse_result(json.dumps({**result, "proof": result.get("proof")}))
    try:
        verify_answer(delivered, prompt=prompt, signers=[SIGNER], cid=cid)
    except NotVerified as exc:
        return exc.field
    return None


def tool_verdict(namespace: dict[str, Any], result: dict[str, Any], prompt: str) -> str | None:
    try:
        namespace["_check"](result, prompt, namespace["PINNED_SIGNERS"])
    except namespace["ProofError"] as exc:
        return str(exc.field)
    return None


def test_the_tool_and_the_kit_give_the_same_verdicts(tool: dict[str, Any]) -> None:
    assert tool["ns"]["PINNED_SIGNERS"] == [SIGNER]
    for name, result, prompt, expected in vectors(tool["cid"]):
        assert kit_verdict(result, prompt, tool["cid"]) == expected, name
        assert tool_verdict(tool["ns"], result, prompt) == expected, name


def test_the_tool_embeds_the_kits_verifier_verbatim(tool: dict[str, Any]) -> None:
    from kit.trust.core import attestation_verifier_source, verifier_source

    source = (tool["package"] / f"{tool['package'].name}.py").read_text()
    assert verifier_source() in source and attestation_verifier_source() in source


# --- the tool end to end against a stand-in gateway -----------------------------------------


class Gateway:
    """STAND-IN gateway: POST answers with `answer`; GET .../attestation with a dev document."""

    def __init__(self, answer: Callable[[str], dict[str, Any]]) -> None:
        self.answer, self.nonces, self.posts = answer, [], 0

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        url = urlsplit(request.path)
        if url.path.endswith("/attestation"):
            nonce = parse_qs(url.query)["nonce"][0]
            self.nonces.append(nonce)
            body = dev_document(nonce=nonce, cid=url.path.split("/")[2])
        else:
            length = int(request.headers.get("Content-Length") or 0)
            prompt = json.loads(request.rfile.read(length))["prompt"]
            self.posts += 1
            body = {**self.answer(prompt),
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        reply(request, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})


class _FirstReplica:
    """Stands in for the tool's `random` module: every call starts at the first replica."""

    @staticmethod
    def randrange(n: int) -> int:
        return 0


def _nobody_listening() -> str:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def served() -> Iterator[Callable[..., tuple[Any, Gateway]]]:
    def call(package: Path, answer: Callable[[str], dict[str, Any]],
             replicas_before: tuple[str, ...] = ()) -> tuple[Any, Gateway]:
        gateway = Gateway(answer)
        with standin_http(gateway.handle) as url:
            run, namespace = load_like_mech(package)
            namespace.update(FAST, GATEWAY_URLS=[*replicas_before, url], random=_FirstReplica())
            keys = KeyChain({"tee_vault_key": ["vault-key"],
                             "tee_caller_token": ["caller-token-xyz"]})
            outcome = run(tool=namespace["PREFIX"] + MODEL, prompt=PROMPT, model=MODEL,
                          api_keys=keys, counter_callback=None)
        return outcome[0], gateway

    yield call


def signed(cid: str, key: str = KEY, text: str = ANSWER) -> Callable[[str], dict[str, Any]]:
    return lambda prompt: {"message": text, "model": MODEL,
                           "proof": make_proof(key=key, cid=cid, prompt=prompt, answer=text)}


def test_a_verified_answer_is_returned_with_its_proof(
        tool: dict[str, Any], served: Any, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    result, _ = served(tool["package"], signed(tool["cid"]))
    delivered = json.loads(result)
    assert set(delivered) == {"answer", "model", "proof"} and delivered["answer"] == ANSWER
    path = tmp_path / "delivered.json"
    path.write_text(result)
    code, out, err = run_cli(capsys, "verify-answer", str(path), "--prompt", PROMPT,
                             "--cid", tool["cid"], "--signer", SIGNER)
    assert code == 0 and f"signer {SIGNER}" in out, err


def test_a_tampered_answer_is_never_returned(tool: dict[str, Any], served: Any) -> None:
    def tampered(prompt: str) -> dict[str, Any]:
        answer = signed(tool["cid"])(prompt)
        return {**answer, "message": "Yes, heavy rain."}

    result, _ = served(tool["package"], tampered)
    assert result.startswith("Error: the answer did not verify (answer_sha256")
    assert "heavy rain" not in result
    result, _ = served(tool["package"], signed(tool["cid"], key=OTHER_KEY))
    assert result.startswith("Error: ") and "is not a pinned signer" in result


def test_text_results_and_verification_off(tmp_path: Path, served: Any) -> None:
    text_tool = make_tool(tmp_path, result="text")
    cid = load_like_mech(text_tool)[1]["CID"]
    result, _ = served(text_tool, signed(cid))
    assert result == ANSWER
    off = make_tool(tmp_path, verify="off", result="text")
    result, _ = served(off, lambda prompt: {"message": "unsigned", "model": MODEL})
    assert result == "unsigned"  # documented as unsafe


def test_attested_mode_attests_unknown_signers_with_a_fresh_nonce(tmp_path: Path,
                                                                 served: Any) -> None:
    package = make_tool(tmp_path, verify="attested", signers=())
    cid = load_like_mech(package)[1]["CID"]
    assert "dcap-qvl" in (package / "component.yaml").read_text()
    # the stand-in attests SIGNER with a dev quote: refused, the answer never returned
    result, gateway = served(package, signed(cid))
    assert result.startswith("Error: the answer did not verify (quote_type: dev quotes")
    assert ANSWER not in result
    assert len(gateway.nonces) == 1 and re.fullmatch(r"[0-9a-f]{64}", gateway.nonces[0])
    # an answer signed by another key than the attested one
    result, again = served(package, signed(cid, key=OTHER_KEY))
    assert "signer: the attested signer is not the answer's" in result and ANSWER not in result
    assert len(again.nonces) == 1 and again.nonces != gateway.nonces  # fresh each time


def test_attested_mode_asks_the_replica_that_answered(tmp_path: Path, served: Any) -> None:
    """With replicas (tool.gateways) the first one down, the answer comes from the next, and so
    does the attestation of its unknown signer (a dev quote here: refused, after the fetch)."""
    package = make_tool(tmp_path, verify="attested", signers=())
    cid = load_like_mech(package)[1]["CID"]
    result, gateway = served(package, signed(cid), replicas_before=(_nobody_listening(),))
    assert gateway.posts == 1 and len(gateway.nonces) == 1
    assert result.startswith("Error: the answer did not verify (quote_type: dev quotes")
    assert ANSWER not in result
