"""The rendered contract, run in a real JavaScript engine (Node.js, through the gen-1 harness of
tests/fixtures/projects.py): hostile configured values survive exactly, the output is
deterministic, the CID matches an independent implementation, and the contract's HTTP logic
(errors, provider formats, timeout) behaves as documented."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import aleph_cid
import pytest
from jinja2.exceptions import SecurityError, UndefinedError

from fixtures.projects import gen1_request, run_in_node
from kit.cli import main
from kit.contract.config import PROVIDER_KINDS, load_config, parse_config
from kit.contract.render import (
    TEMPLATE_VERSION,
    contract_parameters,
    load_schema,
    render_contract,
    template_environment,
)

ProjectFactory = Callable[..., Path]
KEY = "test-provider-key-0123456789"
TOKEN = "caller-token-abcdef"

HOSTILE = (
    "quote \" apostrophe ' backslash \\ backtick ` template ${globalThis.x} "
    "</script><script>alert(1)</script> <!-- --> ]]> & \u2028 line sep \u2029 para sep "
    "\\u2028 literal escape, emoji \U0001F600, accents \u00e9\u00e8, CJK \u4e2d\u6587\n\ttab"
)


def contract(project: Path) -> Path:
    return project / "dist" / "agent.js"


def info(project: Path) -> dict[str, Any]:
    answer = run_in_node(contract(project), gen1_request("GET", "/info"))
    assert answer.status == 200
    return answer.json


# --- hostile values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("description", "system_prompt"),
    [
        pytest.param(HOSTILE, HOSTILE + "\0 NUL \0", id="hostile"),
        pytest.param("d" * 100, (HOSTILE * 400)[:100_000], id="100k-system-prompt"),
        pytest.param((HOSTILE.replace("\n", " ").replace("\t", " ") * 300)[:100_000], "s",
                     id="100k-description"),
    ],
)
def test_hostile_values_come_back_exactly(
    project_factory: ProjectFactory, description: str, system_prompt: str
) -> None:
    models = ["gpt-4o-mini", "org/model:v1@2024", "a.b_c-d"]
    project = project_factory(
        description=description, system_prompt=system_prompt, models=models, max_prompt_chars=77
    )
    data = contract(project).read_bytes()
    for unsafe in (b"</script", b"<!--", "\u2028".encode(), "\u2029".encode(), b"\0"):
        assert unsafe not in data

    got = info(project)

    assert got["agent"]["description"] == description
    assert got["agent"]["system_prompt"] == system_prompt
    assert got["agent"]["max_prompt_chars"] == 77
    assert got["provider"]["models"] == models


def test_info_reports_the_whole_public_configuration(project_factory: ProjectFactory) -> None:
    project = project_factory(
        name="info-agent", provider="anthropic", base_url="http://127.0.0.1:9/v1/",
        default_model="claude-3-5-sonnet-latest", caller_token_secret="callerToken",
        timeout_seconds=7, max_tokens=99, accept_key_in_body=True,
    )
    assert info(project) == {
        "agent": {
            "name": "info-agent", "description": "", "max_prompt_chars": 8000,
            "system_prompt": "You are a helpful assistant.", "caller_token_required": True,
        },
        "provider": {
            "kind": "anthropic", "base_url": "http://127.0.0.1:9/v1",
            "models": ["claude-3-5-haiku-latest", "claude-3-5-sonnet-latest"],
            "default_model": "claude-3-5-sonnet-latest", "accept_key_in_body": True,
            "timeout_seconds": 7, "max_tokens": 99,
        },
        "template_version": TEMPLATE_VERSION,
    }


# --- determinism, CID, template hygiene ---------------------------------------------------------


def test_same_config_gives_identical_bytes_anywhere(project_factory: ProjectFactory) -> None:
    first = project_factory(description=HOSTILE)
    second = project_factory(description=HOSTILE)
    (second / "agent.toml").write_text((first / "agent.toml").read_text())  # byte-equal config
    assert render_contract(load_config(first)) == render_contract(load_config(second))
    assert contract(first).read_bytes() == render_contract(load_config(second))
    assert b"\r" not in contract(first).read_bytes()


def test_gateway_ipfs_and_tool_settings_do_not_change_the_contract(
    project_factory: ProjectFactory,
) -> None:
    base = project_factory()
    other = project_factory(gateway_url="https://gw.example", cid_version=1, tool_author="acme")
    assert contract(base).read_bytes() == contract(other).read_bytes()


@pytest.mark.parametrize(
    ("version", "oracle"),
    [(0, aleph_cid.CidHasher.for_ipfs), (1, aleph_cid.CidHasher.for_ipfs_v1_raw_leaves)],
)
def test_printed_cid_matches_an_independent_implementation(
    project_factory: ProjectFactory, capsys: pytest.CaptureFixture[str], version: int,
    oracle: Callable[[], Any],
) -> None:
    project = project_factory(system_prompt="x" * 300_000)  # several chunks: a real DAG
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "-C", str(project), "--cid-version", str(version)])
    printed = capsys.readouterr().out.strip()
    assert exit_info.value.code == 0
    hasher = oracle()
    hasher.update(contract(project).read_bytes())
    assert printed == hasher.finalize()
    if version == 0:
        assert printed == aleph_cid.compute_cid(contract(project).read_bytes())


def test_environment_is_sandboxed_and_strict() -> None:
    environment = template_environment()
    with pytest.raises(UndefinedError):
        environment.from_string("{{ nothing | js }}").render()
    with pytest.raises(UndefinedError):
        environment.from_string("{{ config.agent.missing | js }}").render(config={"agent": {}})
    with pytest.raises(SecurityError):
        environment.from_string("{{ x.__class__.__mro__ }}").render(x="")


def test_schema_documents_every_contract_parameter_with_its_default(tmp_path: Path) -> None:
    schema = load_schema()["parameters"]
    assert all(set(p) >= {"name", "type", "default", "description"} for p in schema)
    contract_fields = {
        f"{section}.{key}"
        for section in ("agent", "provider", "privacy", "contract")
        for key in parse_config({"agent": {"name": "demo"}}, tmp_path).to_dict()[section]
    }
    assert {parameter["name"] for parameter in schema} == contract_fields
    for kind in PROVIDER_KINDS:
        config = parse_config({"agent": {"name": "demo"}, "provider": {"kind": kind}}, tmp_path)
        values = contract_parameters(config)
        for parameter in schema:
            section, key = parameter["name"].split(".")
            expected = parameter.get("default_by_kind", {}).get(kind, parameter["default"])
            if parameter["name"] in {"agent.name", "provider.kind", "provider.default_model"}:
                continue  # required, chosen above, or derived from the models
            assert values[section][key] == expected, parameter["name"]


# --- contract logic without a provider ------------------------------------------------------


def error_of(answer: Any) -> tuple[int, str]:
    assert answer.headers == {"content-type": "application/json"}
    body = answer.json
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return answer.status, body["error"]["code"]


@pytest.fixture
def offline_project(project_factory: ProjectFactory) -> Path:
    # Port 9 (discard) on loopback: nothing listens, and these requests never get that far.
    return project_factory(base_url="http://127.0.0.1:9/v1", max_prompt_chars=10)


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        pytest.param(gen1_request("GET", queries={"chatQuery": ["hi"]}),
                     (401, "missing_api_key"), id="get-without-key"),
        pytest.param(gen1_request("POST", body='{"prompt": "hi"}', secret={}),
                     (401, "missing_api_key"), id="post-without-key"),
        pytest.param(gen1_request("GET", queries={"chatQuery": ["hi"], "openAiModel": ["gpt-5"]},
                                  secret={"openaiApiKey": KEY}),
                     (403, "model_not_allowed"), id="disallowed-model"),
        pytest.param(gen1_request("POST", body='{"prompt": "12345678901"}',
                                  secret={"openaiApiKey": KEY}),
                     (400, "prompt_too_long"), id="prompt-too-long"),
        pytest.param(gen1_request("POST", body='{"prompt": "hi", "system": "12345678901"}',
                                  secret={"openaiApiKey": KEY}),
                     (400, "prompt_too_long"), id="system-too-long"),
        pytest.param(gen1_request("POST", body='{"prompt": ', secret={"openaiApiKey": KEY}),
                     (400, "invalid_json"), id="bad-json"),
        pytest.param(gen1_request("POST", body='["hi"]'), (400, "invalid_json"), id="json-array"),
        pytest.param(gen1_request("POST", body='{"model": "gpt-4o"}'),
                     (400, "missing_prompt"), id="no-prompt"),
        pytest.param(gen1_request("GET", queries={"openAiModel": ["gpt-4o"]}),
                     (400, "missing_prompt"), id="no-chat-query"),
        pytest.param(gen1_request("POST", body='{"prompt": "hi", "max_tokens": 1.5}'),
                     (400, "invalid_max_tokens"), id="fractional-max-tokens"),
        pytest.param(gen1_request("POST", body='{"prompt": "hi", "temperature": 3}'),
                     (400, "invalid_temperature"), id="temperature-out-of-range"),
        pytest.param(gen1_request("POST", body=json.dumps({"prompt": "hi", "api_key": KEY})),
                     (400, "api_key_not_accepted"), id="key-in-body-not-accepted"),
        pytest.param(gen1_request("DELETE"), (405, "method_not_allowed"), id="delete"),
        pytest.param(gen1_request("PUT", body="{}"), (405, "method_not_allowed"), id="put"),
        pytest.param(gen1_request("POST", "/info", body="{}"), (405, "method_not_allowed"),
                     id="post-info"),
        pytest.param(gen1_request("GET", "/admin"), (404, "not_found"), id="unknown-route"),
    ],
)
def test_contract_rejects_bad_requests(
    offline_project: Path, request_: dict[str, Any], expected: tuple[int, str]
) -> None:
    answer = run_in_node(contract(offline_project), request_)
    print(answer.output)
    assert error_of(answer) == expected
    assert KEY not in answer.output["body"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong-token-abcdef"}, {"authorization": TOKEN},
     {"authorization": "Bearer " + TOKEN + "x"}, {"authorization": "Basic " + TOKEN}],
    ids=["missing", "wrong", "no-bearer", "longer", "basic"],
)
def test_wrong_caller_token_is_refused(project_factory: ProjectFactory, headers: dict) -> None:
    project = project_factory(caller_token_secret="callerToken", base_url="http://127.0.0.1:9/v1")
    request = gen1_request("POST", body='{"prompt": "hi"}', headers=headers,
                           secret={"callerToken": TOKEN, "openaiApiKey": KEY})
    answer = run_in_node(contract(project), request)
    assert error_of(answer) == (401, "invalid_caller_token")
    assert TOKEN not in answer.output["body"] and KEY not in answer.output["body"]


def test_caller_token_without_a_stored_token_refuses_everyone(
    project_factory: ProjectFactory,
) -> None:
    project = project_factory(caller_token_secret="callerToken")
    request = gen1_request(
        "GET", queries={"chatQuery": ["hi"]}, headers={"authorization": "Bearer "}
    )
    assert error_of(run_in_node(contract(project), request)) == (401, "invalid_caller_token")


def test_unparseable_request_becomes_a_gen1_failure(offline_project: Path) -> None:
    answer = run_in_node(contract(offline_project), "not json")  # type: ignore[arg-type]
    assert answer.output["success"] is False
    assert isinstance(answer.output["error"], str)


# --- contract against a real HTTP provider on 127.0.0.1 -------------------------------------


@dataclass
class Provider:
    """A scripted provider: answers every POST with (status, body) after `delay` seconds."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def provider() -> Iterator[Provider]:
    script = Provider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            length = int(self.headers.get("content-length", 0))
            script.received.append({
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "json": json.loads(self.rfile.read(length)),
            })
            time.sleep(script.delay)
            payload = script.body if isinstance(script.body, bytes) else json.dumps(script.body)
            data = payload.encode() if isinstance(payload, str) else payload
            try:
                self.send_response(script.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the contract gave up (timeout test)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield script
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


OPENAI_ANSWER = {
    "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello \u2028 \"there\""},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
}
ANTHROPIC_ANSWER = {
    "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-5-haiku-20241022",
    "content": [{"type": "text", "text": "Bonjour"}, {"type": "text", "text": " !"}],
    "stop_reason": "end_turn", "usage": {"input_tokens": 9, "output_tokens": 4},
}


def assert_signed(proof: dict[str, Any], body: dict[str, Any], *, prompt: str,
                  system: str) -> None:
    """The answer's proof, checked with eth-account (EIP-191) and hashlib, not with the kit."""
    import hashlib

    from eth_account import Account
    from eth_account.messages import encode_defunct

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    assert (proof["version"], proof["cid"], proof["model"]) == (1, "QmTestContract", body["model"])
    assert proof["prompt_sha256"] == sha(prompt) and proof["system_sha256"] == sha(system)
    assert proof["answer_sha256"] == sha(body["message"])
    text = "\n".join(["agent-contract-kit answer v1"] + [
        f"{name}: {proof[name]}" for name in ("cid", "model", "system_sha256", "prompt_sha256",
                                              "answer_sha256", "provider_proof_sha256")])
    signer = Account.recover_message(encode_defunct(text=text), signature=proof["signature"])
    assert signer == proof["signer"]


def test_openai_round_trip_with_the_get_convention(
    project_factory: ProjectFactory, provider: Provider
) -> None:
    provider.body = OPENAI_ANSWER
    project = project_factory(base_url=provider.url, system_prompt="Be brief.", max_tokens=64)
    request = gen1_request("GET", queries={"chatQuery": ["Say hi"], "openAiModel": ["gpt-4o"]},
                           secret={"openaiApiKey": KEY})

    answer = run_in_node(contract(project), request)

    assert answer.status == 200 and answer.headers["content-type"] == "application/json"
    body = answer.json
    assert_signed(body.pop("proof"), body, prompt="Say hi", system="Be brief.")
    assert body == {
        "message": "Hello \u2028 \"there\"", "model": "gpt-4o-mini-2024-07-18",
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
    [sent] = provider.received
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer " + KEY
    assert sent["json"] == {
        "model": "gpt-4o", "max_tokens": 64,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Say hi"}],
    }


def test_anthropic_round_trip_with_post_and_caller_token(
    project_factory: ProjectFactory, provider: Provider
) -> None:
    provider.body = ANTHROPIC_ANSWER
    project = project_factory(provider="anthropic", base_url=provider.url,
                              caller_token_secret="callerToken", max_tokens=500)
    body = {"prompt": "Salut", "system": "Answer in French.", "max_tokens": 100, "temperature": 0.5}
    request = gen1_request("POST", body=json.dumps(body),
                           headers={"authorization": "Bearer " + TOKEN},
                           secret={"anthropicApiKey": KEY, "callerToken": TOKEN})

    answer = run_in_node(contract(project), request)

    assert answer.status == 200
    body = answer.json
    assert_signed(body.pop("proof"), body, prompt="Salut", system="Answer in French.")
    assert body == {
        "message": "Bonjour !", "model": "claude-3-5-haiku-20241022",
        "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13},
    }
    [sent] = provider.received
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == KEY
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "authorization" not in sent["headers"]
    assert sent["json"] == {
        "model": "claude-3-5-haiku-latest", "system": "Answer in French.", "max_tokens": 100,
        "temperature": 0.5, "messages": [{"role": "user", "content": "Salut"}],
    }


def test_key_in_body_is_used_when_allowed(
    project_factory: ProjectFactory, provider: Provider
) -> None:
    provider.body = OPENAI_ANSWER
    project = project_factory(provider="openai-compatible", base_url=provider.url,
                              accept_key_in_body=True)
    request = gen1_request("POST", body=json.dumps({"prompt": "hi", "api_key": KEY}))
    assert run_in_node(contract(project), request).status == 200
    assert provider.received[0]["headers"]["authorization"] == "Bearer " + KEY


@pytest.mark.parametrize(
    ("status", "body", "code", "answered"),
    [
        (401, {"error": {"message": f"Incorrect API key provided: {KEY}"}},
         "provider_unauthorized", 401),
        (500, b"<html>upstream down</html>", "provider_error", 502),
        (200, b"not json", "provider_malformed", 502),
        (200, {"choices": []}, "provider_malformed", 502),
        (200, {"choices": [{"message": {"content": None}}]}, "provider_malformed", 502),
    ],
    ids=["401-echoing-key", "500-html", "200-not-json", "200-no-choices", "200-null-content"],
)
def test_provider_failures_are_reported_without_the_key(
    project_factory: ProjectFactory, provider: Provider, status: int, body: Any, code: str,
    answered: int,
) -> None:
    provider.status, provider.body = status, body
    project = project_factory(base_url=provider.url)
    request = gen1_request("GET", queries={"chatQuery": ["hi"]}, secret={"openaiApiKey": KEY})

    answer = run_in_node(contract(project), request)

    assert error_of(answer) == (answered, code)
    assert f"HTTP {status}" in answer.json["error"]["message"]
    assert KEY not in answer.output["body"]


def test_unreachable_provider_is_502(project_factory: ProjectFactory) -> None:
    project = project_factory(base_url="http://127.0.0.1:9/v1")
    request = gen1_request("GET", queries={"chatQuery": ["hi"]}, secret={"openaiApiKey": KEY})
    assert error_of(run_in_node(contract(project), request)) == (502, "provider_unreachable")


def test_slow_provider_is_504(project_factory: ProjectFactory, provider: Provider) -> None:
    provider.body, provider.delay = OPENAI_ANSWER, 3.0
    project = project_factory(base_url=provider.url, timeout_seconds=1)
    request = gen1_request("GET", queries={"chatQuery": ["hi"]}, secret={"openaiApiKey": KEY})
    assert error_of(run_in_node(contract(project), request)) == (504, "provider_timeout")
