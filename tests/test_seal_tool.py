"""The generated tool stays blind: a sealed prompt goes through unchanged, the proof is checked
over the ciphertexts, the sealed answer and proof come back, and `kit decrypt` opens them.

The tool is generated for a project whose deployment record pins the contract's signer (the
key derived by the documented rule, tests/test_seal_contract.py), served by the real local
gateway, and loaded exactly as the mech loads it (tests/fixtures/mech.py). Tamperings are the
ones of tests/test_seal_python.py, checked by the tool's embedded region and by kit.trust.seal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from fixtures.mech import KeyChain, load_like_mech
from fixtures.servers import MOCK_LLM_KEY, TEST_WORKER_KEY
from test_seal_contract import PRIVACY, SIGNING_PATH, address_of, derived_key, stand_in_answer
from test_seal_python import (
    CONTRACT_SECRET, SIGNER_KEY, TAMPERINGS, answer_request, public_of,
)

from kit.trust import seal
from kit.trust.core import ProofError

CANARY = "canary-tool-3c88: sealed question"
KEY_HEX = "0x" + "5a" * 32


@pytest.fixture
def deployed(project_factory: Any, mock_llm: Any, local_gateway_factory: Any) -> dict[str, Any]:
    from kit.cid import bytes_cid
    from kit.mech.package import generate_tool
    from kit.contract.project import build_project

    project: Path = project_factory(base_url=mock_llm.base_url, models=["model-a"],
                                    key_secret="llmKey")
    (project / "agent.toml").write_text((project / "agent.toml").read_text() + PRIVACY)
    build = build_project(project)
    code = build.path.read_text(encoding="utf-8")
    cid = bytes_cid(build.path.read_bytes(), version=build.cid_version)
    gateway = local_gateway_factory(project, worker_key=TEST_WORKER_KEY)
    signer = address_of(derived_key(code, SIGNING_PATH))
    record = {"cid": cid, "cid_version": build.cid_version, "gateway_url": gateway.url,
              "verified_via": "x", "artifact": "dist/agent.js", "size": build.size,
              "config_sha256": "0" * 64, "template_version": build.template_version,
              "kit_version": "0", "backend": "node", "deployed_at": "2026-01-01T00:00:00Z",
              "signers": [signer]}
    (project / "deployments").mkdir()
    (project / "deployments" / "latest.json").write_text(json.dumps(record))
    (project / "deployments" / "history.json").write_text(json.dumps([record]))
    package = generate_tool(project).package_dir
    run, namespace = load_like_mech(package)
    vault = requests.post(gateway.url + "/vaults", json={"cid": cid, "data": {
        "llmKey": MOCK_LLM_KEY}}, timeout=10).json()
    encryption_key = public_of(derived_key(code, b"agent-contract-kit/request-encryption/v1"))
    return {"project": project, "cid": cid, "gateway": gateway, "signer": signer, "run": run,
            "ns": namespace, "package": package, "encryption_key": encryption_key,
            "keys": KeyChain({"tee_vault_key": [vault["key"]]})}


def call(deployed: dict[str, Any], prompt: str) -> str:
    result = deployed["run"](prompt=prompt, tool=deployed["ns"]["PREFIX"] + "model-a",
                             api_keys=deployed["keys"], counter_callback=None)
    return result[0]


def test_a_sealed_prompt_goes_through_the_tool_and_opens_with_kit_decrypt(
    deployed: dict[str, Any]
) -> None:
    key = seal.key_from_hex(KEY_HEX)
    request = seal.seal_request(CANARY, deployed["encryption_key"], key)
    result = call(deployed, request.text)
    assert not result.startswith("Error"), result
    delivered = json.loads(result)
    assert set(delivered) == {"sealed_answer", "model", "proof"}
    assert CANARY not in result and stand_in_answer(CANARY) not in result
    opened = seal.open_answer(result, key, signers=[deployed["signer"]], cid=deployed["cid"],
                              request=request, prompt=CANARY)
    assert opened.answer == stand_in_answer(CANARY)
    # nothing the kit wrote holds the prompt, nor do the gateway's logs
    logs = requests.get(f"{deployed['gateway'].url}/logs/all/ipfs/{deployed['cid']}",
                        timeout=10).text
    assert CANARY not in logs
    for path in [*deployed["project"].rglob("*"), *deployed["package"].rglob("*")]:
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_tool_errors_never_echo_the_sealed_payload(deployed: dict[str, Any]) -> None:
    key = seal.key_from_hex(KEY_HEX)
    # sealed to another key: the contract refuses it (400 sealed_unreadable)
    request = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), key)
    result = call(deployed, request.text)
    envelope = json.loads(request.text)
    assert result.startswith("Error: ") and "sealed_unreadable" in result
    assert envelope["sealed"] not in result and envelope["sealed"][:40] not in result
    malformed = call(deployed, '{"sealed": "QUJD", "v": 1}')
    assert malformed.startswith("Error: ") and "QUJD" not in malformed


def test_the_tool_and_the_kit_give_the_same_sealed_verdicts(deployed: dict[str, Any]) -> None:
    from eth_account import Account

    namespace = deployed["ns"]
    assert seal.sealed_verifier_source().strip() in (
        deployed["package"] / f"{deployed['package'].name}.py").read_text()
    key = seal.key_from_hex("0xb25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364")
    request = seal.seal_request("q", public_of(CONTRACT_SECRET), key)
    signer = Account.from_key(SIGNER_KEY).address
    honest = answer_request(request.text, cid=deployed["cid"])
    cases = {"honest": honest, **{name: make(honest, request)
                                  for name, make in TAMPERINGS.items()}}
    for name, result in cases.items():
        verdicts = []
        for check in (seal.check_sealed_proof, namespace["check_sealed_proof"]):
            error = namespace["ProofError"] if check is not seal.check_sealed_proof else \
                ProofError
            try:
                answer = seal.sealed_bytes("sealed_answer", result["sealed_answer"])
                check(result["proof"], request.ciphertext, answer, deployed["cid"], [signer])
                verdicts.append(None)
            except error as exc:
                verdicts.append(exc.field)
        assert verdicts[0] == verdicts[1], name
        # every tampering is caught by the blind check alone (no key needed)
        assert (verdicts[0] is None) == (name == "honest"), (name, verdicts)
