"""`kit call`: bad input and a failing gateway are reported, not raised, and leak nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures.ipfs_node import run_cli

from kit.mechtool import generate_tool
from kit.node import free_port

VAULT_KEY = "canary-vault-key-77c1"


def test_without_a_generated_tool(project_factory: Callable[..., Path],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    code, _, err = run_cli(capsys, "call", "-C", str(project), "--prompt", "hi")
    assert code == 2 and "run `kit tool` first" in err


def test_gateway_down_is_an_outside_failure(deployed_factory: Callable[..., Path],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    project = deployed_factory(gateway_url=f"http://127.0.0.1:{free_port()}")
    generate_tool(project)
    secrets = project / ".kit" / "secrets.json"
    secrets.parent.mkdir(exist_ok=True)
    secrets.write_text(json.dumps({"cid": "x", "gateway_url": "x", "key": VAULT_KEY,
                                   "token": "t", "names": ["apiKey"], "caller_token": None}))
    code, out, err = run_cli(capsys, "call", "-C", str(project), "--prompt", "hi", "--json")
    answer = json.loads(out)
    assert code == 1 and not answer["ok"]
    assert "connection refused" in answer["answer"] and VAULT_KEY not in out + err
