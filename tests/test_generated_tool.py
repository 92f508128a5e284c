"""The generated tool, loaded and called exactly as a Valory mech does (fixtures.mech).

First against the real chain: the local gateway serving the deployed CID from the IPFS node,
the contract in the local runtime, the stand-in LLM. The expected answer and token counts come
from the stand-in's documented formula, computed here. Then against a scripted stand-in
gateway (labelled as such) for the answers a real gateway gives when things go wrong.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from fixtures.ipfs_node import RunningNode, reply, standin_http
from fixtures.mech import KeyChain, TokenCounter, load_like_mech
from fixtures.servers import MOCK_LLM_KEY
from kit.deploy import deploy
from kit.mechtool import generate_tool

CALLER_TOKEN = "caller-token-5f2d9a"
PROMPT = "When did humans first land on the Moon?"
SYSTEM_PROMPT = "You answer briefly."
TOOL = "tee-test-agent-gpt-4o-mini"
ALLOWED = ["tee-test-agent-gpt-4o-mini", "tee-test-agent-stand-in-large"]
FAST = {"BACKOFF_BASE": 0.01, "BACKOFF_MAX": 0.05, "CONNECT_TIMEOUT": 2.0, "READ_TIMEOUT": 5.0}


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
        models=("gpt-4o-mini", "stand-in-large"), caller_token_secret="callerToken",
        system_prompt=SYSTEM_PROMPT,
    )
    cid = deploy(project, ipfs_api=ipfs_node.api).cid
    vault = requests.post(f"{gateway.url}/vaults", timeout=10, json={
        "cid": cid, "data": {"apiKey": MOCK_LLM_KEY, "callerToken": CALLER_TOKEN},
    }).json()
    result = generate_tool(project)
    yield {"gateway": gateway, "cid": cid, "key": vault["key"], "package": result.package_dir}


def mech_call(package_dir: Path, api_keys: Any, *, tool: str = TOOL,
              constants: dict[str, Any] | None = None, **extra: Any) -> tuple[Any, ...]:
    run, namespace = load_like_mech(package_dir)
    namespace.update(constants or {})
    return run(tool=tool, prompt=PROMPT, nonce="0x01", model="gpt-4o-mini", api_keys=api_keys,
               **extra)


def keys(vault_key: str | list[str] = "vault-key-1") -> KeyChain:
    vault_keys = vault_key if isinstance(vault_key, list) else [vault_key]
    return KeyChain({"tee_vault_key": vault_keys, "tee_caller_token": [CALLER_TOKEN]})


# --- the real chain -------------------------------------------------------------------------


def test_answers_through_the_local_gateway_and_contract(tool_project: dict[str, Any],
                                                        mock_llm: Any) -> None:
    api_keys = keys(tool_project["key"])
    counter = TokenCounter()
    result = mech_call(tool_project["package"], api_keys, counter_callback=counter)

    assert len(result) == 5
    answer, prompt_used, transaction, callback, returned_keys = result
    assert answer == stand_in_answer(PROMPT)
    assert prompt_used == PROMPT
    assert transaction is None
    assert callback is counter and returned_keys is api_keys
    words_in = len(SYSTEM_PROMPT.split()) + len(PROMPT.split())
    assert [(c["model"], c["input"], c["output"]) for c in counter.calls] == [
        ("gpt-4o-mini", words_in, 3)]
    assert counter.calls[0]["kwargs"]["total_tokens"] == words_in + 3

    # with the vault key the contract got the secret: the provider saw the stored key
    provider_call = mock_llm.requests[-1]
    assert provider_call.headers["authorization"] == f"Bearer {MOCK_LLM_KEY}"
    assert provider_call.json["model"] == "gpt-4o-mini"


def test_gateway_requests_carry_no_provider_key_or_token_in_urls(
        tool_project: dict[str, Any]) -> None:
    mech_call(tool_project["package"], keys(tool_project["key"]), counter_callback=None)
    gateway, cid = tool_project["gateway"], tool_project["cid"]
    logs = requests.get(f"{gateway.url}/logs/all/ipfs/{cid}?format=json", timeout=10).json()
    starts = [r["message"] for r in logs if r["message"].startswith("START Request:")]
    assert starts, logs
    for line in starts:
        target = line.split(" ", 3)[3]
        url = urlsplit(target)
        assert url.path == f"/ipfs/{cid}"
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
        _, namespace = load_like_mech(package_dir)
        constants = {**FAST, "GATEWAY_URL": url, "AGENT_URL": f"{url}/ipfs/{namespace['CID']}",
                     **kwargs.pop("constants", {})}
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


def test_html_502_is_retried_then_reported(package: Path) -> None:
    api_keys = keys()
    result, gateway = against(package, [html(502)], api_keys)
    assert_failure(result, api_keys, "HTTP 502 after 4 attempts", "Bad Gateway")
    assert "<" not in result[0]
    assert len(gateway.requests) == 4


def test_invalid_json_is_reported_once(package: Path) -> None:
    api_keys = keys()
    result, gateway = against(package, [(200, b"{not json", {}, 0.0)], api_keys)
    assert_failure(result, api_keys, "HTTP 200 with a body that is not JSON", "{not json")
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
    _, namespace = load_like_mech(package)
    constants = {**FAST, "GATEWAY_URL": url, "AGENT_URL": f"{url}/ipfs/{namespace['CID']}"}
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
