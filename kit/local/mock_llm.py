"""A STAND-IN for the OpenAI and Anthropic HTTP APIs, for offline development and tests.

It is not a language model and says so: its `Server` header, every response
(`system_fingerprint` / `id` carry "kit-stand-in") and the CLI's output label it. It speaks the
request and response shapes of OpenAI `POST /v1/chat/completions` (key in
`Authorization: Bearer`) and Anthropic `POST /v1/messages` (key in `x-api-key` or, as the
official `anthropic` SDK sends it, `Authorization: Bearer`), and answers deterministically so
that a test can compute the expected answer on its own:

    answer            = "stand-in answer: " + sha256(last user message, UTF-8).hexdigest()[:16]
    prompt tokens     = whitespace-separated words of the system prompt and all messages
    completion tokens = words of the answer (always 3)

`"stream": true` is served in each provider's streaming format (server-sent events, sent with
chunked transfer encoding), one event per word of the answer:
- OpenAI: `data: {chat.completion.chunk}` lines (the first delta carries the role, the last an
  empty delta with `finish_reason`), then `data: [DONE]`; with `stream_options.include_usage`
  every chunk has `"usage": null` and a last chunk with no choices carries the usage.
- Anthropic: typed events `message_start` (input tokens), `content_block_start`, `ping`,
  `content_block_delta` (`text_delta`), `content_block_stop`, `message_delta` (stop reason and
  output tokens), `message_stop`.

With `confidential=True` it also stands in for a confidential-inference provider (Phala's
confidential AI API / RedPill, models in GPU TEEs; shared/REFERENCE.md section 5), see
`ConfidentialStandIn`: every completion is signed by the stand-in's own secp256k1 key and
`GET /v1/signature/{chat_id}` and `GET /v1/attestation/report` answer as the real API does,
the report carrying a *dev* TDX quote that says so and never passes production verification.
`fail_signature(...)` injects that API's failures (`SIGNATURE_FAULTS`).

`fail_next(...)` injects failures (a status with an optional Retry-After, a delay, a raw body)
into the next requests; `parse_fault` reads the same from the CLI's `--fail` text; `requests`
records every request received.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kit import jsonsafe
from kit.errors import InputError
from kit.local.httpserver import BackgroundServer, KeepAliveHandler

STAND_IN_LABEL = "kit-stand-in"
DEFAULT_API_KEY = "mock-llm-key"
ANSWER_PREFIX = "stand-in answer: "
MAX_BODY_BYTES = 1 << 20
JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"
MAX_FAULT_COUNT = 1_000_000
MAX_FAULT_DELAY = 3600.0

# The error `type` each status gets (Anthropic's names, used in both shapes) and OpenAI's `code`.
ERROR_KINDS = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
    404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
    500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
OPENAI_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}

AccessCallback = Callable[[str, str, int, float], None]  # method, path, status, elapsed ms


def stand_in_answer(prompt: str) -> str:
    return ANSWER_PREFIX + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def word_count(texts: list[str]) -> int:
    return sum(len(text.split()) for text in texts)


def answer_pieces(answer: str) -> list[str]:
    """The streamed deltas: one per word, each but the first with its leading space."""
    return re.findall(r"\s*\S+", answer)


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
    retry_after: float | None = None


@dataclass(frozen=True)
class FaultSpec:
    """One `--fail` option: the next `count` requests wait `delay` seconds, then answer
    `status` (with `Retry-After: retry_after` when given, and `body` instead of the provider's
    error shape when given); no status answers normally after the delay."""

    status: int | None = None
    delay: float = 0.0
    count: int = 1
    retry_after: float | None = None
    body: str | None = None


class ProviderError(Exception):
    """An answer in the provider's error shape (never leaves this module)."""

    def __init__(self, status: int, kind: str, message: str, *,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message
        self.retry_after = retry_after


# --- --fail text -------------------------------------------------------------------------

FAULT_KEYS = ("status", "count", "delay", "retry-after", "body")


def _split_fault(text: str) -> dict[str, str]:
    """`k=v,k=v,...`; `body=` takes the rest of the text, commas included."""
    fields: dict[str, str] = {}
    rest = text
    while rest:
        key, sep, remainder = rest.partition("=")
        key = key.strip().lower()
        if not sep or not key:
            raise InputError(f"--fail {text!r}: expected key=value pairs separated by commas "
                             f"(keys: {', '.join(FAULT_KEYS)})")
        if key not in FAULT_KEYS:
            raise InputError(f"--fail {text!r}: unknown key {key!r} "
                             f"(keys: {', '.join(FAULT_KEYS)})")
        if key in fields:
            raise InputError(f"--fail {text!r}: {key!r} is given twice")
        value, rest = (remainder, "") if key == "body" else remainder.partition(",")[::2]
        fields[key] = value if key == "body" else value.strip()
    return fields


def _number(text: str, key: str, value: str, low: float, high: float,
            kind: type[int] | type[float], option: str = "--fail") -> Any:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or number != number or not low <= number <= high:  # NaN fails too
        kind_name = "a whole number" if kind is int else "a number of seconds"
        raise InputError(f"{option} {text!r}: {key} must be {kind_name} "
                         f"from {int(low)} to {int(high)}")
    return number


def parse_fault(text: str) -> FaultSpec:
    """Read one `--fail` value, e.g. `status=429,count=2,retry-after=1`, `delay=8`,
    `status=200,body=not json`. Raises InputError naming the key."""
    fields = _split_fault(text)
    status = fields.get("status")
    spec = FaultSpec(
        status=None if status is None else _number(text, "status", status, 200, 599, int),
        delay=_number(text, "delay", fields.get("delay", "0"), 0, MAX_FAULT_DELAY, float),
        count=_number(text, "count", fields.get("count", "1"), 1, MAX_FAULT_COUNT, int),
        retry_after=None if "retry-after" not in fields else
        _number(text, "retry-after", fields["retry-after"], 0, MAX_FAULT_DELAY, float),
        body=fields.get("body"),
    )
    if spec.status is None and spec.delay == 0:
        raise InputError(f"--fail {text!r}: give a status, a delay, or both")
    if spec.status is None and (spec.body is not None or spec.retry_after is not None):
        raise InputError(f"--fail {text!r}: body and retry-after need a status")
    if spec.status is not None and spec.status < 300 and spec.body is None:
        raise InputError(f"--fail {text!r}: a {spec.status} answer needs body=... "
                         "(to answer normally after a delay, give only delay=)")
    return spec


def describe_fault(spec: FaultSpec) -> str:
    """One line for the CLI: what the next requests will get."""
    parts = [f"next {spec.count} request(s)"]
    if spec.delay:
        parts.append(f"wait {spec.delay:g} s")
    if spec.status is None:
        parts.append("then answer normally")
    else:
        parts.append(f"answer {spec.status}" + (" with the given body" if spec.body else ""))
        if spec.retry_after is not None:
            parts.append(f"Retry-After: {spec.retry_after:g}")
    return ", ".join(parts)


# --- answers -----------------------------------------------------------------------------


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


def wants_stream(body: Any) -> bool:
    if not isinstance(body, dict) or body.get("stream") in (None, False):
        return False
    if body["stream"] is not True:
        raise ProviderError(400, "invalid_request_error", "'stream' must be a boolean")
    return True


def openai_completion(body: Any, chat_id: str | None = None) -> dict[str, Any]:
    prompt = _read_prompt(body, system_field=False)
    answer = stand_in_answer(prompt.user)
    prompt_tokens, completion_tokens = word_count(prompt.texts), word_count([answer])
    return {
        "id": chat_id or
        f"chatcmpl-{STAND_IN_LABEL}-{hashlib.sha256(prompt.user.encode()).hexdigest()[:12]}",
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


def anthropic_message(body: Any, chat_id: str | None = None) -> dict[str, Any]:
    prompt = _read_prompt(body, system_field=True)
    answer = stand_in_answer(prompt.user)
    return {
        "id": chat_id or
        f"msg_{STAND_IN_LABEL}_{hashlib.sha256(prompt.user.encode()).hexdigest()[:12]}",
        "type": "message",
        "role": "assistant",
        "model": prompt.model,
        "content": [{"type": "text", "text": answer}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": word_count(prompt.texts), "output_tokens": word_count([answer])},
    }


# --- streams (server-sent events) --------------------------------------------------------


def _sse(data: Any, event: str | None = None) -> bytes:
    name = f"event: {event}\n" if event else ""
    return f"{name}data: {json.dumps(data)}\n\n".encode()


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ProviderError(400, "invalid_request_error", "'stream_options' must be an object")
    return options.get("include_usage") is True


def openai_stream(body: Any, chat_id: str | None = None) -> list[bytes]:
    """The chunks of `openai_completion(body)` as OpenAI streams them, ending in [DONE]."""
    completion = openai_completion(body, chat_id)
    include_usage = _include_usage(body)
    base = {"id": completion["id"], "object": "chat.completion.chunk", "created": 0,
            "model": completion["model"], "system_fingerprint": STAND_IN_LABEL}

    def chunk(choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        data = {**base, "choices": choices}
        if include_usage:
            data["usage"] = usage
        return _sse(data)

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    answer = completion["choices"][0]["message"]["content"]
    events = [chunk([choice({"role": "assistant", "content": ""})])]
    events += [chunk([choice({"content": piece})]) for piece in answer_pieces(answer)]
    events.append(chunk([choice({}, "stop")]))
    if include_usage:
        events.append(chunk([], completion["usage"]))
    events.append(b"data: [DONE]\n\n")
    return events


def anthropic_stream(body: Any, chat_id: str | None = None) -> list[bytes]:
    """The events of `anthropic_message(body)` as Anthropic streams them."""
    message = anthropic_message(body, chat_id)
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1}}
    events = [
        _sse({"type": "message_start", "message": start}, "message_start"),
        _sse({"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}, "content_block_start"),
        _sse({"type": "ping"}, "ping"),
    ]
    events += [_sse({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": piece}}, "content_block_delta")
               for piece in answer_pieces(message["content"][0]["text"])]
    events += [
        _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
        _sse({"type": "message_delta",
              "delta": {"stop_reason": "end_turn", "stop_sequence": None},
              "usage": {"output_tokens": message["usage"]["output_tokens"]}}, "message_delta"),
        _sse({"type": "message_stop"}, "message_stop"),
    ]
    return events


def openai_error(error: ProviderError) -> dict[str, Any]:
    code = OPENAI_CODES.get(error.status)
    return {"error": {"message": error.message, "type": error.kind, "param": None, "code": code}}


def anthropic_error(error: ProviderError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.kind, "message": error.message}}


@dataclass(frozen=True)
class _Provider:
    answer: Callable[[Any, str | None], dict[str, Any]]
    stream: Callable[[Any, str | None], list[bytes]]
    error: Callable[[ProviderError], dict[str, Any]]
    anthropic: bool


OPENAI = _Provider(openai_completion, openai_stream, openai_error, anthropic=False)
ANTHROPIC = _Provider(anthropic_message, anthropic_stream, anthropic_error, anthropic=True)
_ROUTES = {"/v1/chat/completions": OPENAI, "/v1/messages": ANTHROPIC}


# --- the confidential provider (issue 12) ------------------------------------------------
#
# What the real API does (nearai/private-ml-sdk, vllm-proxy: src/app/api/v1/openai.py and
# src/app/quote/quote.py, which Phala's confidential AI API and RedPill serve): each completion
# is cached under its `id` with text = sha256_hex(request body) + ":" + sha256_hex(response
# body) and an EIP-191 signature of that text by a key generated inside the TEE;
# `GET /v1/signature/{chat_id}?model=..&signing_algo=ecdsa` answers {text, signature,
# signing_address, signing_algo} (404 "Chat id not found or expired" otherwise), and
# `GET /v1/attestation/report?model=..&nonce=<64 hex>` answers {signing_address, signing_algo,
# request_nonce, intel_quote (hex TDX quote whose report_data binds address and nonce: see
# kit.trust.provider.provider_report_data), nvidia_payload (JSON text), event_log, info}.

# The stand-in's keys are public and fixed (never secrets), so tests and docs can name them.
CONFIDENTIAL_KEY_SEED = b"kit mock-llm confidential stand-in signing key v1 (public, never secret)"
UNKNOWN_KEY_SEED = b"kit mock-llm unknown signer v1 (public, never secret)"
# the compose hash the stand-in's dev TDX quotes measure (it is not a dstack app)
STAND_IN_COMPOSE_HASH = hashlib.sha256(b"kit mock-llm confidential stand-in app v1").hexdigest()
MAX_SIGNED_CHATS = 4096  # the oldest signatures are forgotten first, as the real cache expires
SIGNATURE_FAULTS = {  # kind -> what the next signature (or report) request gets
    "wrong-signature": "a signature over other text: it recovers another address",
    "text-mismatch": "a correctly signed text whose hashes are not of the bytes exchanged",
    "unknown-signer": "text and signature by a key that no attestation names",
    "not-found": "404 chat id not found (as when the signature lags or expired)",
    "slow": "the right answer after `delay` seconds (default 0.2)",
    "timeout": "no answer for `delay` seconds (default 120), then the connection closes",
    "report-wrong-nonce": "an attestation report whose quote binds another nonce",
    "report-wrong-address": "an attestation report naming a signer its quote does not bind",
}
DEFAULT_FAULT_DELAYS = {"slow": 0.2, "timeout": 120.0}
SIGNATURE_PREFIX, REPORT_PATH = "/v1/signature/", "/v1/attestation/report"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def signed_text(request_body: bytes, response_body: bytes) -> str:
    """What the provider signs: sha256 of the exact request bytes, ':', of the response bytes."""
    return sha256_hex(request_body) + ":" + sha256_hex(response_body)


def seed_key(seed: bytes) -> bytes:
    """A secp256k1 secret key from a public seed (sha256; below the group order for these)."""
    return hashlib.sha256(seed).digest()


@dataclass(frozen=True)
class SignatureFault:
    """One `--signature-fault` option: the next `count` requests of its kind get `kind`."""

    kind: str
    count: int = 1
    delay: float = 0.0

    @property
    def on_report(self) -> bool:
        return self.kind.startswith("report-")


def parse_signature_fault(text: str) -> SignatureFault:
    """`KIND[,count=N][,delay=SECONDS]`, e.g. `not-found,count=5`, `slow,delay=0.5`."""
    kind, *rest = [part.strip() for part in text.split(",")]
    if kind not in SIGNATURE_FAULTS:
        raise InputError(f"--signature-fault {text!r}: unknown kind {kind!r} "
                         f"(kinds: {', '.join(SIGNATURE_FAULTS)})")
    fields: dict[str, str] = {}
    for part in rest:
        key, sep, value = part.partition("=")
        if not sep or key not in ("count", "delay") or key in fields:
            raise InputError(f"--signature-fault {text!r}: after the kind give count=N and/or "
                             "delay=SECONDS, each once")
        fields[key] = value.strip()
    option = "--signature-fault"
    count = _number(text, "count", fields.get("count", "1"), 1, MAX_FAULT_COUNT, int, option)
    delay = _number(text, "delay", fields.get("delay", str(DEFAULT_FAULT_DELAYS.get(kind, 0))),
                    0, MAX_FAULT_DELAY, float, option)
    if "delay" in fields and kind not in DEFAULT_FAULT_DELAYS:
        raise InputError(f"{option} {text!r}: delay applies to slow and timeout only")
    return SignatureFault(kind, count, delay)


def describe_signature_fault(fault: SignatureFault) -> str:
    what = SIGNATURE_FAULTS[fault.kind].replace("`delay`", f"{fault.delay:g}")
    target = "attestation report" if fault.on_report else "signature"
    return f"next {fault.count} {target} request(s): {what}"


class ConfidentialStandIn:
    """The stand-in's signing key, its signed chats, its attestation reports and their faults."""

    def __init__(self, stopping: threading.Event) -> None:
        from eth_account import Account

        self.account = Account.from_key(seed_key(CONFIDENTIAL_KEY_SEED))
        self.unknown = Account.from_key(seed_key(UNKNOWN_KEY_SEED))
        self._chats: OrderedDict[str, tuple[str, str, bytes]] = OrderedDict()
        self._faults: list[list[Any]] = []  # [SignatureFault, remaining]
        self._lock = threading.Lock()
        self._stopping = stopping
        self._guest: Any = None

    @property
    def address(self) -> str:
        return str(self.account.address)

    @staticmethod
    def chat_id(request_body: bytes, anthropic: bool) -> str:
        """Unique per request body (the real ids are random; same body, same answer here)."""
        digest = sha256_hex(request_body)[:24]
        return f"msg_{STAND_IN_LABEL}_{digest}" if anthropic else \
            f"chatcmpl-{STAND_IN_LABEL}-{digest}"

    @staticmethod
    def sign(account: Any, text: str) -> str:
        from eth_account.messages import encode_defunct

        return "0x" + bytes(account.sign_message(encode_defunct(text=text)).signature).hex()

    def record(self, chat_id: str, request_body: bytes, response_body: bytes) -> None:
        """Sign the exchange now (the real proxy signs as the completion ends) and keep it."""
        text = signed_text(request_body, response_body)
        signature = self.sign(self.account, text)
        with self._lock:
            self._chats[chat_id] = (text, signature, response_body)
            self._chats.move_to_end(chat_id)
            while len(self._chats) > MAX_SIGNED_CHATS:
                self._chats.popitem(last=False)

    def add_fault(self, fault: SignatureFault) -> None:
        with self._lock:
            self._faults.append([fault, fault.count])

    def take_fault(self, on_report: bool) -> SignatureFault | None:
        with self._lock:
            for entry in self._faults:
                if entry[0].on_report == on_report:
                    entry[1] -= 1
                    if entry[1] <= 0:
                        self._faults.remove(entry)
                    return entry[0]
        return None

    def wait(self, fault: SignatureFault | None) -> bool:
        """Sleep a slow or timeout fault's delay; True when the request must go unanswered."""
        if fault is None or fault.kind not in DEFAULT_FAULT_DELAYS:
            return False
        stopped = self._stopping.wait(fault.delay)
        return stopped or fault.kind == "timeout"

    def signature(self, chat_id: str, fault: SignatureFault | None) -> dict[str, Any]:
        with self._lock:
            entry = self._chats.get(chat_id)
        if entry is None or (fault is not None and fault.kind == "not-found"):
            raise ProviderError(404, "not_found_error", "Chat id not found or expired")
        text, signature, response_body = entry
        account = self.account
        kind = fault.kind if fault is not None else None
        if kind == "wrong-signature":
            signature = self.sign(self.account, text + " (not what was exchanged)")
        elif kind == "text-mismatch":
            text = signed_text(b"another request (stand-in fault)", response_body)
            signature = self.sign(self.account, text)
        elif kind == "unknown-signer":
            account = self.unknown
            signature = self.sign(account, text)
        return {"text": text, "signature": signature, "signing_address": str(account.address),
                "signing_algo": "ecdsa"}

    def report(self, nonce: bytes, fault: SignatureFault | None) -> dict[str, Any]:
        """The attestation report: the dev TDX quote of `kit.dstack.simulator` (says "dev" in
        its first bytes) binding the signing address and `nonce` as the real report does."""
        from kit.dstack.simulator import GuestAgentStandIn
        from kit.trust.provider import provider_report_data

        kind = fault.kind if fault is not None else None
        bound_nonce = hashlib.sha256(nonce).digest() if kind == "report-wrong-nonce" else nonce
        named = self.unknown if kind == "report-wrong-address" else self.account
        with self._lock:
            if self._guest is None:
                self._guest = GuestAgentStandIn(compose_hash=STAND_IN_COMPOSE_HASH)
            guest = self._guest
        quoted = guest.get_quote(provider_report_data(self.address, bound_nonce).hex())
        gpu = {"nonce": nonce.hex(), "evidence_list": [], "arch": "HOPPER",
               "stand_in": "no GPU here: an empty evidence list (not verifiable by NVIDIA)"}
        return {
            "signing_address": str(named.address), "signing_algo": "ecdsa",
            "request_nonce": nonce.hex(), "intel_quote": quoted["quote"],
            "nvidia_payload": json.dumps(gpu), "event_log": json.loads(quoted["event_log"]),
            "info": guest.info(), "stand_in": "kit mock-llm: a DEV quote, not TEE hardware",
        }


# --- HTTP --------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return f"{value:g}"


class _Handler(KeepAliveHandler):
    server_version = "kit-mock-llm/stand-in"
    mock: MockLLM  # set on the subclass made per server
    status_sent = 0

    def send_response(self, code: int, message: str | None = None) -> None:
        self.status_sent = code
        super().send_response(code, message)

    def send_payload(self, status: int, payload: bytes, content_type: str = JSON_TYPE,
                     retry_after: float | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Stand-In", "this is not a language model")
        if retry_after is not None:
            self.send_header("Retry-After", _seconds(retry_after))
        self.end_headers()
        self.wfile.write(payload)

    def send_stream(self, events: list[bytes]) -> None:
        """Server-sent events in HTTP/1.1 chunks, each flushed as it is written (an HTTP/1.0
        client gets them unchunked, ended by closing the connection)."""
        chunked = self.request_version == "HTTP/1.1"
        self.send_response(200)
        self.send_header("Content-Type", SSE_TYPE)
        self.send_header("Cache-Control", "no-cache")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.send_header("X-Stand-In", "this is not a language model")
        self.end_headers()
        for event in events:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event) if chunked else event)
            self.wfile.flush()
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _send_error(self, error: ProviderError, provider: _Provider) -> None:
        payload = json.dumps(provider.error(error)).encode()
        self.send_payload(error.status, payload, retry_after=error.retry_after)

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
        started, self.status_sent = time.monotonic(), 0  # 0: no answer (dropped at a stop)
        try:
            self._answer_post()
        finally:
            self.mock.report(self.command, self.path, self.status_sent, started)

    def _answer_post(self) -> None:
        route = _ROUTES.get(self.path.split("?")[0])
        provider = route or OPENAI
        try:
            raw = self._read_body()
            body = self.mock.record(self, raw)
            if route is None:
                raise ProviderError(404, "not_found_error", f"no route {self.path}; stand-in "
                                    "routes: /v1/chat/completions, /v1/messages")
            if self.mock.apply_fault(self):
                return
            self.mock.check_key(self.headers, anthropic=provider.anthropic)
            confidential = self.mock.confidential
            chat_id = None if confidential is None else \
                confidential.chat_id(raw, provider.anthropic)
            if wants_stream(body):
                events = provider.stream(body, chat_id)
                if confidential is not None and chat_id is not None:
                    confidential.record(chat_id, raw, b"".join(events))
                self.send_stream(events)
            else:
                payload = json.dumps(provider.answer(body, chat_id)).encode()
                if confidential is not None and chat_id is not None:
                    confidential.record(chat_id, raw, payload)
                self.send_payload(200, payload)
        except ProviderError as error:
            self._send_error(error, provider)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        started, self.status_sent = time.monotonic(), 0
        self.mock.record(self, b"")
        try:
            self._answer_get()
        except ProviderError as error:
            self._send_error(error, OPENAI)
        finally:
            self.mock.report(self.command, self.path, self.status_sent, started)

    def _answer_get(self) -> None:
        from urllib.parse import parse_qs, unquote, urlsplit

        url = urlsplit(self.path)
        confidential = self.mock.confidential
        signature_route = url.path.startswith(SIGNATURE_PREFIX) and \
            len(url.path) > len(SIGNATURE_PREFIX)
        if confidential is None or not (signature_route or url.path == REPORT_PATH):
            routes = "POST /v1/chat/completions, POST /v1/messages"
            if confidential is not None:
                routes += ", GET /v1/signature/{chat_id}, GET /v1/attestation/report"
            raise ProviderError(404, "not_found_error", "stand-in routes: " + routes)
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        if url.path == REPORT_PATH:
            self._send_report(confidential, query.get("nonce"))
            return
        self.mock.check_key(self.headers, anthropic=False)
        if query.get("signing_algo", "ecdsa") != "ecdsa":
            raise ProviderError(400, "invalid_request_error",
                                "invalid signing_algo: the stand-in signs with ecdsa only")
        fault = confidential.take_fault(on_report=False)
        if confidential.wait(fault):
            self.close_connection = True
            return
        chat_id = unquote(url.path[len(SIGNATURE_PREFIX):])
        answer = confidential.signature(chat_id, fault)
        self.send_payload(200, json.dumps(answer).encode())

    def _send_report(self, confidential: ConfidentialStandIn, nonce: str | None) -> None:
        import os

        if nonce is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", nonce):
            raise ProviderError(400, "invalid_request_error", "nonce must be 32 bytes as hex")
        value = bytes.fromhex(nonce) if nonce is not None else os.urandom(32)
        fault = confidential.take_fault(on_report=True)
        self.send_payload(200, json.dumps(confidential.report(value, fault)).encode())


class MockLLM:
    """A stand-in OpenAI/Anthropic endpoint serving in a background thread; with
    `confidential=True` also a stand-in confidential-inference provider (`ConfidentialStandIn`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 api_key: str = DEFAULT_API_KEY, on_request: AccessCallback | None = None,
                 confidential: bool = False) -> None:
        self.api_key = api_key
        self.on_request = on_request
        self.requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.confidential = ConfidentialStandIn(self._stopping) if confidential else None
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
                  body: str | bytes | None = None, retry_after: float | None = None) -> None:
        """The next `count` requests wait `delay` seconds, then answer `status` with `body`
        (default: the provider's error shape) and `Retry-After: retry_after` when given;
        status None answers normally after the delay. Faults queue in the order given."""
        with self._lock:
            self._faults.append(_Fault(status=status, delay=delay, body=body, remaining=count,
                                       retry_after=retry_after))

    def fail_signature(self, kind: str, *, count: int = 1, delay: float | None = None) -> None:
        """The next `count` signature requests (attestation reports for `report-*` kinds) get
        the fault `kind` (SIGNATURE_FAULTS); `delay` for slow and timeout."""
        if self.confidential is None:
            raise InputError("signature faults need the confidential stand-in (confidential=True)")
        if kind not in SIGNATURE_FAULTS:
            raise InputError(f"unknown signature fault {kind!r}; kinds: "
                             f"{', '.join(SIGNATURE_FAULTS)}")
        wait = DEFAULT_FAULT_DELAYS.get(kind, 0.0) if delay is None else delay
        self.confidential.add_fault(SignatureFault(kind, count, wait))

    def add_signature_fault(self, fault: SignatureFault) -> None:
        self.fail_signature(fault.kind, count=fault.count, delay=fault.delay)

    def add_fault(self, spec: FaultSpec) -> None:
        self.fail_next(spec.status, delay=spec.delay, count=spec.count, body=spec.body,
                       retry_after=spec.retry_after)

    def record(self, handler: _Handler, raw: bytes) -> Any:
        try:  # depth-limited: eth-account (confidential mode) raises the recursion limit
            body = jsonsafe.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {name.lower(): value for name, value in handler.headers.items()}
        self.requests.append(RecordedRequest(handler.command, handler.path, headers, body))
        return body

    def report(self, method: str, path: str, status: int, started: float) -> None:
        if self.on_request is not None:
            self.on_request(method, path, status, (time.monotonic() - started) * 1000)

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
            raise ProviderError(fault.status, ERROR_KINDS.get(fault.status, "api_error"),
                                "injected failure (stand-in)", retry_after=fault.retry_after)
        payload = fault.body.encode() if isinstance(fault.body, str) else fault.body
        handler.send_payload(fault.status, payload, "text/plain", fault.retry_after)
        return True

    def check_key(self, headers: Any, *, anthropic: bool) -> None:
        """OpenAI: `Authorization: Bearer`. Anthropic: `x-api-key`, or `Authorization: Bearer`
        as the official SDK sends it (x-api-key wins when both are present)."""
        bearer = headers.get("Authorization") or ""
        given = bearer[7:] if bearer.startswith("Bearer ") else None
        if anthropic and headers.get("x-api-key") is not None:
            given = headers.get("x-api-key")
        if given != self.api_key:
            where = "x-api-key or Authorization: Bearer" if anthropic else "Authorization: Bearer"
            raise ProviderError(401, "authentication_error",
                                f"missing or wrong API key in {where} (stand-in)")
