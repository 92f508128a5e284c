"""`kit deploy` against a real js-ipfs node: CIDv0 and CIDv1, records, and the node's faults.

Oracles: aleph-cid (an independent Rust implementation of Kubo's recipe) for the CID, the
node's own HTTP API (queried with requests, not through the kit) for the pin, and its HTTP
gateway for the bytes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import requests

from fixtures.ipfs_node import (
    RunningNode, change_prompt, oracle_cid, reply, run_cli, snapshot, standin_http, start_node,
)
from kit.ipfs.deploy import deploy
from kit.errors import GatewayError, InputError, NodeUnavailable
from kit.ipfs.node import free_port
from kit.ipfs.records import load_history, load_latest


def pinned_on_node(node: RunningNode, cid: str) -> bool:
    """Asked of the node's HTTP API directly (js-ipfs cannot list CIDv0 keys in base32)."""
    answer = requests.post(f"{node.api_url}/api/v0/pin/ls",
                           params={"arg": cid, "type": "recursive"}, timeout=10)
    if answer.status_code == 500 and "is not pinned" in answer.json()["Message"]:
        return False
    answer.raise_for_status()
    return len(answer.json()["Keys"]) == 1


@pytest.mark.parametrize("version", [0, 1])
def test_deploy_pins_serves_and_records_the_oracle_cid(
    version: int, project_factory: Callable[..., Path], ipfs_node: RunningNode
) -> None:
    project = project_factory()
    steps: list[str] = []
    result = deploy(project, ipfs_api=ipfs_node.api, cid_version=version, progress=steps.append)

    artifact = (project / "dist" / "agent.js").read_bytes()
    expected = oracle_cid(artifact, version)
    assert result.cid == expected
    assert result.cid.startswith("Qm" if version == 0 else "bafkrei")
    assert pinned_on_node(ipfs_node, expected)
    served = requests.get(f"{ipfs_node.gateway_url}/ipfs/{expected}", timeout=10)
    assert served.status_code == 200 and served.content == artifact
    names = ["render", "cid", "add", "pin", "verify", "record", "attest"]  # attest: kit.trust
    assert [s.split(":")[0] for s in steps] == names
    assert set(result.timings_ms) == set(names)

    latest = json.loads((project / "deployments/latest.json").read_text())
    assert latest["cid"] == expected and latest["cid_version"] == version
    assert latest["backend"] == "node" and latest["verified_via"] == ipfs_node.gateway_url
    assert latest["artifact"] == "dist/agent.js" and latest["size"] == len(artifact)
    assert latest["deployed_at"].endswith("Z")
    assert len(load_history(project)) == 1

    before = snapshot(project)
    again = deploy(project, ipfs_api=ipfs_node.api, cid_version=version)
    assert again.cid == expected and again.recorded is False
    assert snapshot(project) == before, "an unchanged re-deploy writes nothing"


def test_cli_deploy_json_then_a_changed_config_appends_history(
    capsys: pytest.CaptureFixture[str], deployed: Path, ipfs_node: RunningNode
) -> None:
    code, out, err = run_cli(capsys, "deploy", "-C", str(deployed), "--ipfs-api", ipfs_node.api,
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["recorded"] is True
    assert result["cid"] == oracle_cid((deployed / "dist/agent.js").read_bytes(), 0)
    assert "add: " in err and "verify: " in err  # progress goes to stderr
    history = load_history(deployed)
    assert len(history) == 2 and history[-1].cid == result["cid"] != history[0].cid
    assert load_latest(deployed).cid == result["cid"]


# --- faults: message, exit code, previous record byte-equal ---------------------------------


def test_node_not_running(capsys: pytest.CaptureFixture[str], deployed: Path) -> None:
    before = snapshot(deployed)
    dead = f"/ip4/127.0.0.1/tcp/{free_port()}/http"
    code, _, err = run_cli(capsys, "deploy", "-C", str(deployed), "--ipfs-api", dead)
    assert code == 1
    assert "cannot reach the IPFS node API" in err and "kit node up" in err
    assert snapshot(deployed) == before


def test_node_killed_in_the_middle_of_a_deploy(
    tmp_path: Path, project_factory: Callable[..., Path]
) -> None:
    project = project_factory()
    with start_node(tmp_path / "doomed-repo") as doomed:
        deploy(project, ipfs_api=doomed.api)
        change_prompt(project)
        before = snapshot(project)

        def kill_at_add(message: str) -> None:
            if message.startswith("add:"):
                os.kill(doomed.pid, signal.SIGKILL)

        with pytest.raises(NodeUnavailable) as failure:
            deploy(project, ipfs_api=doomed.api, progress=kill_at_add)
    assert failure.value.exit_code == 1
    assert "kit node up" in str(failure.value)
    assert snapshot(project) == before


def test_node_api_that_never_answers_times_out(
    capsys: pytest.CaptureFixture[str], deployed: Path, silent_server: str
) -> None:
    before = snapshot(deployed)
    code, _, err = run_cli(capsys, "deploy", "-C", str(deployed), "--ipfs-api", silent_server,
                           "--timeout", "2")
    assert code == 1
    assert "did not answer" in err and "within 2s" in err
    assert snapshot(deployed) == before


def test_gateway_that_never_answers_times_out(
    deployed: Path, ipfs_node: RunningNode, silent_server: str
) -> None:
    before = snapshot(deployed)
    with pytest.raises(GatewayError) as failure:
        deploy(deployed, ipfs_api=ipfs_node.api, gateway=silent_server, timeout=2)
    assert failure.value.exit_code == 1
    assert "did not answer within 2s" in str(failure.value)
    assert "no deployment recorded" in str(failure.value)
    assert snapshot(deployed) == before


@pytest.mark.parametrize("fault", ["truncated", "altered"])
def test_gateway_serving_wrong_bytes_is_caught(
    fault: str, capsys: pytest.CaptureFixture[str], deployed: Path, ipfs_node: RunningNode
) -> None:
    def bad_gateway(request) -> None:  # stand-in: proxies the real gateway, then spoils it
        body = requests.get(ipfs_node.gateway_url + request.path, timeout=10).content
        reply(request, 200, body[:-100] if fault == "truncated" else body.replace(b"a", b"b", 1))

    before = snapshot(deployed)
    with standin_http(bad_gateway) as gateway:
        code, _, err = run_cli(capsys, "deploy", "-C", str(deployed), "--ipfs-api",
                               ipfs_node.api, "--gateway", gateway)
    assert code == 1
    assert f"{fault} " in err and "no deployment recorded" in err
    assert snapshot(deployed) == before


def test_unknown_pinning_service_spec_is_bad_input(
    capsys: pytest.CaptureFixture[str], deployed: Path, ipfs_node: RunningNode
) -> None:
    before = snapshot(deployed)
    code, _, err = run_cli(capsys, "deploy", "-C", str(deployed), "--ipfs-api", ipfs_node.api,
                           "--pinning-service", "ftp://example")
    assert code == 2 and "--pinning-service" in err
    assert snapshot(deployed) == before


def test_corrupt_record_is_reported_not_overwritten(deployed: Path, ipfs_node: RunningNode) -> None:
    latest = deployed / "deployments/latest.json"
    latest.write_text("{not json")
    with pytest.raises(InputError) as failure:
        deploy(deployed, ipfs_api=ipfs_node.api)
    assert "latest.json is not valid JSON" in str(failure.value)
    assert latest.read_text() == "{not json"


def test_a_pin_is_recognised_in_either_cid_form(
    project_factory: Callable[..., Path], ipfs_node: RunningNode
) -> None:
    """Qm... and its bafybei... name one block: a deploy must not take one for a new pin."""
    from kit.cid import to_cidv1_base32

    data = (project_factory() / "dist/agent.js").read_bytes()
    v0 = ipfs_node.client.add_bytes(data, cid_version=0)
    assert v0 == oracle_cid(data, 0)
    assert ipfs_node.client.is_pinned(to_cidv1_base32(v0))
    assert not ipfs_node.client.is_pinned(oracle_cid(data + b"x", 0))


SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "deploy.py"


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_pipeline_script_prints_one_json_object_and_documented_exit_codes(
    deployed: Path, ipfs_node: RunningNode
) -> None:
    before = snapshot(deployed)
    dead = f"/ip4/127.0.0.1/tcp/{free_port()}/http"
    down = run_script("-C", str(deployed), "--ipfs-api", dead)
    assert down.returncode == 1
    failure = json.loads(down.stdout)
    assert failure["ok"] is False and failure["kind"] == "NodeUnavailable"
    assert "kit node up" in failure["error"]
    assert snapshot(deployed) == before

    bad = run_script("-C", str(deployed / "missing"))
    assert bad.returncode == 2 and "agent.toml" in json.loads(bad.stdout)["error"]

    done = run_script("-C", str(deployed), "--ipfs-api", ipfs_node.api, "--cid-version", "1")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["ok"] is True and result["recorded"] is True
    assert result["cid"] == oracle_cid((deployed / "dist/agent.js").read_bytes(), 1)
    assert "exit codes" in run_script("--help").stdout


# --- a failed deploy removes the pins it added (issue 9, "nothing lost") --------------------

OTHER_CID = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"  # "hello world": not our bytes
PINNING_TOKEN = "pin-token-canary"


def misbehaving_pinning_service(mode: str):
    """Stand-in IPFS Pinning Service API (not the real service): `GET /pins` answers "no such
    pin", then `POST /pins` and `GET /pins/{id}` misbehave as `mode` says."""

    def answer(request, status: int, value: object) -> None:
        reply(request, status, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def status(request_id: str, state: str, cid: str) -> dict:
        return {"requestid": request_id, "status": state, "created": "2024-01-01T00:00:00Z",
                "pin": {"cid": cid}, "delegates": []}

    def handle(request) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
        if mode in ("429", "401"):
            headers = {"Retry-After": "0"} if mode == "429" else {}
            reply(request, int(mode), b'{"error": {"reason": "STAND-IN"}}', headers)
        elif request.command == "GET" and request.path.startswith("/pins?"):
            answer(request, 200, {"count": 0, "results": []})
        elif request.command == "POST" and mode == "400":
            answer(request, 400, {"error": {"reason": "BAD_REQUEST"}})
        elif request.command == "POST" and mode == "invalid-json":
            reply(request, 202, b"<html>not json</html>")
        elif request.command == "POST":
            cid = OTHER_CID if mode == "another-cid" else json.loads(body)["cid"]
            answer(request, 202, status("r1", "pinned" if mode == "another-cid" else "queued",
                                        cid))
        elif request.command == "GET" and request.path == "/pins/r1":
            answer(request, 200, status("r1", "failed", "unused"))
        elif request.command == "DELETE":
            reply(request, 202, b"")
        else:
            reply(request, 404, b"not found")

    return standin_http(handle)


@pytest.fixture
def fresh_project(deployed_factory: Callable[..., Path],
                  request: pytest.FixtureRequest) -> Path:
    """A deployed project whose next build is content no other test pinned on the node."""
    project = deployed_factory(description=f"pin-undo {request.node.name}")
    change_prompt(project)
    return project


def next_cid(project: Path) -> str:
    from kit.contract.project import build_project

    return build_project(project).cid


@pytest.mark.parametrize("mode", ["hang", "429", "401", "400", "invalid-json", "failed",
                                  "another-cid"])
def test_failed_pinning_service_deploy_removes_the_node_pin_it_added(
    mode: str, fresh_project: Path, ipfs_node: RunningNode, silent_server: str,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KIT_PINNING_TOKEN", PINNING_TOKEN)
    cid = next_cid(fresh_project)
    assert cid == oracle_cid((fresh_project / "dist/agent.js").read_bytes(), 0)
    assert not pinned_on_node(ipfs_node, cid)
    before = snapshot(fresh_project)
    if mode == "hang":
        result = run_cli(capsys, "deploy", "-C", str(fresh_project), "--ipfs-api", ipfs_node.api,
                         "--pinning-service", silent_server, "--timeout", "1")
    else:
        with misbehaving_pinning_service(mode) as url:
            result = run_cli(capsys, "deploy", "-C", str(fresh_project), "--ipfs-api",
                             ipfs_node.api, "--pinning-service", url)
    code, _, err = result
    print(err)
    assert code == 1 and "Traceback" not in err and PINNING_TOKEN not in err
    assert f"the node pin of {cid} this deploy added was removed" in err
    assert not pinned_on_node(ipfs_node, cid)
    assert snapshot(fresh_project) == before


def test_a_pin_that_existed_before_a_failed_deploy_stays(
    fresh_project: Path, ipfs_node: RunningNode, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KIT_PINNING_TOKEN", PINNING_TOKEN)
    cid = next_cid(fresh_project)
    ipfs_node.client.add_bytes((fresh_project / "dist/agent.js").read_bytes())  # pinned before
    assert pinned_on_node(ipfs_node, cid)
    with misbehaving_pinning_service("failed") as url:
        code, _, err = run_cli(capsys, "deploy", "-C", str(fresh_project), "--ipfs-api",
                               ipfs_node.api, "--pinning-service", url)
    assert code == 1 and "status 'failed'" in err and "removed" not in err
    assert pinned_on_node(ipfs_node, cid)


def test_failed_verification_removes_the_node_pin_it_added(
    fresh_project: Path, ipfs_node: RunningNode, capsys: pytest.CaptureFixture[str]
) -> None:
    cid = next_cid(fresh_project)
    before = snapshot(fresh_project)
    with standin_http(lambda request: reply(request, 404, b"no such thing")) as gateway:
        code, _, err = run_cli(capsys, "deploy", "-C", str(fresh_project), "--ipfs-api",
                               ipfs_node.api, "--gateway", gateway)
    assert code == 1 and "answered HTTP 404" in err and "no deployment recorded" in err
    assert f"the node pin of {cid} this deploy added was removed" in err
    assert not pinned_on_node(ipfs_node, cid)
    assert snapshot(fresh_project) == before


# --- concurrent deploys of one project (issue 9: history entries were lost) ----------------

CONCURRENT_ROUNDS = 3


def test_two_concurrent_deploys_lose_no_history_entry(
    deployed: Path, ipfs_node: RunningNode
) -> None:
    """Two `kit deploy` processes, one CIDv0 and one CIDv1 (two different records), 3 rounds
    each at once: every run that reported `recorded` is in the history, and latest.json is the
    history's last entry."""
    initial = len(load_history(deployed))

    def start(version: str) -> subprocess.Popen[str]:
        script = (f"for i in $(seq {CONCURRENT_ROUNDS}); do {sys.executable} -m kit deploy "
                  f"-C {deployed} --ipfs-api {ipfs_node.api} --cid-version {version} --json "
                  "|| exit 1; done")
        return subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    runs = [start("0"), start("1")]
    outputs = [run.communicate(timeout=300) for run in runs]
    assert all(run.returncode == 0 for run in runs), [err for _, err in outputs]
    results = [json.loads(line) for out, _ in outputs for line in _json_objects(out)]
    assert len(results) == 2 * CONCURRENT_ROUNDS
    history = load_history(deployed)
    recorded = [r["record"] for r in results if r["recorded"]]
    assert len(history) == initial + len(recorded)
    assert sorted(d["deployed_at"] + d["cid"] for d in recorded) == \
        sorted(d.deployed_at + d.cid for d in history[initial:])
    assert load_latest(deployed) == history[-1]


def _json_objects(text: str) -> list[str]:
    """`--json` prints one indented object per run: split the concatenation."""
    decoder, objects, position = json.JSONDecoder(), [], 0
    while position < len(text.rstrip()):
        value, end = decoder.raw_decode(text, position)
        objects.append(json.dumps(value))
        position = end
        while position < len(text) and text[position].isspace():
            position += 1
    return objects
