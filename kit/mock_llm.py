"""A STAND-IN for the OpenAI and Anthropic HTTP APIs, for offline development and tests.

It is not a language model and says so: its `Server` header, every response
(`system_fingerprint` / `id` carry "kit-stand-in") and the CLI's output label it. It speaks the
request and response shapes of OpenAI `POST /v1/chat/completions` (key in
`Authorization: Bearer`) and Anthropic `POST /v1/messages` (key in `x-api-key`), and answers
deterministically so that a test can compute the expected answer on its own:

    answer            = "stand-in answer: " + sha256(last user message, UTF-8).hexdigest()[:16]
    prompt tokens     = whitespace-separated words of the system prompt and all messages
    completion tokens = words of the answer (always 3)

`fail_next(...)` injects failures (a status, a delay, a raw body) into the next requests;
`requests` records every request received.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Any

from kit.httpserver import BackgroundServer, KeepAliveHandler

STAND_IN_LABEL = "kit-stand-in"
DEFAULT_API_KEY = "mock-llm-key"
ANSWER_PREFIX = "stand-in answer: "
MAX_BODY_BYTES = 1 << 20
JSON_TYPE = "application/json"


def stand_in_answer(prompt: str) -> str:
    return ANSWER_PREFIX + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def word_count(texts: list[str]) -> int:
    return sum(len(text.split()) for text in texts)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lowercased
    json: Any  # the parsed body, or None when it was not JSON


@dataclass
class _Fault:
    status: int | None
    delay: float
    body: str | bytes | None
    remaining: int


class ProviderError(Exception):
    """An answer in the provider's error shape (never leaves this module)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass
class _Prompt:
    model: str
    user: str
    texts: list[str] = field(default_factory=list)


def _text_of(content: Any) -> str:
    """A message's content: a string or a list of {type: text, text} blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(b, dict) for b in content):
        return "".join(str(b.get("text", "")) for b in content if b.get("type") == "text")
    raise ProviderError(400, "invalid_request_error", "message content must be text")


def _read_prompt(body: Any, *, system_field: bool) -> _Prompt:
    if not isinstance(body, dict):
        raise ProviderError(400, "invalid_request_error", "the body must be a JSON object")
    model, messages = body.get("model"), body.get("messages")
    if not isinstance(model, str) or not model:
        raise ProviderError(400, "invalid_request_error", "'model' is required")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) for m in messages
    ):
        raise ProviderError(400, "invalid_request_error", "'messages' must be a non-empty list")
    texts = [_text_of(m.get("content")) for m in messages]
    users = [text for m, text in zip(messages, texts) if m.get("role") == "user"]
    if not users:
        raise ProviderError(400, "invalid_request_error", "no message has role 'user'")
    if system_field and body.get("system") is not None:
        texts.insert(0, _text_of(body["system"]))
    return _Prompt(model=model, user=users[-1], texts=texts)


def openai_completion(body: Any) -> dict[str, Any]:
    prompt = _read_prompt(body, system_field=False)
    answer = stand_in_answer(prompt.user)
    prompt_tokens, completion_tokens = word_count(prompt.texts), word_count([answer])
    return {
        "id": f"chatcmpl-{STAND_IN_LABEL}-{hashlib.sha256(prompt.user.encode()).hexdigest()[:12]}",
        "object": "chat.completion",
        "created": 0,
        "model": prompt.model,
        "system_fingerprint": STAND_IN_LABEL,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": answer},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def anthropic_message(body: Any) -> dict[str, Any]:
    prompt = _read_prompt(body, system_field=True)
    answer = stand_in_answer(prompt.user)
    return {
        "id": f"msg_{STAND_IN_LABEL}_{hashlib.sha256(prompt.user.encode()).hexdigest()[:12]}",
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": [{"type": "text", "text": answer}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": word_count(prompt.texts), "output_tokens": word_count([answer])},
    }


def openai_error(error: ProviderError) -> dict[str, Any]:
    code = "invalid_api_key" if error.status == 401 else None
    return {"error": {"message": error.message, "type": error.kind, "param": None, "code": code}}


def anthropic_error(error: ProviderError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.kind, "message": error.message}}


_ROUTES = {
    "/v1/chat/completions": (openai_completion, openai_error),
    "/v1/messages": (anthropic_message, anthropic_error),
}


class _Handler(KeepAliveHandler):
    server_version = "kit-mock-llm/stand-in"
    mock: MockLLM  # set on the subclass made per server

    def send_payload(self, status: int, payload: bytes, content_type: str = JSON_TYPE) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Stand-In", "this is not a language model")
        self.end_headers()
        self.wfile.write(payload)

    def _send_json(self, status: int, value: Any) -> None:
        self.send_payload(status, json.dumps(value).encode())

    def _read_body(self) -> bytes:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            self.close_connection = True
            raise ProviderError(400, "invalid_request_error", "bad or oversize Content-Length")
        return self.rfile.read(length)

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        route = _ROUTES.get(self.path.split("?")[0])
        answer_for, error_shape = route or (openai_completion, openai_error)
        try:
            raw = self._read_body()
            body = self.mock.record(self, raw)
            if route is None:
                raise ProviderError(404, "not_found_error", f"no route {self.path}; stand-in "
                                    "routes: /v1/chat/completions, /v1/messages")
            if self.mock.apply_fault(self):
                return
            self.mock.check_key(self.headers, anthropic=error_shape is anthropic_error)
            self._send_json(200, answer_for(body))
        except ProviderError as error:
            self._send_json(error.status, error_shape(error))

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self.mock.record(self, b"")
        self._send_json(404, openai_error(ProviderError(
            404, "not_found_error", "stand-in routes: POST /v1/chat/completions, POST /v1/messages"
        )))


class MockLLM:
    """A stand-in OpenAI/Anthropic endpoint serving in a background thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 api_key: str = DEFAULT_API_KEY) -> None:
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        handler = type("MockLLMHandler", (_Handler,), {"mock": self})
        self._http = BackgroundServer(host, port, handler, "stand-in LLM")

    @property
    def base_url(self) -> str:
        host, port = self._http.address
        return f"http://{host}:{port}/v1"

    def start(self) -> str:
        """Bind, serve in a daemon thread, and return the base URL (ending in /v1)."""
        self._http.start()
        return self.base_url

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in an injected delay
        self._http.stop()

    def fail_next(self, status: int | None = 500, *, delay: float = 0.0, count: int = 1,
                  body: str | bytes | None = None) -> None:
        """The next `count` requests wait `delay` seconds, then answer `status` with `body`
        (default: the provider's error shape); status None answers normally after the delay."""
        with self._lock:
            self._faults.append(_Fault(status=status, delay=delay, body=body, remaining=count))

    def record(self, handler: _Handler, raw: bytes) -> Any:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in handler.headers.items()}
        self.requests.append(RecordedRequest(handler.command, handler.path, headers, body))
        return body

    def _take_fault(self) -> _Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.pop(0)
            return fault

    def apply_fault(self, handler: _Handler) -> bool:
        """Apply the next injected fault; True when it has answered the request."""
        fault = self._take_fault()
        if fault is None:
            return False
        if fault.delay and self._stopping.wait(fault.delay):
            handler.close_connection = True
            return True
        if fault.status is None:
            return False
        if fault.body is None:
            raise ProviderError(fault.status, "api_error", "injected failure (stand-in)")
        payload = fault.body.encode() if isinstance(fault.body, str) else fault.body
        handler.send_payload(fault.status, payload, "text/plain")
        return True

    def check_key(self, headers: Any, *, anthropic: bool) -> None:
        if anthropic:
            given = headers.get("x-api-key")
        else:
            value = headers.get("Authorization") or ""
            given = value[7:] if value.startswith("Bearer ") else None
        if given != self.api_key:
            where = "x-api-key" if anthropic else "Authorization: Bearer"
            raise ProviderError(401, "authentication_error",
                                f"missing or wrong API key in {where} (stand-in)")
