"""Issue 12, the contract's side: a `confidential` provider's signatures checked in the contract
(real QuickJS, the vendored noble code), against the confidential stand-in (`kit mock-llm
--confidential`), then the whole chain: the real local gateway serving the deployed CID from the
IPFS node, the contract in the local runtime, the generated tool loaded as a mech loads it.

Oracles, independent of the contract's code: eth-account (EIP-191 recovery, libsecp256k1),
hashlib, the bytes observed on the wire (the stand-in answers the same body with the same
bytes), and issue 11's answer text written out here.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from fixtures.mech import KeyChain, load_like_mech
from fixtures.servers import MOCK_LLM_KEY, TEST_WORKER_KEY
from kit.local.runtime import Invocation, invoke, make_request

STAND_IN_SEED = b"kit mock-llm confidential stand-in signing key v1 (public, never secret)"
CID = "QmConfidentialContract"
PROMPT = "What is the boiling point of water at sea level?"
SYSTEM = "Answer in one line."
FAULTS = ["wrong-signature", "text-mismatch", "unknown-signer", "not-found"]


def recover(text: str, signature: str) -> str:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return Account.recover_message(encode_defunct(text=text), signature=signature)


def stand_in_address() -> str:
    from eth_account import Account

    return Account.from_key(hashlib.sha256(STAND_IN_SEED).digest()).address


def stand_in_answer(prompt: str) -> str:
    return "stand-in answer: " + hashlib.sha256(prompt.encode()).hexdigest()[:16]


def canonical_sha256(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def answer_text(proof: dict[str, Any]) -> str:
    return (f"agent-contract-kit answer v1\ncid: {proof['cid']}\nmodel: {proof['model']}\n"
            f"system_sha256: {proof['system_sha256']}\nprompt_sha256: {proof['prompt_sha256']}\n"
            f"answer_sha256: {proof['answer_sha256']}\n"
            f"provider_proof_sha256: {proof['provider_proof_sha256']}")


@pytest.fixture
def confidential() -> Iterator[Any]:
    from kit.local.mock_llm import MockLLM

    server = MockLLM(api_key=MOCK_LLM_KEY, confidential=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def make_project(project_factory: Any, base_url: str, pinned: list[str] | None = None,
                 **overrides: Any) -> Path:
    from kit.contract.project import build_project
    from kit.trust.provider import add_signing_addresses

    overrides.setdefault("key_secret", "llmKey")
    project = project_factory(provider="confidential", base_url=base_url, models=["model-a"],
                              system_prompt=SYSTEM, **overrides)
    addresses = [stand_in_address()] if pinned is None else pinned
    if addresses:
        add_signing_addresses(project / "agent.toml", addresses)
        build_project(project)
    return project


def code_of(project: Path) -> str:
    return (project / "dist" / "agent.js").read_text(encoding="utf-8")


@pytest.fixture
def contract(project_factory: Any, confidential: Any) -> str:
    return code_of(make_project(project_factory, confidential.base_url))


def ask(code: str, prompt: str = PROMPT, key: str = MOCK_LLM_KEY) -> Invocation:
    request = make_request("POST", f"/ipfs/{CID}", [], body=json.dumps({"prompt": prompt}),
                           secret={"llmKey": key})
    return invoke(code, request, worker_key=TEST_WORKER_KEY)


def signature_requests(server: Any) -> list[Any]:
    return [r for r in server.requests if r.path.startswith("/v1/signature/")]


def assert_unverified(answer: Invocation, *needles: str) -> str:
    assert answer.status == 502, answer.body
    body = json.loads(answer.body)
    assert set(body) == {"error"} and body["error"]["code"] == "provider_unverified"
    assert stand_in_answer(PROMPT) not in answer.body  # never the unverified answer
    for needle in needles:
        assert needle in body["error"]["message"], body
    return body["error"]["message"]


# ---- the verified answer ------------------------------------------------------------------


def test_verified_answer_carries_a_provider_proof_of_the_exact_bytes(contract: str,
                                                                     confidential: Any) -> None:
    answer = ask(contract)
    assert answer.status == 200, answer.body
    body = json.loads(answer.body)
    assert body["message"] == stand_in_answer(PROMPT)
    provider = body["provider_proof"]
    assert set(provider) == {"text", "signature", "signing_address", "chat_id"}
    assert recover(provider["text"], provider["signature"]) == stand_in_address()
    assert provider["signing_address"] == stand_in_address()

    # the request half: what the stand-in received (the contract sends compact JSON)
    [completion] = [r for r in confidential.requests if r.path == "/v1/chat/completions"]
    sent = json.dumps(completion.json, separators=(",", ":"), ensure_ascii=False).encode()
    # the response half: the same body answered again gives the same bytes on the wire
    again = requests.post(confidential.base_url + "/chat/completions", data=sent, timeout=10,
                          headers={"authorization": f"Bearer {MOCK_LLM_KEY}"})
    assert again.json()["id"] == provider["chat_id"]
    assert provider["text"] == (hashlib.sha256(sent).hexdigest() + ":"
                                + hashlib.sha256(again.content).hexdigest())

    # the contract's own proof signs the provider proof's sha256
    proof = body["proof"]
    assert proof["provider_proof_sha256"] == canonical_sha256(provider)
    assert recover(answer_text(proof), proof["signature"]) == proof["signer"]
    assert [r.path.split("?")[0] for r in signature_requests(confidential)] == \
        [f"/v1/signature/{provider['chat_id']}"]
    assert "signing_algo=ecdsa" in signature_requests(confidential)[0].path
    assert signature_requests(confidential)[0].headers["authorization"] == \
        f"Bearer {MOCK_LLM_KEY}"


def test_info_names_the_pinned_signers(contract: str) -> None:
    answer = invoke(contract, make_request("GET", f"/ipfs/{CID}/info"),
                    worker_key=TEST_WORKER_KEY)
    provider = json.loads(answer.body)["provider"]
    assert provider["kind"] == "confidential"
    assert provider["signing_addresses"] == [stand_in_address()]


def test_the_cid_pins_the_signers(project_factory: Any, confidential: Any) -> None:
    from kit.contract.project import build_project

    one = make_project(project_factory, confidential.base_url)
    other = make_project(project_factory, confidential.base_url, pinned=["0x" + "ab" * 20])
    assert build_project(one).cid != build_project(other).cid
    assert_unverified(ask(code_of(other)), "not one this contract pins")


def test_verify_answer_checks_both_signers(contract: str, tmp_path: Path) -> None:
    from kit.cli import main

    body = json.loads(ask(contract).body)
    result = tmp_path / "answer.json"
    result.write_text(json.dumps(body))
    common = [str(result), "--prompt", PROMPT, "--cid", CID, "--signer", body["proof"]["signer"]]
    outcomes = []
    for extra in (["--provider-signer", stand_in_address()],
                  ["--provider-signer", "0x" + "cd" * 20], []):
        with pytest.raises(SystemExit) as exit_info:
            main(["verify-answer", *common, *extra, "-C", str(tmp_path), "--json"])
        outcomes.append(exit_info.value.code)
    assert outcomes == [0, 1, 1]  # pinned; another signer pinned; nothing pinned: never a pass
    tampered = dict(body, provider_proof=dict(body["provider_proof"], chat_id="chatcmpl-other"))
    result.write_text(json.dumps(tampered))
    with pytest.raises(SystemExit) as exit_info:
        main(["verify-answer", *common, "--provider-signer", stand_in_address()])
    assert exit_info.value.code == 1  # its sha256 is no longer the signed one


def test_verify_answer_reads_the_pinned_signers_from_the_deployed_contract(
        project_factory: Any, confidential: Any, tmp_path: Path) -> None:
    from kit.trust.provider import pinned_provider_signers
    from kit.ipfs.records import Deployment, record
    from kit.contract.project import build_project

    project = make_project(project_factory, confidential.base_url)
    built = build_project(project)
    assert pinned_provider_signers(project, built.cid) == []  # no deployment record yet
    record(project, Deployment(
        cid=built.cid, cid_version=0, gateway_url="http://127.0.0.1:8000",
        verified_via="http://127.0.0.1:8080", artifact="dist/agent.js", size=built.size,
        config_sha256="0" * 64, template_version="x", kit_version="x", backend="node",
        deployed_at="2026-01-01T00:00:00Z"))
    assert pinned_provider_signers(project, built.cid) == [stand_in_address()]
    (project / "dist" / "agent.js").write_text("// changed\n")  # no longer the deployed bytes
    assert pinned_provider_signers(project, built.cid) == []


# ---- every fault: 502 provider_unverified, never the answer ------------------------------


@pytest.mark.parametrize("kind", FAULTS)
def test_each_injected_fault_gives_provider_unverified(contract: str, confidential: Any,
                                                       kind: str) -> None:
    confidential.fail_signature(kind, count=50)
    assert_unverified(ask(contract))


def test_a_lagging_signature_is_retried_a_bounded_number_of_times(contract: str,
                                                                  confidential: Any) -> None:
    confidential.fail_signature("not-found", count=1)
    answer = ask(contract)
    assert answer.status == 200, answer.body
    assert len(signature_requests(confidential)) == 2
    confidential.requests.clear()
    confidential.fail_signature("not-found", count=50)
    assert_unverified(ask(contract), "HTTP 404")
    assert 2 <= len(signature_requests(confidential)) <= 5


def test_a_slow_signature_is_waited_for(contract: str, confidential: Any) -> None:
    confidential.fail_signature("slow", delay=0.3)
    started = time.monotonic()
    answer = ask(contract)
    assert answer.status == 200 and time.monotonic() - started >= 0.3


def test_a_signature_that_never_comes_is_given_up_at_the_timeout(
        project_factory: Any, confidential: Any) -> None:
    code = code_of(make_project(project_factory, confidential.base_url, timeout_seconds=1))
    confidential.fail_signature("timeout", delay=10)
    started = time.monotonic()
    assert_unverified(ask(code), "in time")
    assert time.monotonic() - started < 4


def test_nothing_pinned_refuses_every_answer(project_factory: Any, confidential: Any) -> None:
    code = code_of(make_project(project_factory, confidential.base_url, pinned=[]))
    assert_unverified(ask(code), "kit provider attest")
    assert signature_requests(confidential) == []  # refused before asking


def test_other_kinds_fetch_no_signature(project_factory: Any, confidential: Any) -> None:
    project = project_factory(provider="openai-compatible", base_url=confidential.base_url,
                              models=["model-a"], key_secret="llmKey")
    answer = ask(code_of(project))
    assert answer.status == 200 and "provider_proof" not in json.loads(answer.body)
    assert json.loads(answer.body)["proof"]["provider_proof_sha256"] == "none"
    assert signature_requests(confidential) == []


# ---- the whole chain: IPFS node, local gateway, contract, generated tool -----------------


@pytest.fixture
def chain(project_factory: Any, ipfs_node: Any, confidential: Any,
          local_gateway_factory: Any) -> dict[str, Any]:
    from kit.ipfs.deploy import deploy
    from kit.mech.package import generate_tool

    gateway = local_gateway_factory(ipfs_api=ipfs_node.api)
    project = make_project(project_factory, confidential.base_url, key_secret="apiKey",
                           gateway_url=gateway.url, timeout_seconds=2)
    cid = deploy(project, ipfs_api=ipfs_node.api).cid
    vault = requests.post(f"{gateway.url}/vaults", timeout=10,
                          json={"cid": cid, "data": {"apiKey": MOCK_LLM_KEY}}).json()
    return {"package": generate_tool(project).package_dir, "key": vault["key"], "cid": cid,
            "gateway": gateway}


def tool_call(chain: dict[str, Any]) -> tuple[Any, ...]:
    run, namespace = load_like_mech(chain["package"])
    namespace.update({"BACKOFF_BASE": 0.01, "BACKOFF_MAX": 0.05, "READ_TIMEOUT": 10.0})
    api_keys = KeyChain({"tee_vault_key": [chain["key"]]})
    return run(tool="tee-test-agent-model-a", prompt=PROMPT, nonce="0x01", api_keys=api_keys,
               model="model-a")


def test_the_chain_answers_through_the_gateway_with_a_provider_proof(
        chain: dict[str, Any]) -> None:
    cid = chain["cid"]
    answer = requests.post(f"{chain['gateway'].url}/ipfs/{cid}", params={"key": chain["key"]},
                           json={"prompt": PROMPT}, timeout=20)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert recover(body["provider_proof"]["text"], body["provider_proof"]["signature"]) == \
        stand_in_address()
    assert body["proof"]["cid"] == cid
    result = tool_call(chain)
    assert stand_in_answer(PROMPT) in str(result[0]), result[0]


@pytest.mark.parametrize("kind", FAULTS + ["timeout"])
def test_the_tool_returns_an_error_never_the_answer_on_each_fault(
        chain: dict[str, Any], confidential: Any, kind: str) -> None:
    confidential.fail_signature(kind, count=50, delay=10 if kind == "timeout" else None)
    answer, *_ = tool_call(chain)
    assert isinstance(answer, str) and answer.startswith("Error: "), answer
    assert "provider_unverified" in answer
    assert stand_in_answer(PROMPT) not in answer
