"""`kit call`: bad input and a failing gateway are reported, not raised, and leak nothing; through
the real chain it shows what the mech would bill and the contract's provider failures."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from typing import Any

import pytest
from fixtures.ipfs_node import RunningNode, run_cli
from fixtures.mech import MECH_TOKEN_PRICES
from fixtures.servers import MOCK_LLM_KEY

from kit.mech.package import generate_tool
from kit.ipfs.node import free_port
from kit.mech.secrets import set_secrets

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


# --- through the real chain: local gateway + contract + stand-in LLM (its fault injection) ---


@pytest.fixture
def served(deployed_factory: Callable[..., Path], ipfs_node: RunningNode, mock_llm: Any,
           local_gateway_factory: Any) -> Callable[[str], Path]:
    """callable(provider_key): a deployed project served by a local gateway, its provider key
    stored with `kit secrets set`'s code, its tool generated."""
    gateway = local_gateway_factory(ipfs_api=ipfs_node.api)

    def make(provider_key: str) -> Path:
        project = deployed_factory(provider="openai-compatible", base_url=mock_llm.base_url,
                                   gateway_url=gateway.url, models=("gpt-4", "gpt-4o-mini"),
                                   timeout_seconds=1)
        set_secrets(project, {"apiKey": provider_key})
        generate_tool(project)
        return project

    return make


def test_call_shows_what_the_mech_would_bill(served: Callable[[str], Path], mock_llm: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    project = served(MOCK_LLM_KEY)
    code, out, _ = run_cli(capsys, "call", "-C", str(project), "--prompt", "two words",
                           "--json")
    view = json.loads(out)
    words_in = len("You are a helpful assistant.".split()) + 2  # the default system prompt
    assert code == 0 and view["ok"]
    # gpt-4 has a price in the mech's token counter (fixtures.mech.MECH_TOKEN_PRICES)
    assert "gpt-4" in MECH_TOKEN_PRICES
    assert view["usage"] == {"model": "gpt-4", "input_tokens": words_in, "output_tokens": 3,
                             "priced": True}
    code, out, _ = run_cli(capsys, "call", "-C", str(project), "--prompt", "hi",
                           "--model", "gpt-4o-mini")
    assert code == 0 and "gpt-4o-mini" not in MECH_TOKEN_PRICES
    assert "NOT billed: the mech has no price for gpt-4o-mini" in out
    assert len(mock_llm.requests) == 2


def test_call_shows_a_provider_credential_failure_once(served: Callable[[str], Path],
                                                       mock_llm: Any,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    project = served("not-the-provider-key")
    code, out, err = run_cli(capsys, "call", "-C", str(project), "--prompt", "hi", "--json")
    view = json.loads(out)
    assert code == 1 and not view["ok"] and view["usage"] is None
    assert "the provider refused the credentials" in view["answer"]
    assert "HTTP 401: provider_unauthorized" in view["answer"]
    assert "not-the-provider-key" not in out + err
    assert len(mock_llm.requests) == 1  # never retried


def test_call_shows_a_provider_timeout_without_running_it_again(
        served: Callable[[str], Path], mock_llm: Any,
        capsys: pytest.CaptureFixture[str]) -> None:
    project = served(MOCK_LLM_KEY)
    mock_llm.fail_next(None, delay=3.0)
    code, out, _ = run_cli(capsys, "call", "-C", str(project), "--prompt", "hi")
    assert code == 1 and "the provider timed out" in out and "HTTP 504" in out
    assert len(mock_llm.requests) == 1
