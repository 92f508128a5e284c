"""The stand-in LLM through real HTTP: both providers' shapes, auth, fault injection, streams,
driven by plain HTTP, by the official `openai` and `anthropic` SDKs, and by `kit mock-llm --fail`.

Expected answers are computed here from the documented rule (sha256 of the last user message),
not read from the stand-in.
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
from contextlib import contextmanager

import anthropic
import openai
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


# --- the official SDKs against the stand-in (issue 9) --------------------------------------
# What the SDKs parse is the oracle for the shapes: openai's Stream (chat.completion.chunk lines,
# `data: [DONE]`) and anthropic's typed events (message_start ... message_stop). Expected text and
# usage are computed here from the documented rule, not read from the stand-in.


SDK_TIMEOUT = 5.0
SYSTEM = "be brief"


def openai_client(mock_llm, *, key: str = MOCK_LLM_KEY, max_retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.base_url, api_key=key, max_retries=max_retries,
                         timeout=SDK_TIMEOUT)


def anthropic_client(mock_llm, *, key: str = MOCK_LLM_KEY,
                     max_retries: int = 0) -> anthropic.Anthropic:
    # the SDK appends /v1/messages itself
    return anthropic.Anthropic(base_url=mock_llm.base_url.removesuffix("/v1"), api_key=key,
                               max_retries=max_retries, timeout=SDK_TIMEOUT)


def openai_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def words(*texts: str) -> int:
    return sum(len(text.split()) for text in texts)


def test_openai_sdk_completion_and_usage(mock_llm):
    prompt = "how many legs has a spider"
    answer = openai_client(mock_llm).chat.completions.create(
        model="gpt-4o-mini", messages=openai_messages(prompt))
    assert answer.choices[0].message.content == expected_answer(prompt)
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.prompt_tokens == words(SYSTEM, prompt) == 8
    assert answer.usage.completion_tokens == words(expected_answer(prompt)) == 3
    assert answer.usage.total_tokens == 11


def test_openai_sdk_stream_reassembles_the_answer(mock_llm):
    prompt = "stream me an answer"
    chunks = list(openai_client(mock_llm).chat.completions.create(
        model="gpt-4o-mini", messages=openai_messages(prompt), stream=True))
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == expected_answer(prompt)
    assert len(chunks) > 3  # really streamed in pieces, not one chunk
    assert [chunk.choices[0].finish_reason for chunk in chunks][-1] == "stop"
    assert all(chunk.usage is None for chunk in chunks)  # usage only when asked for


def test_openai_sdk_stream_usage_in_a_last_chunk_when_asked(mock_llm):
    prompt = "count my tokens please"
    chunks = list(openai_client(mock_llm).chat.completions.create(
        model="gpt-4o-mini", messages=openai_messages(prompt), stream=True,
        stream_options={"include_usage": True}))
    *content, last = chunks
    assert last.choices == []
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == \
        (words(SYSTEM, prompt), 3, words(SYSTEM, prompt) + 3)
    assert all(chunk.usage is None for chunk in content)
    assert "".join(c.choices[0].delta.content or "" for c in content) == expected_answer(prompt)


def test_openai_stream_wire_format(mock_llm):
    """The raw lines: SSE `data:` lines in HTTP/1.1 chunks, ending with `data: [DONE]`."""
    with requests.post(f"{mock_llm.base_url}/chat/completions", stream=True, timeout=TIMEOUT,
                       headers={"Authorization": f"Bearer {MOCK_LLM_KEY}"},
                       json={"model": "m", "stream": True,
                             "messages": [{"role": "user", "content": "raw"}]}) as answer:
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/event-stream")
        assert answer.headers["Transfer-Encoding"] == "chunked"
        lines = [line for line in answer.iter_lines(decode_unicode=True) if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[0][6:])["choices"][0]["delta"] == {"role": "assistant", "content": ""}


def test_stream_must_be_a_boolean(mock_llm):
    answer = openai_call(mock_llm, "x", stream="yes")
    assert answer.status_code == 400
    assert "stream" in answer.json()["error"]["message"]


def test_anthropic_sdk_message_with_bearer_auth(mock_llm):
    prompt = "what colour is the sky"
    message = anthropic_client(mock_llm).messages.create(
        model="claude-3-5-haiku-latest", max_tokens=50, system=SYSTEM,
        messages=[{"role": "user", "content": prompt}])
    assert [block.text for block in message.content] == [expected_answer(prompt)]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (words(SYSTEM, prompt), 3)
    sent = mock_llm.requests[-1].headers
    assert sent["authorization"] == f"Bearer {MOCK_LLM_KEY}"  # how the SDK sends the key
    assert "x-api-key" not in sent


def test_anthropic_sdk_stream_events_and_text(mock_llm):
    prompt = "stream from claude"
    client = anthropic_client(mock_llm)
    events = list(client.messages.create(
        model="claude-3-5-haiku-latest", max_tokens=50, system=SYSTEM, stream=True,
        messages=[{"role": "user", "content": prompt}]))
    types = [event.type for event in events]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    deltas = [event.delta for event in events if event.type == "content_block_delta"]
    assert len(deltas) > 1 and all(delta.type == "text_delta" for delta in deltas)
    assert "".join(delta.text for delta in deltas) == expected_answer(prompt)
    assert events[0].message.usage.input_tokens == words(SYSTEM, prompt)
    assert events[-2].usage.output_tokens == 3
    assert events[-2].delta.stop_reason == "end_turn"
    with client.messages.stream(model="claude-3-5-haiku-latest", max_tokens=50, system=SYSTEM,
                                messages=[{"role": "user", "content": prompt}]) as stream:
        assert "".join(stream.text_stream) == expected_answer(prompt)
        final = stream.get_final_message()
    assert final.content[0].text == expected_answer(prompt)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (words(SYSTEM, prompt), 3)


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_sdk_wrong_key_is_authentication_error_without_retries(mock_llm, sdk):
    if sdk == "openai":
        client, error = openai_client(mock_llm, key="wrong-key", max_retries=2), \
            openai.AuthenticationError
        call = lambda: client.chat.completions.create(  # noqa: E731
            model="m", messages=openai_messages("hi"))
    else:
        client, error = anthropic_client(mock_llm, key="wrong-key", max_retries=2), \
            anthropic.AuthenticationError
        call = lambda: client.messages.create(  # noqa: E731
            model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(error) as raised:
        call()
    assert raised.value.status_code == 401
    assert "wrong-key" not in str(raised.value)
    assert len(mock_llm.requests) == 1  # the SDKs never retry a 401


def test_openai_sdk_rate_limit_is_retried_then_raised(mock_llm):
    mock_llm.fail_next(429, count=5, retry_after=0.1)
    with pytest.raises(openai.RateLimitError) as raised:
        openai_client(mock_llm, max_retries=2).chat.completions.create(
            model="m", messages=openai_messages("hi"))
    assert raised.value.status_code == 429
    assert raised.value.response.headers["retry-after"] == "0.1"
    assert raised.value.code == "rate_limit_exceeded"
    assert len(mock_llm.requests) == 3  # one call and two bounded retries


def test_sdks_recover_after_injected_rate_limits(mock_llm):
    mock_llm.fail_next(429, count=2, retry_after=0.2)
    started = time.monotonic()
    answer = openai_client(mock_llm, max_retries=2).chat.completions.create(
        model="m", messages=openai_messages("after the limit"))
    assert answer.choices[0].message.content == expected_answer("after the limit")
    assert time.monotonic() - started >= 0.4  # the SDK waited as Retry-After told it
    mock_llm.fail_next(429, retry_after=0.1)
    message = anthropic_client(mock_llm, max_retries=1).messages.create(
        model="m", max_tokens=5, messages=[{"role": "user", "content": "again"}])
    assert message.content[0].text == expected_answer("again")
    assert len(mock_llm.requests) == 5


@pytest.mark.parametrize("sdk", ["openai", "anthropic"])
def test_sdk_injected_500_is_internal_server_error(mock_llm, sdk):
    mock_llm.fail_next(500, count=2)
    if sdk == "openai":
        with pytest.raises(openai.InternalServerError) as raised:
            openai_client(mock_llm, max_retries=1).chat.completions.create(
                model="m", messages=openai_messages("hi"), stream=True)
    else:
        with pytest.raises(anthropic.InternalServerError) as raised:
            anthropic_client(mock_llm, max_retries=1).messages.create(
                model="m", max_tokens=5, stream=True, messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 500
    assert len(mock_llm.requests) == 2
    mock_llm.fail_next(429)
    with pytest.raises(anthropic.RateLimitError if sdk == "anthropic" else openai.RateLimitError):
        if sdk == "openai":
            openai_client(mock_llm).chat.completions.create(model="m",
                                                            messages=openai_messages("hi"))
        else:
            anthropic_client(mock_llm).messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])


def test_sdk_timeout_on_injected_delay(mock_llm):
    mock_llm.fail_next(None, delay=30.0)
    client = openai.OpenAI(base_url=mock_llm.base_url, api_key=MOCK_LLM_KEY, max_retries=0,
                           timeout=0.5)
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=openai_messages("slow"))


# --- `kit mock-llm --fail ...` through the command line (issue 10 item 7) -------------------


CLI_START_TIMEOUT = 20.0


@contextmanager
def mock_llm_cli(*args: str) -> Iterator[tuple[str, list[str]]]:
    """`kit mock-llm --port 0 ARGS` in a subprocess; yields (base URL, the banner lines).
    Stopped with SIGINT (as Ctrl-C) at the end, killed if it does not exit in time."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kit", "mock-llm", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        banner: list[str] = []
        deadline = time.monotonic() + CLI_START_TIMEOUT
        while not banner or banner[-1] != "Ctrl-C to stop":
            assert time.monotonic() < deadline, "kit mock-llm did not start in time"
            line = process.stdout.readline()
            assert line, f"kit mock-llm exited: {process.stderr.read()}"
            banner.append(line.rstrip("\n"))
        url = banner[0].rsplit(" at ", 1)[1]
        yield url, banner
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=15)
        assert process.returncode == 0, err
        banner.extend(out.splitlines())
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)


def post_openai(url: str, prompt: str, timeout: float = TIMEOUT) -> requests.Response:
    return requests.post(f"{url}/chat/completions", timeout=timeout,
                         headers={"Authorization": f"Bearer {MOCK_LLM_KEY}"},
                         json={"model": "m", "messages": [{"role": "user", "content": prompt}]})


def test_cli_fail_queue_status_retry_after_delay_and_body():
    with mock_llm_cli("--fail", "status=429,count=2,retry-after=1", "--fail", "delay=20",
                      "--fail", "status=200,body=not json, at all") as (url, banner):
        assert "STAND-IN" in banner[0]
        assert any("injected failure: next 2 request(s), answer 429, Retry-After: 1" in line
                   for line in banner)
        for _ in range(2):
            limited = post_openai(url, "a")
            assert limited.status_code == 429
            assert limited.headers["Retry-After"] == "1"
            assert limited.json()["error"]["code"] == "rate_limit_exceeded"
        with pytest.raises(requests.ReadTimeout):
            post_openai(url, "held back", timeout=0.5)
        broken = post_openai(url, "b")
        assert (broken.status_code, broken.text) == (200, "not json, at all")
        normal = post_openai(url, "c")
        assert normal.json()["choices"][0]["message"]["content"] == expected_answer("c")
    access = [line for line in banner if line.startswith("POST ")]
    assert [line.split(" -> ")[1].split()[0] for line in access[:2]] == ["429", "429"]


def test_cli_fail_rehearses_rate_limits_with_the_openai_sdk():
    with mock_llm_cli("--fail", "status=429,count=2,retry-after=0.2") as (url, banner):
        client = openai.OpenAI(base_url=url, api_key=MOCK_LLM_KEY, max_retries=2,
                               timeout=SDK_TIMEOUT)
        answer = client.chat.completions.create(model="m", messages=openai_messages("retry"))
        assert answer.choices[0].message.content == expected_answer("retry")
    statuses = [line.split(" -> ")[1].split()[0] for line in banner if line.startswith("POST ")]
    assert statuses == ["429", "429", "200"]


@pytest.mark.parametrize("spec, named", [
    ("status=99", "status"), ("bogus=1", "bogus"), ("delay=-1", "delay"),
    ("count=0,status=500", "count"), ("retry-after=1", "retry-after"), ("status", "key=value"),
])
def test_cli_bad_fail_spec_exits_2_naming_it(spec, named):
    done = subprocess.run([sys.executable, "-m", "kit", "mock-llm", "--port", "0", "--fail", spec],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "--fail" in done.stderr and named in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_stream_to_an_http_1_0_client_is_unchunked_and_closed(mock_llm):
    import http.client

    connection = http.client.HTTPConnection(mock_llm.base_url.split("//")[1].split("/")[0],
                                            timeout=TIMEOUT)
    connection._http_vsn, connection._http_vsn_str = 10, "HTTP/1.0"
    body = json.dumps({"model": "m", "stream": True,
                       "messages": [{"role": "user", "content": "old client"}]})
    connection.request("POST", "/v1/chat/completions", body=body,
                       headers={"Authorization": f"Bearer {MOCK_LLM_KEY}",
                                "Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 200 and answer.getheader("Transfer-Encoding") is None
    lines = [line for line in answer.read().decode().split("\n") if line]
    connection.close()
    assert lines[-1] == "data: [DONE]"
    text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                   for line in lines[:-1])
    assert text == expected_answer("old client")
