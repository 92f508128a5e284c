"""Private requests end to end: `kit encrypt` (verifying the dev attestation) -> the local gateway
-> the contract (local runtime) -> the generated tool loaded as the mech loads it -> `kit
decrypt`; and a canary prompt that must never appear in the gateway's logs, the tool's result,
the deployment records or any file the kit wrote.

Oracles: the stand-in LLM's documented answer ("stand-in answer: " + sha256(prompt)[:16],
kit/local/mock_llm.py) shows that the contract read the prompt; eth-account gives the requester's
address (eth-account's documented `Account.from_key` example key).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from fixtures.servers import MOCK_LLM_KEY
from kit.cli import main
from test_seal_contract import PRIVACY, stand_in_answer

CANARY = "canary-e2e-9b41: my private question"
KEY_HEX = "0xb25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364"
KEY_ADDRESS = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"


def cli(capsys: Any, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


@pytest.fixture
def served(project_factory: Any, mock_llm: Any, local_gateway_factory: Any,
           tmp_path: Path) -> dict[str, Any]:
    from kit.contract.project import build_project

    project: Path = project_factory(base_url=mock_llm.base_url, models=["model-a"],
                                    key_secret="llmKey")
    (project / "agent.toml").write_text((project / "agent.toml").read_text() + PRIVACY)
    build = build_project(project)
    from kit.cid import bytes_cid

    cid = bytes_cid(build.path.read_bytes(), version=build.cid_version)
    gateway = local_gateway_factory(project)
    vault = requests.post(gateway.url + "/vaults", json={"cid": cid, "data": {
        "llmKey": MOCK_LLM_KEY}}, timeout=10).json()
    requester = tmp_path / "requester"
    requester.mkdir()
    (requester / "ethereum_private_key.txt").write_text(KEY_HEX)
    (requester / "question.txt").write_text(CANARY)
    return {"project": project, "cid": cid, "gateway": gateway, "vault_key": vault["key"],
            "requester": requester}


def encrypt(capsys: Any, served: dict[str, Any], *extra: str) -> tuple[int, str, str]:
    requester = served["requester"]
    return cli(capsys, "encrypt", "--cid", served["cid"], "--gateway", served["gateway"].url,
               "--key-file", str(requester / "ethereum_private_key.txt"),
               "--prompt-file", str(requester / "question.txt"), "-C", str(served["project"]),
               *extra)


def test_round_trip_through_the_gateway_and_kit_decrypt(capsys: Any,
                                                        served: dict[str, Any]) -> None:
    code, out, err = encrypt(capsys, served, "--allow-dev-quote", "--json")
    assert code == 0, err
    sealed = json.loads(out)
    assert sealed["requester"] == KEY_ADDRESS and sealed["quote_type"] == "dev"
    assert CANARY not in out + err
    envelope = json.loads(sealed["request"])
    response = requests.post(f"{served['gateway'].url}/ipfs/{served['cid']}",
                             params={"key": served["vault_key"]},
                             json={**envelope, "model": "model-a"}, timeout=60)
    assert response.status_code == 200, response.text
    assert CANARY not in response.text
    requester = served["requester"]
    (requester / "result.json").write_text(response.text)
    (requester / "request.json").write_text(sealed["request"])
    code, out, err = cli(capsys, "decrypt", str(requester / "result.json"), "--key-file",
                         str(requester / "ethereum_private_key.txt"), "--request",
                         str(requester / "request.json"), "--signer", sealed["signer"],
                         "--prompt-file", str(requester / "question.txt"))
    assert code == 0, err
    assert out.splitlines()[0].startswith("answer decrypted and verified")
    assert out.splitlines()[1] == stand_in_answer(CANARY)
    # a stranger's key opens nothing and prints nothing of the answer
    (requester / "stranger.txt").write_text("0x" + "42" * 32)
    code, out, err = cli(capsys, "decrypt", str(requester / "result.json"), "--key-file",
                         str(requester / "stranger.txt"), "--request",
                         str(requester / "request.json"), "--signer", sealed["signer"])
    assert code == 1 and "requester" in err
    assert stand_in_answer(CANARY) not in out + err
    assert_no_canary(served)


def test_kit_encrypt_verifies_the_attestation_first(capsys: Any,
                                                    served: dict[str, Any]) -> None:
    code, out, err = encrypt(capsys, served)  # a dev quote without --allow-dev-quote
    assert code == 1 and "quote" in err and out == ""
    requester = served["requester"]
    code, out, err = cli(capsys, "encrypt", "--cid", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
                         "--gateway", served["gateway"].url, "--key-file",
                         str(requester / "ethereum_private_key.txt"), "--prompt", CANARY,
                         "--allow-dev-quote")
    assert code == 1 and out == "" and CANARY not in err


def assert_no_canary(served: dict[str, Any]) -> None:
    logs = requests.get(f"{served['gateway'].url}/logs/all/ipfs/{served['cid']}",
                        timeout=10).text
    assert CANARY not in logs
    for path in served["project"].rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path


def test_quickstart_private_round_trip(tmp_path: Path) -> None:
    """scripts/quickstart.py --private: seal, call through the mech tool, decrypt, verify."""
    import hashlib
    import subprocess
    import sys

    from kit.ipfs.node import free_port, running_node

    root = Path(__file__).resolve().parents[1]
    repo = tmp_path / "ipfs"
    ports = [str(free_port()) for _ in range(4)]
    argv = [sys.executable, str(root / "scripts" / "quickstart.py"), "--private", "--dir",
            str(tmp_path / "hello-agent"), "--ipfs-repo", str(repo), "--ipfs-api-port",
            ports[0], "--ipfs-gateway-port", ports[1], "--gateway-port", ports[2],
            "--llm-port", ports[3], "--prompt", "hello, privately"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "stand-in answer: " + hashlib.sha256(b"hello, privately").hexdigest()[:16]
    assert f"private:      {expected}" in done.stdout
    assert done.stdout.rstrip().endswith("answer decrypted and verified")
    assert running_node(repo) is None
