"""`kit secrets`: values reach the gateway vault for the deployed CID and nowhere else."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from fixtures.ipfs_node import reply, run_cli, standin_http

CANARY = "canary-secret-4f1c9e"


@pytest.fixture
def project(deployed_factory: Callable[..., Path]) -> Path:
    return deployed_factory(caller_token_secret="callerToken")


def secrets_file(project: Path) -> Path:
    return project / ".kit" / "secrets.json"


def test_set_stores_in_vault_and_masks_everywhere(
    project: Path, local_gateway_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = local_gateway_factory(project)
    code, out, err = run_cli(capsys, "secrets", "set", "-C", str(project), "--gateway",
                             gateway.url, f"openaiApiKey={CANARY}", "callerToken=tok-123")
    assert code == 0, err
    assert CANARY not in out + err and "tok-123" not in out + err
    assert "openaiApiKey = ****" in out

    stored = json.loads(secrets_file(project).read_text())
    assert stat.S_IMODE(secrets_file(project).stat().st_mode) == 0o600
    assert CANARY not in secrets_file(project).read_text()
    latest = json.loads((project / "deployments" / "latest.json").read_text())
    assert stored["cid"] == latest["cid"]
    assert stored["caller_token"] == "tok-123"  # `kit call` must send it as a header

    # Independent check through the gateway's own vault endpoint.
    answer = requests.get(f"{gateway.url}/vaults/{stored['key']}/{stored['token']}", timeout=10)
    assert answer.json() == {"data": {"openaiApiKey": CANARY, "callerToken": "tok-123"},
                             "succeed": True}

    code, out, _ = run_cli(capsys, "secrets", "show", "-C", str(project), "--json")
    view = json.loads(out)
    assert code == 0 and view["stale"] is False and view["names"] == ["callerToken", "openaiApiKey"]
    assert CANARY not in out and stored["token"] not in out


def test_from_env(project: Path, local_gateway_factory: Callable[..., Any],
                  capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    gateway = local_gateway_factory(project)
    monkeypatch.setenv("openaiApiKey", CANARY)
    code, out, err = run_cli(capsys, "secrets", "set", "-C", str(project), "--gateway",
                             gateway.url, "--from-env", "openaiApiKey")
    assert code == 0, err
    assert CANARY not in out + err
    stored = json.loads(secrets_file(project).read_text())
    answer = requests.get(f"{gateway.url}/vaults/{stored['key']}/{stored['token']}", timeout=10)
    assert answer.json()["data"] == {"openaiApiKey": CANARY}

    code, _, err = run_cli(capsys, "secrets", "set", "-C", str(project), "--from-env", "NOPE_X")
    assert code == 2 and "NOPE_X" in err


def test_no_deployment_is_bad_input(project_factory: Callable[..., Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    code, _, err = run_cli(capsys, "secrets", "set", "-C", str(project), f"k={CANARY}")
    assert code == 2 and "kit deploy" in err and CANARY not in err
    assert not secrets_file(project).exists()


def test_malformed_assignment_does_not_echo_value(project: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "secrets", "set", "-C", str(project), CANARY)
    assert code == 2 and "NAME=VALUE" in err and CANARY not in err


@pytest.mark.parametrize("status, body", [
    (500, b"internal error"),
    (200, b"<html>not json</html>"),
    (200, json.dumps({"succeed": False}).encode()),
])
def test_gateway_faults_keep_previous_binding(
    project: Path, local_gateway_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str],
    status: int, body: bytes,
) -> None:
    gateway = local_gateway_factory(project)
    assert run_cli(capsys, "secrets", "set", "-C", str(project), "--gateway", gateway.url,
                   "openaiApiKey=first")[0] == 0
    before = secrets_file(project).read_bytes()
    with standin_http(lambda request: reply(request, status, body)) as bad:
        code, out, err = run_cli(capsys, "secrets", "set", "-C", str(project), "--gateway", bad,
                                 f"openaiApiKey={CANARY}")
    assert code == 1 and "secrets not set" in err and CANARY not in out + err
    assert secrets_file(project).read_bytes() == before


def test_gateway_down(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kit.ipfs.node import free_port

    code, _, err = run_cli(capsys, "secrets", "set", "-C", str(project), "--gateway",
                           f"http://127.0.0.1:{free_port()}", f"openaiApiKey={CANARY}")
    assert code == 1 and "cannot reach the gateway vault" in err and CANARY not in err
    assert not secrets_file(project).exists()


def test_a_set_that_would_unbind_a_secret_is_refused_unless_replaced(
    project: Path, local_gateway_factory: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 9: the vault keeps only the latest set, so setting callerToken alone after
    openaiApiKey silently unbound the key. Refused (exit 2, names listed, binding intact)
    unless the bound secrets are given again or --replace is passed."""
    gateway = local_gateway_factory(project)

    def secrets_set(*args: str) -> tuple[int, str, str]:
        return run_cli(capsys, "secrets", "set", "-C", str(project), "--gateway", gateway.url,
                       *args)

    def vault() -> dict[str, str]:
        stored = json.loads(secrets_file(project).read_text())
        url = f"{gateway.url}/vaults/{stored['key']}/{stored['token']}"
        return requests.get(url, timeout=10).json()["data"]

    assert secrets_set(f"openaiApiKey={CANARY}")[0] == 0
    before = secrets_file(project).read_bytes()

    code, out, err = secrets_set("callerToken=tok-2")
    assert code == 2 and "would unbind openaiApiKey" in err and "--replace" in err
    assert CANARY not in out + err and "tok-2" not in out + err
    assert secrets_file(project).read_bytes() == before
    assert vault() == {"openaiApiKey": CANARY}  # the gateway's own view: still bound

    code, _, err = secrets_set(f"openaiApiKey={CANARY}", "callerToken=tok-2")  # given again
    assert code == 0, err
    assert vault() == {"openaiApiKey": CANARY, "callerToken": "tok-2"}

    code, _, err = secrets_set("callerToken=tok-3")
    assert code == 2 and "would unbind openaiApiKey" in err
    code, _, err = secrets_set("--replace", "callerToken=tok-3")
    assert code == 0, err
    assert vault() == {"callerToken": "tok-3"}
    assert json.loads(secrets_file(project).read_text())["names"] == ["callerToken"]
