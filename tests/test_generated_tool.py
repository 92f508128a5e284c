"""The generated tool, loaded and called exactly as a Valory mech does (fixtures.mech).

First against the real chain: the local gateway serving the deployed CID from the IPFS node,
the contract in the local runtime, the stand-in LLM. The expected answer and token counts come
from the stand-in's documented formula, computed here. Then against a scripted stand-in
gateway (labelled as such) for the answers a real gateway gives when things go wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fixtures.ipfs_node import RunningNode, reply, standin_http
from fixtures.mech import (KeyChain, MechTokenCounterCallback, TokenCounter, cost_in_credits,
                           load_like_mech)
from fixtures.servers import MOCK_LLM_KEY
from kit.ipfs.deploy import deploy
from kit.mech.package import generate_tool

CALLER_TOKEN = "caller-token-5f2d9a"
PROMPT = "When did humans first land on the Moon?"
SYSTEM_PROMPT = "You answer briefly."
TOOL = "tee-test-agent-gpt-4o-mini"
ALLOWED = ["tee-test-agent-gpt-4o-mini", "tee-test-agent-gpt-4"]
FAST = {"BACKOFF_BASE": 0.01, "BACKOFF_MAX": 0.05, "CONNECT_TIMEOUT": 2.0, "READ_TIMEOUT": 5.0,
        # scripted stand-in answers carry no proof; verification: tests/test_trust_tool.py
        "VERIFY_ANSWERS": "off", "RESULT_FORMAT": "text"}


def stand_in_answer(prompt: str) -> str:
    """The stand-in LLM's documented answer, computed independently."""
    return "stand-in answer: " + hashlib.sha256(prompt.encode()).hexdigest()[:16]


@pytest.fixture
def tool_project(project_factory: Callable[..., Path], ipfs_node: RunningNode,
                 mock_llm: Any, local_gateway_factory: Any) -> Iterator[dict[str, Any]]:
    """A deployed project (caller token required), its gateway, vault key and tool package."""
    gateway = local_gateway_factory(ipfs_api=ipfs_node.api)
    project = project_factory(
        provider="openai-compatible", base_url=mock_llm.base_url, gateway_url=gateway.url,
        models=("gpt-4o-mini", "gpt-4"), caller_token_secret="callerToken",
        system_prompt=SYSTEM_PROMPT, timeout_seconds=1,
    )
    cid = deploy(project, ipfs_api=ipfs_node.api).cid
    vault = requests.post(f"{gateway.url}/vaults", timeout=10, json={
        "cid": cid, "data": {"apiKey": MOCK_LLM_KEY, "callerToken": CALLER_TOKEN},
    }).json()
    result = generate_tool(project)
    yield {"gateway": gateway, "cid": cid, "key": vault["key"], "package": result.package_dir,
           "project": project}


def mech_call(package_dir: Path, api_keys: Any, *, tool: str = TOOL,
              constants: dict[str, Any] | None = None, **extra: Any) -> tuple[Any, ...]:
    run, namespace = load_like_mech(package_dir)
    # the answer text alone (tool.result = "text"), still verified: see the first test for JSON
    namespace.update({"RESULT_FORMAT": "text", **(constants or {})})
    extra.setdefault("model", "gpt-4o-mini")  # the mech passes the component's default_model
    return run(tool=tool, prompt=PROMPT, nonce="0x01", api_keys=api_keys, **extra)


def keys(vault_key: str | list[str] = "vault-key-1") -> KeyChain:
    vault_keys = vault_key if isinstance(vault_key, list) else [vault_key]
    return KeyChain({"tee_vault_key": vault_keys, "tee_caller_token": [CALLER_TOKEN]})


# --- the real chain -------------------------------------------------------------------------


def test_answers_through_the_local_gateway_and_contract(tool_project: dict[str, Any],
                                                        mock_llm: Any) -> None:
    api_keys = keys(tool_project["key"])
    counter = TokenCounter()
    result = mech_call(tool_project["package"], api_keys, counter_callback=counter,
                       constants={"RESULT_FORMAT": "json"})

    assert len(result) == 5
    answer, prompt_used, transaction, callback, returned_keys = result
    delivered = json.loads(answer)  # tool.result = "json": the answer with its verified proof
    assert delivered["answer"] == stand_in_answer(PROMPT)
    record = json.loads((tool_project["project"] / "deployments" / "latest.json").read_text())
    assert delivered["proof"]["signer"] in record["signers"]  # recorded by kit deploy
    assert prompt_used == PROMPT
    assert transaction is None
    assert callback is counter and returned_keys is api_keys
    words_in = len(SYSTEM_PROMPT.split()) + len(PROMPT.split())
    assert [(c["model"], c["input"], c["output"]) for c in counter.calls] == [
        ("gpt-4o-mini", words_in, 3)]
    assert counter.calls[0]["kwargs"] == {"input_tokens": words_in, "output_tokens": 3}

    # with the vault key the contract got the secret: the provider saw the stored key
    provider_call = mock_llm.requests[-1]
    assert provider_call.headers["authorization"] == f"Bearer {MOCK_LLM_KEY}"
    assert provider_call.json["model"] == "gpt-4o-mini"


def test_gateway_requests_carry_no_provider_key_or_token_in_urls(
        tool_project: dict[str, Any]) -> None:
    mech_call(tool_project["package"], keys(tool_project["key"]), counter_callback=None)
    gateway, cid = tool_project["gateway"], tool_project["cid"]
    logs = requests.get(f"{gateway.url}/logs/all/ipfs/{cid}?format=json", timeout=10).json()
    starts = [urlsplit(r["message"].split(" ", 3)[3]) for r in logs
              if r["message"].startswith("START Request:")]
    calls = [url for url in starts if url.path == f"/ipfs/{cid}"]  # (deploy's /attestation too)
    assert calls, logs
    for url in calls:
        assert parse_qs(url.query) == {"key": [tool_project["key"]]}
    everything = json.dumps(logs)
    assert MOCK_LLM_KEY not in everything and CALLER_TOKEN not in everything


def test_wrong_caller_token_is_reported_without_echoing_it(tool_project: dict[str, Any]) -> None:
    api_keys = KeyChain({"tee_vault_key": [tool_project["key"]],
                         "tee_caller_token": ["wrong-token-abc"]})
    answer, prompt_used, *_ = mech_call(tool_project["package"], api_keys)
    assert answer.startswith("Error: the gateway answered HTTP 401: invalid_caller_token")
    assert "wrong-token-abc" not in answer and prompt_used == PROMPT


# --- a scripted stand-in gateway ------------------------------------------------------------


@dataclass
class ScriptedGateway:
    """STAND-IN gateway: answers each request with the next scripted reply, records requests."""

    script: list[tuple[int, bytes, dict[str, str], float]]
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        with self.lock:
            self.requests.append({"path": request.path, "headers": dict(request.headers),
                                  "body": json.loads(body) if body else None})
            status, payload, headers, delay = self.script[min(len(self.requests),
                                                              len(self.script)) - 1]
        if delay:
            time.sleep(delay)
        try:
            reply(request, status, payload, headers)
        except OSError:  # the client gave up first (the timeout case)
            pass


def ok_answer(message: str = "stand-in gateway answer") -> tuple[int, bytes, dict[str, str], float]:
    body = {"message": message, "model": "gpt-4o-mini",
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}
    return 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, 0.0


def html(status: int) -> tuple[int, bytes, dict[str, str], float]:
    page = b"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body>"
    return status, page, {"Content-Type": "text/html"}, 0.0


def json_reply(status: int, value: Any) -> tuple[int, bytes, dict[str, str], float]:
    return status, json.dumps(value).encode(), {"Content-Type": "application/json"}, 0.0


@pytest.fixture
def package(tool_project: dict[str, Any]) -> Path:
    return tool_project["package"]


def against(package_dir: Path, script: list[Any], api_keys: Any = None,
            **kwargs: Any) -> tuple[tuple[Any, ...], ScriptedGateway]:
    gateway = ScriptedGateway(script)
    with standin_http(gateway.handle) as url:
        constants = {**FAST, "GATEWAY_URLS": [url], **kwargs.pop("constants", {})}
        result = mech_call(package_dir, api_keys or keys(), constants=constants, **kwargs)
    return result, gateway


def assert_failure(result: tuple[Any, ...], api_keys: Any, *needles: str) -> str:
    answer, prompt_used, transaction, callback, returned_keys = result
    assert answer.startswith("Error: ")
    for needle in needles:
        assert needle in answer, answer
    assert (prompt_used, transaction, callback) == (PROMPT, None, None)
    assert returned_keys is api_keys
    assert CALLER_TOKEN not in answer
    return answer


def test_html_502_is_reported_once(package: Path) -> None:
    api_keys = keys()  # a 502 may come after the provider spent tokens: never repeated
    result, gateway = against(package, [html(502)], api_keys)
    assert_failure(result, api_keys, "HTTP 502: ", "Bad Gateway")
    assert "<" not in result[0] and "attempts" not in result[0]
    assert len(gateway.requests) == 1


def test_invalid_json_is_reported_once(package: Path) -> None:
    api_keys = keys()
    result, gateway = against(package, [(200, b"{not json", {}, 0.0)], api_keys)
    assert_failure(result, api_keys, "HTTP 200 with a body that is not JSON", "{not json")
    assert len(gateway.requests) == 1


def test_deeply_nested_answers_are_refused_without_crashing_the_mech(package: Path) -> None:
    import eth_account  # noqa: F401  # its py_ecc raises the recursion limit: the premise

    # With that limit, plain json.loads of this body kills the process (tests/test_jsonsafe.py
    # shows it in a control); the tool measures nesting first.
    assert sys.getrecursionlimit() >= 100_000
    deep = b"[" * 200_000 + b"]" * 200_000
    api_keys = keys()
    result, gateway = against(package, [(200, deep, {}, 0.0)], api_keys)
    assert_failure(result, api_keys, "HTTP 200 with a body that is not JSON")
    result, gateway = against(package, [(400, deep, {}, 0.0)], api_keys)
    assert_failure(result, api_keys, "HTTP 400")
    assert len(gateway.requests) == 1


def test_answer_without_message_is_reported(package: Path) -> None:
    api_keys = keys()
    result, gateway = against(package, [json_reply(200, {"model": "m", "usage": {}})], api_keys)
    assert_failure(result, api_keys, "malformed", "no 'message' string")
    assert len(gateway.requests) == 1


def test_contract_error_is_reported_with_its_code_and_not_retried(package: Path) -> None:
    api_keys = keys()
    error = {"error": {"code": "prompt_too_long", "message": "the prompt exceeds 8000 characters"}}
    result, gateway = against(package, [json_reply(400, error)], api_keys)
    assert_failure(result, api_keys, "HTTP 400: prompt_too_long: the prompt exceeds 8000")
    assert len(gateway.requests) == 1


def test_read_timeout_is_reported_and_not_retried(package: Path) -> None:
    api_keys = keys()
    slow = (*ok_answer()[:3], 1.5)  # the stand-in answers after 1.5 s, the tool waits 0.3 s
    result, gateway = against(package, [slow], api_keys, constants={"READ_TIMEOUT": 0.3})
    assert_failure(result, api_keys, "timeout", "within 0.3 s")
    assert len(gateway.requests) == 1


def test_connection_refused_is_retried_then_reported(package: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    url = f"http://127.0.0.1:{port}"
    api_keys = keys()
    constants = {**FAST, "GATEWAY_URLS": [url]}
    result = mech_call(package, api_keys, constants=constants)
    answer = assert_failure(result, api_keys, "connection refused", url, "after 4 attempts")
    assert "vault-key-1" not in answer


def test_429_rotates_the_vault_key_and_succeeds(package: Path) -> None:
    api_keys = keys(["vault-key-1", "vault-key-2"])
    counter = TokenCounter()
    result, gateway = against(package, [json_reply(429, {"error": "slow down"}), ok_answer()],
                              api_keys, counter_callback=counter)
    assert result == ("stand-in gateway answer", PROMPT, None, counter, api_keys)
    assert [parse_qs(urlsplit(r["path"]).query)["key"] for r in gateway.requests] == [
        ["vault-key-1"], ["vault-key-2"]]
    assert api_keys.rotations == ["tee_vault_key"]
    assert [(c["input"], c["output"]) for c in counter.calls] == [(7, 3)]


def test_503_twice_then_success_with_one_key(package: Path) -> None:
    api_keys = keys()
    script = [json_reply(503, {"error": {"code": "busy", "message": "retry"}})] * 2 + [ok_answer()]
    result, gateway = against(package, script, api_keys)
    assert result[0] == "stand-in gateway answer"
    assert len(gateway.requests) == 3 and api_keys.rotations == []
    request = gateway.requests[0]
    assert request["body"] == {"prompt": PROMPT, "model": "gpt-4o-mini"}
    assert request["headers"]["Authorization"] == f"Bearer {CALLER_TOKEN}"
    assert CALLER_TOKEN not in request["path"]


def test_unknown_tool_names_the_allowed_ones_without_calling(package: Path) -> None:
    api_keys = keys()
    result, gateway = against(package, [ok_answer()], api_keys, tool="openai-gpt-4")
    assert_failure(result, api_keys, "'openai-gpt-4' is not served here",
                   "allowed tools: " + ", ".join(ALLOWED))
    assert gateway.requests == []


def test_missing_vault_key_is_named(package: Path) -> None:
    api_keys = KeyChain({"tee_caller_token": [CALLER_TOKEN]})
    result, gateway = against(package, [ok_answer()], api_keys)
    assert_failure(result, api_keys, "api_keys has no 'tee_vault_key'")
    assert gateway.requests == []


def test_secrets_echoed_by_a_gateway_are_scrubbed(package: Path) -> None:
    api_keys = keys("vault-key-secret-1")
    echo = {"error": {"code": "bad", "message": f"got {CALLER_TOKEN} and vault-key-secret-1"}}
    result, _ = against(package, [json_reply(500, echo)], api_keys)
    answer = assert_failure(result, api_keys, "HTTP 500", "[redacted]")
    assert "vault-key-secret-1" not in answer


def test_a_failing_counter_callback_does_not_break_the_answer(package: Path) -> None:
    def unsupported_model(model: str, token_counter: Any, **kwargs: Any) -> None:
        raise ValueError(f"Model {model} not supported.")  # what the mech's counter does

    api_keys = keys()
    result, _ = against(package, [ok_answer()], api_keys, counter_callback=unsupported_model)
    assert result == ("stand-in gateway answer", PROMPT, None, unsupported_model, api_keys)


def test_forwarded_provider_key_travels_only_in_the_body(package: Path) -> None:
    api_keys = KeyChain({"tee_vault_key": ["vault-key-1"], "tee_caller_token": [CALLER_TOKEN],
                         "openai": ["test-forwarded-42"]})
    result, gateway = against(package, [ok_answer()], api_keys,
                              constants={"FORWARD_PROVIDER_KEY": True})
    assert result[0] == "stand-in gateway answer"
    request = gateway.requests[0]
    assert request["body"]["api_key"] == "test-forwarded-42"
    assert "test-forwarded-42" not in request["path"]
    assert parse_qs(urlsplit(request["path"]).query) == {"key": ["vault-key-1"]}


def test_a_connection_lost_after_sending_is_not_repeated(package: Path) -> None:
    received: list[int] = []

    def hang_up(request: BaseHTTPRequestHandler) -> None:  # reads the request, answers nothing
        request.rfile.read(int(request.headers.get("Content-Length") or 0))
        received.append(1)
        request.close_connection = True

    api_keys = keys()
    with standin_http(hang_up) as url:
        constants = {**FAST, "GATEWAY_URLS": [url]}
        result = mech_call(package, api_keys, constants=constants)
    assert_failure(result, api_keys, "the connection broke after the request was sent")
    assert received == [1]


# --- the real chain with the stand-in LLM's faults: upstream calls counted ------------------


def store_vault(tool_project: dict[str, Any], provider_key: str) -> str:
    """Another vault key for the deployed CID (the gateway gives each POST /vaults its own)."""
    answer = requests.post(f"{tool_project['gateway'].url}/vaults", timeout=10, json={
        "cid": tool_project["cid"], "data": {"apiKey": provider_key, "callerToken": CALLER_TOKEN},
    })
    return answer.json()["key"]


def timed_call(package_dir: Path, api_keys: Any, **extra: Any) -> tuple[tuple[Any, ...], float]:
    started = time.perf_counter()
    result = mech_call(package_dir, api_keys, constants=FAST, **extra)
    return result, time.perf_counter() - started


def test_provider_429_rotates_the_key_waits_retry_after_and_succeeds(
        tool_project: dict[str, Any], mock_llm: Any) -> None:
    api_keys = keys([tool_project["key"], store_vault(tool_project, MOCK_LLM_KEY)])
    mock_llm.fail_next(429, retry_after=1)
    result, seconds = timed_call(tool_project["package"], api_keys)
    assert result[0] == stand_in_answer(PROMPT)
    assert len(mock_llm.requests) == 2  # the rate-limited call spent nothing; one more call
    assert api_keys.rotations == ["tee_vault_key"]
    assert seconds >= 1.0  # the provider's Retry-After (1 s) came through the contract


def test_provider_401_is_reported_without_a_retry(tool_project: dict[str, Any],
                                                 mock_llm: Any) -> None:
    api_keys = keys([store_vault(tool_project, "not-the-provider-key"), tool_project["key"]])
    result, seconds = timed_call(tool_project["package"], api_keys)
    answer = assert_failure(result, api_keys, "the provider refused the credentials",
                            "HTTP 401: provider_unauthorized")
    assert "not-the-provider-key" not in answer
    assert len(mock_llm.requests) == 1 and api_keys.rotations == []
    assert seconds < 1.0


def test_provider_timeout_is_not_run_again(tool_project: dict[str, Any], mock_llm: Any) -> None:
    api_keys = keys(tool_project["key"])
    mock_llm.fail_next(None, delay=3.0)  # the contract waits 1 s (timeout_seconds)
    result, seconds = timed_call(tool_project["package"], api_keys)
    assert_failure(result, api_keys, "the provider timed out", "HTTP 504: provider_timeout")
    assert len(mock_llm.requests) == 1
    assert seconds < 2.5


def test_provider_failure_is_502_and_not_retried(tool_project: dict[str, Any],
                                                 mock_llm: Any) -> None:
    api_keys = keys(tool_project["key"])
    mock_llm.fail_next(500, count=4)
    result, _ = timed_call(tool_project["package"], api_keys)
    assert_failure(result, api_keys, "the provider failed", "HTTP 502: provider_error")
    assert len(mock_llm.requests) == 1


# --- billing: the mech's own callback rules (fixtures.mech.MechTokenCounterCallback) --------


def test_a_priced_model_is_billed_as_the_mech_computes_it(tool_project: dict[str, Any]) -> None:
    counter = MechTokenCounterCallback()
    result = mech_call(tool_project["package"], keys(tool_project["key"]),
                       tool="tee-test-agent-gpt-4", counter_callback=counter)
    assert result[0] == stand_in_answer(PROMPT)
    words_in = len(SYSTEM_PROMPT.split()) + len(PROMPT.split())
    cost_in, cost_out = words_in / 1000 * 0.03, 3 / 1000 * 0.06  # gpt-4's price per 1000
    assert counter.errors == [] and counter.actual_model == "gpt-4"
    assert counter.cost_dict == pytest.approx({
        "input_tokens": words_in, "output_tokens": 3, "total_tokens": words_in + 3,
        "input_cost": cost_in, "output_cost": cost_out, "total_cost": cost_in + cost_out,
    })
    assert cost_in_credits(counter.cost_dict) == math.ceil((cost_in + cost_out) * 100) == 1


def test_an_unpriced_model_is_answered_billed_zero_and_logged(
        tool_project: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    counter = MechTokenCounterCallback()
    with caplog.at_level(logging.WARNING):
        result = mech_call(tool_project["package"], keys(tool_project["key"]),
                           counter_callback=counter)
    assert result[0] == stand_in_answer(PROMPT)
    assert counter.cost_dict["total_cost"] == 0 and cost_in_credits(counter.cost_dict) == 0
    assert "refused model gpt-4o-mini" in caplog.text and "not billed" in caplog.text


# --- the model argument and the return shape ------------------------------------------------


def test_model_argument_outside_the_allow_list_is_refused(package: Path) -> None:
    api_keys = keys()
    result, gateway = against(package, [ok_answer()], api_keys, model="gpt-5")
    assert_failure(result, api_keys, "model 'gpt-5' is not allowed",
                   "allowed models: gpt-4o-mini, gpt-4")
    assert gateway.requests == []


def test_model_argument_naming_another_tool_is_refused(package: Path) -> None:
    api_keys = keys()
    result, gateway = against(package, [ok_answer()], api_keys, model="gpt-4")
    assert_failure(result, api_keys, "asks for model gpt-4 but tool tee-test-agent-gpt-4o-mini "
                   "serves gpt-4o-mini; use the tool tee-test-agent-gpt-4")
    assert gateway.requests == []


@pytest.mark.parametrize("model", [None, "gpt-4", "gpt-4o-mini"])
def test_tool_name_decides_when_the_model_agrees_or_is_the_default(package: Path,
                                                                   model: str | None) -> None:
    result, gateway = against(package, [ok_answer()], tool="tee-test-agent-gpt-4", model=model)
    assert result[0] == "stand-in gateway answer"
    assert gateway.requests[0]["body"]["model"] == "gpt-4"


def mech_unpack(task_result: tuple[Any, ...], *, newer: bool) -> dict[str, Any] | None:
    """The mech's reading of a tool's return (valory-xyz/mech task_execution behaviours.py,
    _handle_done_task): older mechs accept exactly 5 items, newer ones 5 or 6 (used_params
    fifth). None: the mech delivers "Invalid response"."""
    if task_result is None or (len(task_result) != 5 if not newer else len(task_result) < 5):
        return None
    if len(task_result) == 6:
        message, prompt, transaction, callback, used_params, keychain = task_result
    else:
        message, prompt, transaction, callback, keychain = task_result
        used_params = None
    return {"result": message, "prompt": prompt, "used_params": used_params, "keys": keychain}


def test_return_shape_for_older_and_newer_mechs(package: Path) -> None:
    api_keys = keys()
    five, _ = against(package, [ok_answer()], api_keys)
    assert mech_unpack(five, newer=False)["result"] == "stand-in gateway answer"
    assert mech_unpack(five, newer=True)["used_params"] is None
    six, _ = against(package, [ok_answer()], api_keys, constants={"RETURN_USED_PARAMS": True})
    assert mech_unpack(six, newer=False) is None  # why 5 items stay the default
    unpacked = mech_unpack(six, newer=True)
    assert unpacked["used_params"] == {"model": "gpt-4o-mini"} and unpacked["keys"] is api_keys
    failed, _ = against(package, [ok_answer()], api_keys, tool="nope",
                        constants={"RETURN_USED_PARAMS": True})
    assert len(failed) == 6 and failed[0].startswith("Error: ") and failed[4] is None


# --- mech-predict's CI rules ----------------------------------------------------------------

# tomte (valory-xyz/tomte) tomte/tools/check_copyright.py, commit
# 0819eea387c622cc53b398a2d3ea86e94a55cf82, as mech-predict's CI runs it (`tomte check-copyright
# --author valory`, .github/workflows/common_checks.yaml): optional shebang, the coding line,
# then this exact block; with one author the holder is "Valory AG", with several any of them
# (its multi-author regex); the start year lies in 2021..this year, and an end year, or the
# start year when there is none, must not be older than the file's last modification.
def copyright_header(holder: str) -> re.Pattern[str]:
    return re.compile(
        r"(#!/usr/bin/env python3\n)?# -\*- coding: utf-8 -\*-\n"
        r"# -{78}\n#\n"
        r"#   Copyright ((20\d\d)(-20\d\d)?) " + re.escape(holder) + r"\n#\n"
        r'#   Licensed under the Apache License, Version 2\.0 \(the "License"\);\n'
        r"#   you may not use this file except in compliance with the License\.\n"
        r"#   You may obtain a copy of the License at\n#\n"
        r"#       http://www\.apache\.org/licenses/LICENSE-2\.0\n#\n"
        r"#   Unless required by applicable law or agreed to in writing, software\n"
        r'#   distributed under the License is distributed on an "AS IS" BASIS,\n'
        r"#   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied\.\n"
        r"#   See the License for the specific language governing permissions and\n"
        r"#   limitations under the License\.\n#\n"
        r"# -{78}\n"
    )


# tomte v0.7.0 (what mech-predict's pyproject pins) configs/mypy.ini [mypy], plus mech-predict's
# own tox.ini overrides (valory-xyz/mech-predict tox.ini, commit
# 00dfd55e7674284183e4603ec51872bc168b24e3); run as `mypy --config-file=... --disallow-untyped-defs`.
MYPY_INI = """\
[mypy]
python_version = 3.10
strict_optional = True
warn_unused_ignores = False
warn_redundant_casts = False
disable_error_code = redundant-cast,unused-ignore
no_implicit_optional = True
check_untyped_defs = True
disallow_untyped_defs = True
disallow_incomplete_defs = True
disallow_untyped_decorators = False
ignore_missing_imports = False
follow_imports = normal
namespace_packages = True
explicit_package_bases = True

[mypy-requests]
ignore_missing_imports = True

[mypy-requests.*]
ignore_missing_imports = True
"""


def tool_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def test_package_passes_mech_predicts_ci_checks(package: Path, tmp_path: Path) -> None:
    black = subprocess.run([tool_bin("black"), "--check", "--diff", str(package)],
                           capture_output=True, text=True, timeout=120, check=False)
    assert black.returncode == 0, black.stdout + black.stderr
    (tmp_path / "mypy.ini").write_text(MYPY_INI)
    mypy = subprocess.run(
        [tool_bin("mypy"), f"--config-file={tmp_path / 'mypy.ini'}", "--disallow-untyped-defs",
         "--cache-dir", str(tmp_path / "cache"), str(package)],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert mypy.returncode == 0, mypy.stdout + mypy.stderr
    this_year = datetime.now(timezone.utc).year
    for source in sorted(package.glob("*.py")):
        match = copyright_header("dev").match(source.read_text())
        assert match is not None, source
        years = [int(y) for y in match.group(2).split("-")]
        assert 2021 <= years[0] <= this_year and years[-1] == this_year


def test_licence_header_for_valory_packages(tool_project: dict[str, Any]) -> None:
    from kit.mech.package import ToolOptions

    result = generate_tool(tool_project["project"], version="0.2.0",
                           options=ToolOptions(copyright_holder="Valory AG"))
    for source in sorted(result.package_dir.glob("*.py")):
        assert copyright_header("Valory AG").match(source.read_text()), source


# --- replicas (agent.toml tool.gateways) ----------------------------------------------------


class _Start:
    """Stands in for the tool's `random` module: every call starts at replica `index`."""

    def __init__(self, index: int) -> None:
        self.index = index

    def randrange(self, n: int) -> int:
        return self.index % n


def _dead_url() -> str:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}"


def test_calls_spread_over_replicas_and_skip_one_that_is_down(
        package: Path, tool_project: dict[str, Any]) -> None:
    import random

    _, namespace = load_like_mech(package)
    # no tool.gateways set: the deployment's gateway alone
    assert namespace["GATEWAY_URLS"] == [tool_project["gateway"].url.rstrip("/")]
    first, second = ScriptedGateway([ok_answer()]), ScriptedGateway([ok_answer()])
    with standin_http(first.handle) as one, standin_http(second.handle) as two:
        urls = [_dead_url(), one, two]
        results = [mech_call(package, keys(), constants={
            **FAST, "GATEWAY_URLS": urls, "random": random.Random(seed)})[0]
            for seed in range(12)]
    assert results == ["stand-in gateway answer"] * 12
    assert len(first.requests) + len(second.requests) == 12
    assert first.requests and second.requests  # spread, not pinned to one replica


def test_503_moves_to_the_next_replica_at_once(package: Path) -> None:
    busy = ScriptedGateway([json_reply(503, {"error": {"code": "busy", "message": "full"}})])
    free = ScriptedGateway([ok_answer()])
    with standin_http(busy.handle) as one, standin_http(free.handle) as two:
        started = time.monotonic()
        result = mech_call(package, keys(), constants={
            **FAST, "BACKOFF_BASE": 5.0, "GATEWAY_URLS": [one, two], "random": _Start(0)})
        elapsed = time.monotonic() - started
    assert result[0] == "stand-in gateway answer"
    assert (len(busy.requests), len(free.requests)) == (1, 1) and elapsed < 4.0  # no back-off


@pytest.mark.parametrize("reply_", [
    json_reply(502, {"error": {"code": "provider_error", "message": "upstream"}}),
    json_reply(504, {"error": {"code": "provider_timeout", "message": "slow"}}),
    (200, b"not json", {"Content-Type": "text/plain"}, 0.0),
])
def test_failures_that_may_have_spent_tokens_never_go_to_another_replica(
        package: Path, reply_: Any) -> None:
    first, second = ScriptedGateway([reply_]), ScriptedGateway([ok_answer()])
    with standin_http(first.handle) as one, standin_http(second.handle) as two:
        result = mech_call(package, keys(), constants={
            **FAST, "GATEWAY_URLS": [one, two], "random": _Start(0)})
    assert result[0].startswith("Error: ")
    assert (len(first.requests), len(second.requests)) == (1, 0)


def test_a_read_timeout_is_not_repeated_on_another_replica(package: Path) -> None:
    slow, other = ScriptedGateway([(*ok_answer()[:3], 3.0)]), ScriptedGateway([ok_answer()])
    with standin_http(slow.handle) as one, standin_http(other.handle) as two:
        result = mech_call(package, keys(), constants={
            **FAST, "READ_TIMEOUT": 0.5, "GATEWAY_URLS": [one, two], "random": _Start(0)})
    assert result[0].startswith("Error: timeout")
    assert (len(slow.requests), len(other.requests)) == (1, 0)


def test_tool_gateways_are_checked_in_agent_toml(tmp_path: Path) -> None:
    from kit.contract.config import ConfigError, parse_config

    base = {"agent": {"name": "replica-agent"}, "provider": {"kind": "openai"}}
    config = parse_config({**base, "tool": {"gateways": ["https://a.example/",
                                                         "https://b.example"]}}, tmp_path)
    assert config.tool.gateways == ("https://a.example", "https://b.example")
    for bad in (["https://a.example", "https://a.example/"], ["ftp://x"], ["https://u:p@h"],
                "https://a.example"):
        with pytest.raises(ConfigError, match="tool.gateways"):
            parse_config({**base, "tool": {"gateways": bad}}, tmp_path)
