"""The whole chain through the `kit` command, as a developer runs it, against real components:
the js-ipfs node, `kit dev` (the local gateway) and `kit mock-llm` (the stand-in LLM) as
background processes, then init → build → deploy → secrets set → tool → call.

Every hand-off is checked against an independent value, and a secret canary is searched for in
every file the flow wrote, every command's output and the gateway's logs (which show full URLs).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aleph_cid
import pytest
import requests
import yaml

from kit.ipfs.node import free_port

KIT = [sys.executable, "-m", "kit"]
PROVIDER_KEY = "canary-provider-key-93ab17"
CALLER_TOKEN = "canary-caller-token-5d2e04"
PROMPT = "Which enclave answers this?"
COMMAND_TIMEOUT = 120


def stand_in_answer(prompt: str) -> str:
    """The stand-in LLM's documented answer, computed here independently."""
    return "stand-in answer: " + hashlib.sha256(prompt.encode()).hexdigest()[:16]


class Flow:
    """Runs `kit` commands in a project and keeps everything they printed."""

    def __init__(self, project: Path) -> None:
        self.project = project
        self.outputs: list[str] = []

    def kit(self, *args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*KIT, *args], capture_output=True, text=True,
                              timeout=COMMAND_TIMEOUT, check=False)
        self.outputs += [done.stdout, done.stderr]
        assert done.returncode == expect, f"kit {args}: {done.stdout}\n{done.stderr}"
        return done

    def background(self, *args: str) -> subprocess.Popen[str]:
        with open(self.project.parent / f"{args[0]}.log", "w") as log:
            return subprocess.Popen([*KIT, *args], stdout=log, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)


def wait_http(url: str, process: subprocess.Popen[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{url}: the server exited with {process.returncode}"
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    pytest.fail(f"{url} did not answer within {timeout} s")


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture
def flow(tmp_path: Path, ipfs_node: Any) -> Iterator[tuple[Flow, str, str]]:
    """A fresh project wired to a stand-in LLM and a local gateway started through the CLI."""
    llm_port, gateway_port = free_port(), free_port()
    flow = Flow(tmp_path / "agent")
    llm = flow.background("mock-llm", "--port", str(llm_port), "--api-key", PROVIDER_KEY)
    try:
        wait_http(f"http://127.0.0.1:{llm_port}/", llm)
        gateway_url = f"http://127.0.0.1:{gateway_port}"
        flow.kit("init", str(flow.project), "--name", "canary-agent", "--provider",
                 "openai-compatible", "--base-url", f"http://127.0.0.1:{llm_port}/v1",
                 "--gateway", gateway_url)
        toml = flow.project / "agent.toml"
        toml.write_text(toml.read_text().replace(
            "[agent]\n", '[agent]\ncaller_token_secret = "callerToken"\n', 1))
        gateway = flow.background("dev", "-C", str(flow.project), "--port", str(gateway_port),
                                  "--ipfs-api", ipfs_node.api)
        try:
            wait_http(gateway_url + "/", gateway)
            yield flow, gateway_url, ipfs_node.api
        finally:
            stop(gateway)
    finally:
        stop(llm)


def test_whole_flow_through_the_cli(flow: tuple[Flow, str, str], ipfs_node: Any) -> None:
    run, gateway_url, ipfs_api = flow
    project = run.project

    built_cid = run.kit("build", "-C", str(project)).stdout.strip()
    contract = (project / "dist" / "agent.js").read_bytes()
    assert built_cid == aleph_cid.compute_cid(contract)

    deployed = json.loads(run.kit("deploy", "-C", str(project), "--ipfs-api", ipfs_api,
                                  "--json").stdout)
    cid = deployed["cid"]
    assert cid == built_cid
    served = requests.get(f"{ipfs_node.gateway_url}/ipfs/{cid}", timeout=10).content
    assert served == contract and aleph_cid.compute_cid(served) == cid

    run.kit("secrets", "set", "-C", str(project), f"apiKey={PROVIDER_KEY}",
            f"callerToken={CALLER_TOKEN}")
    tool = json.loads(run.kit("tool", "-C", str(project), "--json").stdout)
    tool_file = Path(tool["package_dir"]) / "tee_canary_agent.py"
    namespace: dict[str, Any] = {}
    exec(tool_file.read_text(), namespace)
    assert namespace["CID"] == cid and namespace["GATEWAY_URLS"] == [gateway_url]
    component = yaml.safe_load((Path(tool["package_dir"]) / "component.yaml").read_text())
    assert set(tool["tools_to_package_hash"].values()) == {tool["package_hash"]}
    assert component["entry_point"] == tool_file.name

    answer = json.loads(run.kit("call", "-C", str(project), "--prompt", PROMPT,
                                "--json").stdout)
    assert answer["ok"] and answer["answer"] == stand_in_answer(PROMPT)

    _secret_reaches_contract_only_with_right_key(gateway_url, cid, project)
    _stale_binding_is_reported(run, ipfs_api)
    _canaries_are_nowhere(run, gateway_url, cid)


def _secret_reaches_contract_only_with_right_key(gateway_url: str, cid: str,
                                                 project: Path) -> None:
    key = json.loads((project / ".kit" / "secrets.json").read_text())["key"]
    body = {"prompt": PROMPT}
    auth = {"Authorization": f"Bearer {CALLER_TOKEN}"}
    url = f"{gateway_url}/ipfs/{cid}"
    good = requests.post(url, params={"key": key}, json=body, headers=auth, timeout=30)
    assert good.status_code == 200 and good.json()["message"] == stand_in_answer(PROMPT)
    for params in ({}, {"key": "0" * len(key)}):
        refused = requests.post(url, params=params, json=body, headers=auth, timeout=30)
        assert refused.status_code == 401, refused.text  # no secrets: no caller token match
    wrong_token = requests.post(url, params={"key": key}, json=body, timeout=30,
                                headers={"Authorization": "Bearer not-the-token"})
    assert wrong_token.status_code == 401


def _stale_binding_is_reported(run: Flow, ipfs_api: str) -> None:
    toml = run.project / "agent.toml"
    toml.write_text(toml.read_text().replace('system_prompt = "', 'system_prompt = "New. ', 1))
    redeploy = run.kit("deploy", "-C", str(run.project), "--ipfs-api", ipfs_api)
    assert "kit secrets set" in redeploy.stderr and "previous CID" in redeploy.stderr
    show = json.loads(run.kit("secrets", "show", "-C", str(run.project), "--json").stdout)
    assert show["stale"] is True


def _canaries_are_nowhere(run: Flow, gateway_url: str, cid: str) -> None:
    logs = requests.get(f"{gateway_url}/logs/all/ipfs/{cid}", timeout=10).text
    assert "START Request: POST /ipfs/" in logs  # the logs do show full request URLs
    places = {"command output": "\n".join(run.outputs), "gateway logs": logs}
    vault = run.project / ".kit" / "vault.json"  # the local gateway's vault: where they belong
    client_state = run.project / ".kit" / "secrets.json"  # 0600; holds the caller token
    for path in sorted(run.project.parent.rglob("*")):
        if path.is_file() and path != vault:
            places[str(path)] = path.read_bytes().decode("utf-8", "replace")
    for where, text in places.items():
        assert PROVIDER_KEY not in text, f"provider key leaked into {where}"
        if where != str(client_state):
            assert CALLER_TOKEN not in text, f"caller token leaked into {where}"
    assert PROVIDER_KEY in vault.read_text()  # the canary search can find what it looks for
