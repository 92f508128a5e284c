"""The real contract template end to end: HTTP client -> local gateway -> QuickJS contract ->
stand-in LLM on loopback, for both provider shapes, and every documented error status (the
provider's failures each with their own status and code: 429 + Retry-After, 401, 403, 502, 504).

Expected answers and token counts are computed here from the stand-in's documented rule
(sha256 of the prompt; word counts), CIDs by an independent implementation (aleph-cid).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from fixtures.ipfs_node import oracle_cid
from fixtures.servers import MOCK_LLM_KEY

TIMEOUT = 30
SYSTEM_PROMPT = "Answer briefly."  # 2 words
MODELS = ["model-a", "model-b"]
CALLER_TOKEN = "caller-token-for-tests"
PROVIDERS = ["openai", "anthropic"]


def expected_answer(prompt: str) -> str:
    return "stand-in answer: " + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def expected_usage(prompt: str) -> dict[str, int]:
    prompt_tokens = len(SYSTEM_PROMPT.split()) + len(prompt.split())
    return {"prompt_tokens": prompt_tokens, "completion_tokens": 3,
            "total_tokens": prompt_tokens + 3}


@dataclass
class Agent:
    url: str  # <gateway>/ipfs/<cid>
    key: str  # the vault key, sent as ?key=
    provider: str
    answers: list[requests.Response]

    def get(self, *, key: bool = True, **queries: str) -> requests.Response:
        params = {**queries, **({"key": self.key} if key else {})}
        return self._keep(requests.get(self.url, params=params, timeout=TIMEOUT))

    def post(self, body: object = None, *, data: bytes | None = None, key: bool = True,
             headers: dict[str, str] | None = None) -> requests.Response:
        params = {"key": self.key} if key else {}
        return self._keep(requests.post(self.url, params=params, json=body, data=data,
                                        headers=headers, timeout=TIMEOUT))

    def _keep(self, answer: requests.Response) -> requests.Response:
        self.answers.append(answer)
        return answer


@pytest.fixture
def make_agent(project_factory, mock_llm, local_gateway_factory):
    made: list[Agent] = []

    def make(provider: str, *, secrets: dict[str, str] | None = None, **overrides) -> Agent:
        base_url = overrides.pop("base_url", mock_llm.base_url)
        project: Path = project_factory(
            provider=provider, base_url=base_url, models=MODELS, key_secret="llmKey",
            system_prompt=SYSTEM_PROMPT, timeout_seconds=1, **overrides)
        cid = oracle_cid((project / "dist" / "agent.js").read_bytes(), 0)
        gateway = local_gateway_factory(project)
        stored = requests.post(f"{gateway.url}/vaults", timeout=TIMEOUT, json={
            "cid": cid, "data": secrets if secrets is not None else {"llmKey": MOCK_LLM_KEY}})
        agent = Agent(f"{gateway.url}/ipfs/{cid}", stored.json()["key"], provider, [])
        made.append(agent)
        return agent

    yield make
    for agent in made:  # no secret value ever comes back, whatever the test did
        for answer in agent.answers:
            assert MOCK_LLM_KEY not in answer.text
            assert CALLER_TOKEN not in answer.text


def error_code(answer: requests.Response, status: int) -> str:
    assert answer.status_code == status, answer.text
    return answer.json()["error"]["code"]


# ---- answers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_post_answer_comes_from_the_stand_in(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    prompt = "what is the capital of France"
    answer = agent.post({"prompt": prompt, "model": "model-b"})
    assert answer.status_code == 200, answer.text
    body = answer.json()  # (its signed "proof" is tests/test_contract_signing.py's concern)
    assert {name: body[name] for name in ("message", "model", "usage")} == {
        "message": expected_answer(prompt), "model": "model-b", "usage": expected_usage(prompt)}
    sent = mock_llm.requests[-1]
    assert sent.path == ("/v1/messages" if provider == "anthropic" else "/v1/chat/completions")
    assert sent.json["model"] == "model-b"
    assert MOCK_LLM_KEY not in sent.path  # the key travels in a header, never in a URL


@pytest.mark.parametrize("provider", PROVIDERS)
def test_get_with_chat_query_and_model(make_agent, provider):
    agent = make_agent(provider)
    prompt = "héllo wörld, ünïcode ✓"
    answer = agent.get(chatQuery=prompt, openAiModel="model-a")
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == expected_answer(prompt)
    assert answer.json()["usage"] == expected_usage(prompt)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_default_model_is_the_first_allowed(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    answer = agent.post({"prompt": "hi"})
    assert answer.json()["model"] == "model-a"
    assert mock_llm.requests[-1].json["model"] == "model-a"


def test_info_needs_no_key_and_shows_no_secret(make_agent):
    agent = make_agent("openai")
    answer = agent._keep(requests.get(f"{agent.url}/info", timeout=TIMEOUT))
    assert answer.status_code == 200
    assert answer.json()["provider"]["models"] == MODELS


# ---- documented errors -------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
def test_bad_json_is_400(make_agent, provider):
    agent = make_agent(provider)
    answer = agent.post(data=b"{not json", headers={"content-type": "application/json"})
    assert error_code(answer, 400) == "invalid_json"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_prompt_too_long_is_400(make_agent, mock_llm, provider):
    agent = make_agent(provider, max_prompt_chars=20)
    assert error_code(agent.post({"prompt": "x" * 21}), 400) == "prompt_too_long"
    assert agent.post({"prompt": "x" * 20}).status_code == 200
    assert len(mock_llm.requests) == 1  # the rejected prompt never reached the provider


@pytest.mark.parametrize("provider", PROVIDERS)
def test_no_key_is_401(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    assert error_code(agent.post({"prompt": "hi"}, key=False), 401) == "missing_api_key"
    assert error_code(agent.get(chatQuery="hi", key=False), 401) == "missing_api_key"
    assert mock_llm.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_caller_token(make_agent, provider):
    agent = make_agent(provider, caller_token_secret="callerToken",
                       secrets={"llmKey": MOCK_LLM_KEY, "callerToken": CALLER_TOKEN})
    wrong = agent.post({"prompt": "hi"}, headers={"authorization": "Bearer wrong"})
    assert error_code(wrong, 401) == "invalid_caller_token"
    assert error_code(agent.post({"prompt": "hi"}), 401) == "invalid_caller_token"
    right = agent.post({"prompt": "hi"}, headers={"authorization": f"Bearer {CALLER_TOKEN}"})
    assert right.status_code == 200


@pytest.mark.parametrize("provider", PROVIDERS)
def test_model_not_allowed_is_403(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    assert error_code(agent.post({"prompt": "hi", "model": "gpt-4o"}), 403) == "model_not_allowed"
    assert error_code(agent.get(chatQuery="hi", openAiModel="other"), 403) == "model_not_allowed"
    assert mock_llm.requests == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_error_is_502(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    mock_llm.fail_next(500)
    answer = agent.post({"prompt": "hi"})
    assert error_code(answer, 502) == "provider_error"
    assert "HTTP 500" in answer.json()["error"]["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_wrong_provider_key_is_401_without_the_provider_text(make_agent, mock_llm, provider):
    agent = make_agent(provider, secrets={"llmKey": "not-the-right-key"})
    answer = agent.post({"prompt": "hi"})
    assert error_code(answer, 401) == "provider_unauthorized"
    assert "not-the-right-key" not in answer.text
    assert "stand-in" not in answer.text  # the provider's error text is not passed on
    assert len(mock_llm.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_403_is_403(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    mock_llm.fail_next(403)
    answer = agent.post({"prompt": "hi"})
    assert error_code(answer, 403) == "provider_forbidden"
    assert "HTTP 403" in answer.json()["error"]["message"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_rate_limit_is_429_with_its_retry_after(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    mock_llm.fail_next(429, retry_after=7)
    answer = agent.post({"prompt": "hi"})
    assert error_code(answer, 429) == "provider_rate_limited"
    assert answer.headers["retry-after"] == "7"
    mock_llm.fail_next(429)  # no Retry-After from the provider: none invented
    answer = agent.post({"prompt": "hi"})
    assert error_code(answer, 429) == "provider_rate_limited"
    assert "retry-after" not in answer.headers
    mock_llm.fail_next(429, retry_after=0.5)  # not HTTP's integer seconds: not passed on
    answer = agent.post({"prompt": "hi"})
    assert error_code(answer, 429) == "provider_rate_limited"
    assert "retry-after" not in answer.headers
    assert len(mock_llm.requests) == 3


def test_unreachable_provider_is_502(make_agent, mock_llm):
    from kit.ipfs.node import free_port

    agent = make_agent("openai", base_url=f"http://127.0.0.1:{free_port()}/v1")
    assert error_code(agent.post({"prompt": "hi"}), 502) == "provider_unreachable"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_junk_is_502(make_agent, mock_llm, provider):
    agent = make_agent(provider)
    mock_llm.fail_next(200, body="<html>not json</html>")
    assert error_code(agent.post({"prompt": "hi"}), 502) == "provider_malformed"
    mock_llm.fail_next(200, body='{"unexpected": "shape"}')
    assert error_code(agent.post({"prompt": "hi"}), 502) == "provider_malformed"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_provider_slower_than_the_upstream_timeout_is_504(make_agent, mock_llm, provider):
    agent = make_agent(provider)  # timeout_seconds = 1
    mock_llm.fail_next(None, delay=5.0)
    assert error_code(agent.post({"prompt": "hi"}), 504) == "provider_timeout"
    assert agent.post({"prompt": "again"}).status_code == 200
