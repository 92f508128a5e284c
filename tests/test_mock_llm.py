"""The stand-in LLM through real HTTP: both providers' shapes, auth, fault injection.

Expected answers are computed here from the documented rule (sha256 of the last user message),
not read from the stand-in.
"""

from __future__ import annotations

import hashlib

import pytest
import requests

from fixtures.servers import MOCK_LLM_KEY

TIMEOUT = 10


def expected_answer(prompt: str) -> str:
    return "stand-in answer: " + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def openai_call(mock_llm, prompt: str, *, key: str | None = MOCK_LLM_KEY, **extra):
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    body = {"model": "gpt-4o-mini", "messages": [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}], **extra}
    return requests.post(f"{mock_llm.base_url}/chat/completions", json=body, headers=headers,
                         timeout=TIMEOUT)


def anthropic_call(mock_llm, prompt: str, *, key: str | None = MOCK_LLM_KEY):
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01"} if key is not None else {}
    body = {"model": "claude-3-5-haiku-latest", "system": "be brief", "max_tokens": 50,
            "messages": [{"role": "user", "content": prompt}]}
    return requests.post(f"{mock_llm.base_url}/messages", json=body, headers=headers,
                         timeout=TIMEOUT)


def test_openai_shape(mock_llm):
    answer = openai_call(mock_llm, "what is two plus two")
    assert answer.status_code == 200
    assert "stand-in" in answer.headers["Server"]
    data = answer.json()
    assert data["object"] == "chat.completion"
    assert data["created"] == 0
    assert data["model"] == "gpt-4o-mini"
    assert data["system_fingerprint"] == "kit-stand-in"
    assert data["id"].startswith("chatcmpl-")
    choice = data["choices"][0]
    assert choice["message"] == {"role": "assistant",
                                 "content": expected_answer("what is two plus two")}
    assert choice["finish_reason"] == "stop"
    # "be brief" (2 words) + the prompt (5 words); the answer is 3 words
    assert data["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def test_anthropic_shape(mock_llm):
    answer = anthropic_call(mock_llm, "héllo wörld ✓")
    assert answer.status_code == 200
    data = answer.json()
    assert data["type"] == "message"
    assert data["role"] == "assistant"
    assert data["model"] == "claude-3-5-haiku-latest"
    assert data["content"] == [{"type": "text", "text": expected_answer("héllo wörld ✓")}]
    assert data["stop_reason"] == "end_turn"
    assert data["usage"] == {"input_tokens": 5, "output_tokens": 3}
    assert "kit-stand-in" in data["id"]


def test_requests_are_recorded(mock_llm):
    openai_call(mock_llm, "first")
    anthropic_call(mock_llm, "second")
    first, second = mock_llm.requests
    assert (first.method, first.path) == ("POST", "/v1/chat/completions")
    assert first.headers["authorization"] == f"Bearer {MOCK_LLM_KEY}"
    assert first.json["messages"][-1]["content"] == "first"
    assert second.path == "/v1/messages"
    assert second.headers["x-api-key"] == MOCK_LLM_KEY


def test_openai_wrong_or_missing_key_is_401_in_openai_shape(mock_llm):
    for key in ("wrong-key", None):
        answer = openai_call(mock_llm, "hi", key=key)
        assert answer.status_code == 401
        error = answer.json()["error"]
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"
        assert "wrong-key" not in answer.text


def test_anthropic_wrong_or_missing_key_is_401_in_anthropic_shape(mock_llm):
    for key in ("wrong-key", None):
        answer = anthropic_call(mock_llm, "hi", key=key)
        assert answer.status_code == 401
        data = answer.json()
        assert data["type"] == "error"
        assert data["error"]["type"] == "authentication_error"


def test_bad_requests_get_400_and_the_server_keeps_serving(mock_llm):
    url = f"{mock_llm.base_url}/chat/completions"
    headers = {"Authorization": f"Bearer {MOCK_LLM_KEY}"}
    not_json = requests.post(url, data=b"{nope", headers=headers, timeout=TIMEOUT)
    assert not_json.status_code == 400
    assert "JSON object" in not_json.json()["error"]["message"]
    no_messages = requests.post(url, json={"model": "m"}, headers=headers, timeout=TIMEOUT)
    assert no_messages.status_code == 400
    assert "messages" in no_messages.json()["error"]["message"]
    unknown = requests.post(f"{mock_llm.base_url}/embeddings", json={}, timeout=TIMEOUT)
    assert unknown.status_code == 404
    assert openai_call(mock_llm, "still here").status_code == 200


def test_fail_next_status_then_recovers(mock_llm):
    mock_llm.fail_next(503, count=2)
    assert openai_call(mock_llm, "a").status_code == 503
    second = anthropic_call(mock_llm, "b")
    assert second.status_code == 503
    assert second.json()["type"] == "error"
    assert openai_call(mock_llm, "c").status_code == 200


def test_fail_next_raw_body(mock_llm):
    mock_llm.fail_next(200, body="this is not json")
    answer = openai_call(mock_llm, "a")
    assert (answer.status_code, answer.text) == (200, "this is not json")


def test_fail_next_delay_holds_the_answer_back(mock_llm):
    mock_llm.fail_next(None, delay=30.0)
    with pytest.raises(requests.ReadTimeout):
        requests.post(f"{mock_llm.base_url}/chat/completions", json={}, timeout=(5, 0.5))
    answer = openai_call(mock_llm, "after the delayed one")
    assert answer.json()["choices"][0]["message"]["content"] == \
        expected_answer("after the delayed one")


def test_fail_next_delay_then_normal_answer(mock_llm):
    mock_llm.fail_next(None, delay=0.2)
    answer = openai_call(mock_llm, "slow")
    assert answer.json()["choices"][0]["message"]["content"] == expected_answer("slow")
