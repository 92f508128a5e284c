"""The local WapoJS-faithful runtime: run a gen-1 agent contract once in a fresh QuickJS context.

Protocol (REFERENCE section 1): the serialized request goes in `scriptArgs[0]`; the contract's
`scriptOutput` (a JSON string `{"status", "body", "headers"}`) is mapped to the HTTP answer the
gateway would give. Every contract fault (throw, time, memory, stack, bad output) becomes a 500
with a JSON error body; `invoke` never raises for them and the host process survives them.

Choices where the real worker's behaviour is not published:
- The event loop runs until nothing more can happen (no pending job, timer or fetch), as WapoJS
  does before reading the output, or until the time limit. A promise that never settles with
  nothing pending therefore ends the run at once, not after 60 s, and because no output was set
  it is a 500 `no_output` (the real gateway's answer for a missing output is not published; a
  wrong guess here fails loudly instead of answering an empty 200).
- If the time limit expires after `scriptOutput` was set (a leftover interval), the output wins.
- The time limit is wall-clock time per invocation, as Phala stops every request after 60 s of
  wall time: concurrent invocations (threads or processes) never shorten or stretch each other's.
  A watchdog thread (`_Alarms`) trips the limit at the deadline, which also stops synchronous
  JavaScript (an endless loop, a looping `scriptOutput` getter) within microseconds.

How the watchdog stops synchronous JavaScript with the pinned `quickjs` binding (1.19): the
binding refuses calls into Python while its time limit is set, but it installs QuickJS's
interrupt handler when a call starts with the limit set and leaves it in place when the call ends
with the limit cleared (`_install_handler` uses exactly that, within one call and one thread).
That handler compares the process CPU clock with a limit word the binding keeps in the context
object; the runtime sets that word so high that the CPU clock never reaches it and the watchdog
sets it to 0 at the deadline, so the handler stops the JavaScript at its next check. Where the
word lives is found once per process by looking for a probe value (`_find_limit_word`), and a
self-check proves that writing it stops a running loop; any other binding fails that check with
a message instead of running without a limit.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import heapq
import hmac
import json
import os
import queue
import re
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from kit import jsonsafe
from kit.errors import ExternalError, InputError

GEN1_METHODS = ("GET", "POST", "PATCH", "PUT")
BODY_METHODS = ("POST", "PATCH", "PUT")
HASH_ALGORITHMS = ("sha256", "keccak256", "blake2b128", "blake2b256", "blake2b512")
WORKER_KEY_BYTES = 32

_STACK_BYTES = 1024 * 1024
_MAX_LOG_ENTRIES = 1000
_MAX_LOG_ENTRY_CHARS = 8192
_MAX_CONCURRENT_FETCHES = 32
_MAX_FETCH_BODY_BYTES = 32 * 2**20
_DERIVE_SECRET_TAG = b"kit/wapo/deriveSecret\x00"
_JSON_HEADERS = {"content-type": "application/json"}
_LATE_READ_SECONDS = 0.25  # reading a plain output after the time limit (no contract code runs)
_UNREADABLE = object()  # a completion value the binding could not convert
_LONE_SURROGATE = ("{} holds a lone UTF-16 surrogate (U+D800-U+DFFF), which no UTF-8 answer can "
                   "carry; pair it or remove it")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # an HTTP token (RFC 9110 5.6.2)
_SURROGATE = re.compile("[\ud800-\udfff]")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")  # visible latin-1, space, tab


@dataclass(frozen=True)
class Limits:
    """Per invocation: wall-clock time (Phala stops every request after 60 s of wall time), the
    VM's memory, and each fetch's whole time (connect, headers and body)."""

    time_seconds: float = 60.0
    memory_bytes: int = 100 * 2**20
    fetch_timeout: float = 30.0


@dataclass
class Invocation:
    """The contract's answer, already mapped as the gateway maps it."""

    status: int
    headers: dict[str, str]
    body: str
    logs: list[str]
    error: str | None
    duration_ms: float


# ---- the serialized request ------------------------------------------------------------------


def make_request(
    method: str,
    path: str,
    query_pairs: Iterable[tuple[str, str]] = (),
    headers: Mapping[str, str] | Iterable[tuple[str, str]] = (),
    body: str | bytes | None = None,
    secret: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The gen-1 serialized request: queries as arrays (order kept, `key` included), header names
    lowercased (repeats joined with ", "), body only for POST/PATCH/PUT, secret when given."""
    verb = method.upper()
    if verb not in GEN1_METHODS:
        raise InputError(f"method {method!r} is not part of the gen-1 protocol; use one of "
                         f"{', '.join(GEN1_METHODS)}")
    if not path.startswith("/"):
        raise InputError(f"path {path!r} must start with '/', e.g. /ipfs/<cid>")
    queries: dict[str, list[str]] = {}
    for name, value in query_pairs:
        queries.setdefault(name, []).append(value)
    merged: dict[str, str] = {}
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    for name, value in pairs:
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    request: dict[str, Any] = {"method": verb, "path": path, "queries": queries, "headers": merged}
    if verb in BODY_METHODS:
        raw = body if body is not None else ""
        request["body"] = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if secret is not None:
        request["secret"] = dict(secret)
    return request


# ---- the worker key and the Wapo crypto --------------------------------------------------------


def worker_key_path() -> Path:
    """Where the local worker key lives: the user's data directory, never the project."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "agent-contract-kit" / "worker.key"


_key_lock = threading.Lock()


def default_worker_key() -> bytes:
    """The local worker key (32 random bytes, hex in a 0600 file), created on first use."""
    path = worker_key_path()
    with _key_lock:
        return _load_or_create_key(path)


@lru_cache(maxsize=4)
def _load_or_create_key(path: Path) -> bytes:
    from kit.fsutil import write_private

    if path.exists():
        try:
            key = bytes.fromhex(path.read_text().strip())
        except ValueError:
            key = b""
        if len(key) != WORKER_KEY_BYTES:
            raise InputError(f"worker key file {path} is corrupt; delete it to create a new one "
                             "(secrets derived with Wapo.deriveSecret will change)")
        return key
    key = os.urandom(WORKER_KEY_BYTES)
    write_private(path, key.hex() + "\n")
    return key


def derive_secret(worker_key: bytes, code: str, salt: bytes) -> bytes:
    """Wapo.deriveSecret: 64 bytes bound to the worker key and to sha256 of the contract code."""
    code_hash = hashlib.sha256(code.encode("utf-8")).digest()
    return hmac.new(worker_key, _DERIVE_SECRET_TAG + code_hash + salt, hashlib.sha512).digest()


def wapo_hash(algorithm: str, data: bytes) -> bytes:
    """Wapo.hash: the digests WapoJS offers."""
    if algorithm == "sha256":
        return hashlib.sha256(data).digest()
    if algorithm == "keccak256":
        from Crypto.Hash import keccak

        return keccak.new(digest_bits=256, data=data).digest()
    sizes = {"blake2b128": 16, "blake2b256": 32, "blake2b512": 64}
    if algorithm in sizes:
        return hashlib.blake2b(data, digest_size=sizes[algorithm]).digest()
    raise _ContractError(f"unsupported hash algorithm {algorithm!r}; use one of "
                         f"{', '.join(HASH_ALGORITHMS)}")


_WYP = (0xA0761D6478BD642F, 0xE7037ED1A0B428DB, 0x8EBC6AF09C88C6E3, 0x589965CC75374CC3)
_U64 = (1 << 64) - 1


def _wymum(a: int, b: int) -> tuple[int, int]:
    product = a * b
    return product & _U64, product >> 64


def _wymix(a: int, b: int) -> int:
    low, high = _wymum(a, b)
    return low ^ high


def _r4(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 4], "little")


def _r8(data: bytes, at: int) -> int:
    return int.from_bytes(data[at:at + 8], "little")


def wyhash64(data: bytes, seed: int = 0) -> int:
    """wyhash "final 4" with the default secret, as the wyhash_final4 crate WapoJS uses."""
    s, n = _WYP, len(data)
    seed = (seed & _U64) ^ _wymix((seed & _U64) ^ s[0], s[1])
    if n <= 16:
        if n >= 4:
            q = (n >> 3) << 2
            a = (_r4(data, 0) << 32) | _r4(data, q)
            b = (_r4(data, n - 4) << 32) | _r4(data, n - 4 - q)
        else:
            a = (data[0] << 16) | (data[n >> 1] << 8) | data[n - 1] if n else 0
            b = 0
    else:
        p, left = 0, n
        if left > 48:
            see1 = see2 = seed
            while True:
                seed = _wymix(_r8(data, p) ^ s[1], _r8(data, p + 8) ^ seed)
                see1 = _wymix(_r8(data, p + 16) ^ s[2], _r8(data, p + 24) ^ see1)
                see2 = _wymix(_r8(data, p + 32) ^ s[3], _r8(data, p + 40) ^ see2)
                p, left = p + 48, left - 48
                if left <= 48:
                    break
            seed ^= see1 ^ see2
        while left > 16:
            seed = _wymix(_r8(data, p) ^ s[1], _r8(data, p + 8) ^ seed)
            p, left = p + 16, left - 16
        a, b = _r8(data, p + left - 16), _r8(data, p + left - 8)
    a, b = _wymum(a ^ s[1], b ^ seed)
    return _wymix(a ^ s[0] ^ n, b ^ s[1])


def _signing_key(worker_key: bytes) -> Any:
    from Crypto.PublicKey import ECC

    return ECC.construct(curve="ed25519", seed=worker_key)


def worker_public_key(worker_key: bytes) -> bytes:
    """Wapo.workerPublicKey: the Ed25519 public key whose seed is the worker key."""
    return _signing_key(worker_key).public_key().export_key(format="raw")


def worker_sign(worker_key: bytes, message: bytes) -> bytes:
    """Wapo.workerSign: an RFC 8032 Ed25519 signature by the worker key."""
    from Crypto.Signature import eddsa

    return eddsa.new(_signing_key(worker_key), "rfc8032").sign(message)


# Wapo.sgxQuote outside an enclave: a dev quote (never passes production verification; the
# layout is shared with kit.trust.dev):
#   DEV_QUOTE_MAGIC || report_data (64) || worker Ed25519 public key (32)
#   || Ed25519 signature over (DEV_QUOTE_MAGIC || report_data) (64)
# report_data follows the real worker (REFERENCE section 6):
#   keccak256(0x65 || app_address || message) || 32 zero bytes,
# where the local app_address is sha256 of the contract code's bytes (a named choice: the real
# worker's app address is not settled, see kit.trust.quotes).
DEV_QUOTE_MAGIC = b"KIT-DEV-QUOTE-v1\x00"
_APP_DATA_CONTENT_TYPE = b"\x65"


def local_app_address(code: str) -> bytes:
    """The app address the local runtime quotes: sha256 of the contract code's UTF-8 bytes."""
    return hashlib.sha256(code.encode("utf-8")).digest()


def dev_quote(worker_key: bytes, code: str, message: bytes) -> bytes:
    """Wapo.sgxQuote in the local runtime: the dev quote for `message` (layout above)."""
    payload = _APP_DATA_CONTENT_TYPE + local_app_address(code) + message
    report_data = wapo_hash("keccak256", payload) + bytes(32)
    signed = DEV_QUOTE_MAGIC + report_data
    return signed + worker_public_key(worker_key) + worker_sign(worker_key, signed)


# ---- Wapo key material from elsewhere (a dstack CVM's guest agent) ----------------------------


@dataclass(frozen=True)
class WapoSource:
    """Where `Wapo.deriveSecret` and `Wapo.sgxQuote` come from for one contract, when not from
    the local worker key (`invoke(..., wapo=None)`, as `kit dev` runs). `kit gateway serve` in
    a dstack CVM builds one per CID from the guest agent (`kit.dstack.guest`).

    - `derive_secret(code, salt)`: the 64 bytes `Wapo.deriveSecret(salt)` returns;
    - `quote(code, message)`: `{"quote": hex, "event_log": JSON text, "compose_hash": hex}`;
      the contract gets the quote's bytes with the other two as the read-only `dstack` property.
    Either may raise a `KitError` (the guest agent failed): the contract sees a thrown Error.
    """

    derive_secret: Callable[[str, bytes], bytes]
    quote: Callable[[str, bytes], Mapping[str, Any]]


# ---- one invocation ----------------------------------------------------------------------------


class _ContractError(Exception):
    """A host function refusing the contract's call: thrown into JavaScript, not a fault."""

    def __init__(self, message: str, js_type: str = "Error") -> None:
        super().__init__(message)
        self.js_type = js_type


class _Fault(Exception):
    """The invocation failed as a whole: becomes a 500 JSON answer."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Disarm:
    """Clears the binding's time-limit flag when QuickJS frees the function wrapping it."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx

    def __call__(self) -> None:
        return None

    def __del__(self) -> None:
        self.ctx.set_time_limit(-1)
        self.ctx = None


class _Alarms:
    """One daemon thread that runs short callbacks at given `time.monotonic()` instants. A
    callback runs under the lock, so once `cancel` returns it is not running and never will."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int]] = []
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._seq = 0
        self._thread: threading.Thread | None = None

    def add(self, when: float, callback: Callable[[], None]) -> int:
        with self._cond:
            self._seq += 1
            earliest = self._heap[0][0] if self._heap else None
            self._callbacks[self._seq] = callback
            heapq.heappush(self._heap, (when, self._seq))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="kit-alarms", daemon=True)
                self._thread.start()
            elif earliest is None or when < earliest:
                self._cond.notify()
            if len(self._heap) > 256 and len(self._heap) > 4 * len(self._callbacks):
                self._heap = [item for item in self._heap if item[1] in self._callbacks]
                heapq.heapify(self._heap)
            return self._seq

    def cancel(self, handle: int) -> None:
        with self._cond:
            self._callbacks.pop(handle, None)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                while self._heap and (self._heap[0][0] <= now
                                      or self._heap[0][1] not in self._callbacks):
                    callback = self._callbacks.pop(heapq.heappop(self._heap)[1], None)
                    try:
                        if callback is not None:
                            callback()  # tiny: a memory write, a socket shutdown
                    except Exception:  # noqa: BLE001 - the watchdog must outlive any callback
                        pass
                self._cond.wait(min(self._heap[0][0] - now, _MAX_WAIT) if self._heap else None)


_MAX_WAIT = 3600.0  # Condition.wait refuses an infinite timeout
_alarms = _Alarms()

# The probe time limit (seconds) whose clock ticks no other field of a fresh context holds, and
# the limit word's value that the binding's CPU clock never reaches.
_PROBE_SECONDS = 7777.123457
_CLOCKS_PER_SEC = 1_000_000  # POSIX (XSI) fixes it; a platform that differs fails the self-check
_NEVER = 1 << 62
_limit_offset: int | None = None
_limit_lock = threading.Lock()
_BINDING_MESSAGE = ("the quickjs binding does not let the runtime enforce its wall-clock limit "
                    "({}); install the quickjs version pinned in pyproject.toml")


def _install_handler(ctx: Any, seconds: float) -> None:
    """Install the interrupt handler for good (see the module docstring): the call starts with
    the limit set, and deleting the only reference to `__kit_disarm` runs its finalizer inside
    that same call, clearing the flag so the call's end leaves the handler in place."""
    ctx.set_time_limit(seconds)
    ctx.add_callable("__kit_disarm", _Disarm(ctx))
    ctx.eval("delete globalThis.__kit_disarm;")


def _words(ctx: Any) -> list[int]:
    base, size = id(ctx), type(ctx).__basicsize__
    return [ctypes.c_int64.from_address(base + at).value for at in range(0, size - 7, 8)]


def _find_limit_word(ctx: Any) -> int:
    """The offset, in the context object, of the handler's limit word: the one field that takes
    the probe's clock ticks when the handler is installed (set_time_limit alone keeps them in
    another field). Installs the handler on `ctx`."""
    ticks = round(_PROBE_SECONDS * _CLOCKS_PER_SEC)
    ctx.set_time_limit(_PROBE_SECONDS)
    before = _words(ctx)
    _install_handler(ctx, _PROBE_SECONDS)
    after = _words(ctx)
    found = [at * 8 for at, (old, new) in enumerate(zip(before, after))
             if new == ticks and old != ticks]
    if len(found) != 1:
        raise ExternalError(_BINDING_MESSAGE.format("its interrupt data was not found"))
    return found[0]


def _check_binding() -> int:
    """Find the limit word in a throwaway context and prove that host functions work with the
    handler installed, that 0 in the word stops a running loop, and that _NEVER lets it run."""
    import quickjs

    ctx = quickjs.Context()
    offset = _find_limit_word(ctx)
    word = ctypes.c_int64.from_address(id(ctx) + offset)
    ctx.add_callable("__kit_probe", lambda: True)
    word.value = _NEVER
    if not ctx.eval("(() => { try { return __kit_probe(); } catch (e) { return false; } })()"):
        raise ExternalError(_BINDING_MESSAGE.format("host functions fail with the limit armed"))
    loop = "(() => { let i = 0; while (i < 1e6) i++; return i; })()"
    word.value = 0
    try:
        ctx.eval(loop)
    except quickjs.JSException as exc:
        if "interrupted" not in str(exc):
            raise
    else:
        raise ExternalError(_BINDING_MESSAGE.format("a running loop was not stopped"))
    word.value = _NEVER
    if ctx.eval(loop) != 1e6:
        raise ExternalError(_BINDING_MESSAGE.format("the loop did not run to its end"))
    return offset


def _arm_time_limit(ctx: Any) -> ctypes.c_int64:
    """Install the interrupt handler on `ctx` and answer its limit word, set to _NEVER: write 0
    to stop the context's JavaScript at the handler's next check. Valid while `ctx` lives."""
    global _limit_offset
    if _limit_offset is None:
        with _limit_lock:
            if _limit_offset is None:
                _limit_offset = _check_binding()
    _install_handler(ctx, _PROBE_SECONDS)
    word = ctypes.c_int64.from_address(id(ctx) + _limit_offset)
    word.value = _NEVER
    return word


_MODULE_MARK = "\n//@module "


@lru_cache(maxsize=1)
def _prelude_parts() -> tuple[str, dict[str, str]]:
    """The prelude's core (evaluated in every context) and its modules by name (each compiled
    only in the contexts that use it; see the head of runtime_prelude.js)."""
    text = (Path(__file__).with_name("runtime_prelude.js")).read_text(encoding="utf-8")
    core, *chunks = text.split(_MODULE_MARK)
    modules = {}
    for chunk in chunks:
        name, _, source = chunk.partition("\n")
        modules[name.strip()] = source
    return core, modules


@dataclass
class _Loop:
    """Host-side event sources: the timer heap and the in-flight fetches."""

    timer_heap: list[tuple[float, int, int]] = field(default_factory=list)
    timers: dict[int, float] = field(default_factory=dict)
    fetches: set[int] = field(default_factory=set)
    fetch_due: dict[int, tuple[float, float]] = field(default_factory=dict)  # (due, timeout)
    done: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    seq: int = 0

    def add_timer(self, timer_id: int, due: float) -> None:
        self.seq += 1
        self.timers[timer_id] = due
        heapq.heappush(self.timer_heap, (due, self.seq, timer_id))

    def next_due(self) -> float | None:
        while self.timer_heap:
            due, _, timer_id = self.timer_heap[0]
            if self.timers.get(timer_id) == due:
                return due
            heapq.heappop(self.timer_heap)
        return None

    def pop_due(self, now: float) -> int | None:
        due = self.next_due()
        if due is None or due > now:
            return None
        _, _, timer_id = heapq.heappop(self.timer_heap)
        del self.timers[timer_id]
        return timer_id

    def next_fetch_due(self) -> float | None:
        return min((due for due, _ in self.fetch_due.values()), default=None)

    def pop_expired_fetch(self, now: float) -> tuple[int, float] | None:
        """A fetch past its whole-time limit, no longer in flight for the contract."""
        for fetch_id, (due, timeout) in self.fetch_due.items():
            if due <= now:
                self.end_fetch(fetch_id)
                return fetch_id, timeout
        return None

    def end_fetch(self, fetch_id: int) -> None:
        self.fetches.discard(fetch_id)
        self.fetch_due.pop(fetch_id, None)

    def idle(self) -> bool:
        return not self.timers and not self.fetches


class _Session:
    """One fresh QuickJS context, its host functions and its event loop. Single-threaded: the
    context is created, driven and dropped by the calling thread; fetch threads only hand
    results over through a queue."""

    def __init__(self, code: str, limits: Limits, worker_key: bytes,
                 wapo: WapoSource | None = None) -> None:
        self.code, self.limits, self.worker_key, self.wapo = code, limits, worker_key, wapo
        self.started = time.monotonic()
        self.deadline = self.started + limits.time_seconds
        self.logs: list[str] = []
        self.request_json = ""
        self.loop = _Loop()
        self.ops: dict[str, Callable[..., Any]] = {
            "log": self._log, "now": self._now, "timer": self._set_timer,
            "untimer": self._clear_timer, "fetch": self._start_fetch, "unfetch": self._cancel_fetch,
            "deriveSecret": self._derive_secret, "hash": self._hash,
            "nonCryptographicHash": self._nc_hash, "workerPublicKey": self._public_key,
            "workerSign": self._sign, "sgxQuote": self._sgx_quote, "module": self._module_source,
            "request": lambda: self.request_json,
        }

    # -- driving the context --

    def run(self, request_json: str) -> str | None:
        import quickjs

        ctx = quickjs.Context()
        ctx.set_memory_limit(self.limits.memory_bytes)
        ctx.set_max_stack_size(_STACK_BYTES)
        self._limit_word: ctypes.c_int64 | None = _arm_time_limit(ctx)
        self._alarm = _alarms.add(self.deadline, self._interrupt)
        try:
            return self._run(ctx, request_json)
        finally:
            _alarms.cancel(self._alarm)  # before the context (and its limit word) goes away
            self._limit_word = None

    def _interrupt(self) -> None:
        """Alarm callback (watchdog thread): stop the context's JavaScript at its next check."""
        if self._limit_word is not None:
            self._limit_word.value = 0

    def _rearm(self, seconds: float) -> None:
        """Let JavaScript run again, for at most `seconds` from now."""
        _alarms.cancel(self._alarm)
        if self._limit_word is not None:
            self._limit_word.value = _NEVER
        self._alarm = _alarms.add(time.monotonic() + seconds, self._interrupt)

    def _run(self, ctx: Any, request_json: str) -> str | None:
        # Every call into the binding gives up the GIL and takes it back (a wait under load),
        # so the prelude does its setup in one call and hands its entry points over itself.
        self.request_json = request_json
        entry_points: list[Any] = []
        ctx.add_callable("__kit_host", self._host)
        ctx.add_callable("__kit_register", lambda *functions: entry_points.extend(functions))
        self._guard(ctx, ctx.eval, _prelude_parts()[0])
        events, read_output = entry_points
        entry_points.clear()  # the context holds the lambda: no cycle back to the context
        last_value = self._eval_contract(ctx)
        if not self._drive(ctx, events):
            return self._read_output(ctx, read_output, last_value)
        timeout = _Fault("timeout", f"time limit of {self.limits.time_seconds:g} s exceeded "
                                    "before the contract set scriptOutput")
        # Past the limit only an output already in place counts: a plain string property,
        # read without running contract code (a looping getter cannot extend the run).
        self._rearm(_LATE_READ_SECONDS)
        try:
            output = self._guard(ctx, read_output, True)
        except _Fault:
            raise timeout from None
        if output is None:
            raise timeout
        self._append_log("warn", "time limit reached after scriptOutput was set; "
                                 "pending timers or fetches were dropped")
        return output

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _eval_contract(self, ctx: Any) -> Any:
        """Run the contract's code; its completion value (the output when scriptOutput stays
        unset), or _UNREADABLE when that value is a string Python cannot hold."""
        try:
            return self._guard(ctx, ctx.eval, self.code)
        except _Fault as fault:
            if fault.code == "invalid_output":
                return _UNREADABLE
            raise
        except TypeError:  # a value with no Python form (a BigInt, a Symbol): not an output
            return None

    def _guard(self, ctx: Any, fn: Callable[..., Any], *args: Any) -> Any:
        """Call into JavaScript (the armed interrupt handler bounds it); classify what escapes,
        including a returned value the binding cannot convert (it raises for those)."""
        import quickjs

        try:
            return fn(*args)
        except quickjs.StackOverflow:
            raise _Fault("stack_overflow", "maximum call stack size exceeded") from None
        except quickjs.JSException as exc:
            raise self._classify(str(exc), ctx) from None
        except UnicodeDecodeError:  # a JavaScript string holding a lone UTF-16 surrogate
            raise _Fault("invalid_output", _LONE_SURROGATE.format("scriptOutput")) from None

    def _classify(self, text: str, ctx: Any) -> _Fault:
        first = text.splitlines()[0] if text else ""
        if first.startswith("InternalError: interrupted") and self._remaining() <= 0:
            return _Fault("timeout", f"time limit of {self.limits.time_seconds:g} s exceeded")
        if "stack overflow" in first:
            return _Fault("stack_overflow", "maximum call stack size exceeded")
        # An exhausted heap may not even build the error's message: QuickJS hands back none,
        # which looks like `throw null`; the heap's size tells the two apart.
        no_message = first in ("", "null") or first.startswith("(Failed")
        heap_full = no_message and ctx.memory()["malloc_size"] >= self.limits.memory_bytes // 2
        if "out of memory" in first or heap_full:
            return _Fault("memory_limit", f"memory limit of {self.limits.memory_bytes} bytes "
                                          "exceeded")
        self._append_log("error", f"Uncaught {text}")
        return _Fault("uncaught_exception", first[:500])

    def _drive(self, ctx: Any, events: Any) -> bool:
        """Run jobs, timers and fetch completions until idle (False) or out of time (True)."""
        while True:
            if not self._run_jobs(ctx):
                return True
            now = time.monotonic()
            timer_id = self.loop.pop_due(now)
            if timer_id is not None:
                self._guard(ctx, events, "timer", timer_id, "")
                continue
            expired = self.loop.pop_expired_fetch(now)
            if expired is not None:  # whatever the fetch thread still waits for (a dripping body)
                fetch_id, timeout = expired
                self._guard(ctx, events, "fetch", fetch_id, json.dumps({"error": _fetch_timeout(
                    timeout)}))
                continue
            if self.loop.idle():
                return False
            wait = min(due for due in (self.deadline, self.loop.next_due(),
                                       self.loop.next_fetch_due()) if due is not None) - now
            if self._remaining() <= 0:
                return True
            try:
                fetch_id, result = self.loop.done.get(timeout=max(wait, 0))
            except queue.Empty:
                continue
            if fetch_id in self.loop.fetches:
                self.loop.end_fetch(fetch_id)
                self._guard(ctx, events, "fetch", fetch_id, json.dumps(result))

    def _run_jobs(self, ctx: Any) -> bool:
        """Drain the promise job queue; False once the deadline has passed."""
        while True:
            if self._remaining() <= 0:
                return False
            if not self._guard(ctx, ctx.execute_pending_job):
                return True

    def _read_output(self, ctx: Any, read_output: Any, last_value: Any) -> str | None:
        """scriptOutput as a string (None when unset), read within the time limit."""
        found = self._guard(ctx, read_output, False)
        if found is not None:
            return found
        if last_value is _UNREADABLE:
            raise _Fault("invalid_output", _LONE_SURROGATE.format("the completion value"))
        return last_value if isinstance(last_value, str) else None

    # -- host functions: called from JavaScript, must never raise --

    def _host(self, op: str, args_json: str) -> str:
        try:
            return json.dumps({"v": self.ops[op](*json.loads(args_json))})
        except _ContractError as exc:
            return json.dumps({"e": str(exc), "t": exc.js_type})
        except Exception as exc:  # a host bug must reach the contract as an error, not a crash
            return json.dumps({"e": f"internal error in host function {op}: {type(exc).__name__}"})

    def _append_log(self, level: str, text: str) -> None:
        if len(self.logs) < _MAX_LOG_ENTRIES:
            text = _well_formed(text)
            if len(text) > _MAX_LOG_ENTRY_CHARS:
                text = text[:_MAX_LOG_ENTRY_CHARS] + f"... ({len(text)} chars)"
            self.logs.append(f"[{level}] {text}")
        elif len(self.logs) == _MAX_LOG_ENTRIES:
            self.logs.append(f"[warn] log limit of {_MAX_LOG_ENTRIES} entries reached; "
                             "later entries were dropped")

    def _log(self, level: str, text: str) -> None:
        self._append_log(level, text)

    def _now(self) -> float:
        return (time.monotonic() - self.started) * 1000.0

    def _set_timer(self, timer_id: int, delay_ms: float) -> None:
        self.loop.add_timer(timer_id, time.monotonic() + max(delay_ms, 0) / 1000.0)

    def _clear_timer(self, timer_id: int) -> None:
        self.loop.timers.pop(timer_id, None)

    def _start_fetch(self, fetch_id: int, spec: dict[str, Any]) -> None:
        if not str(spec.get("url", "")).startswith(("http://", "https://")):
            raise _ContractError(
                f"fetch supports http and https URLs only, not {spec.get('url')!r}", "TypeError")
        if len(self.loop.fetches) >= _MAX_CONCURRENT_FETCHES:
            raise _ContractError(f"too many concurrent fetches (limit {_MAX_CONCURRENT_FETCHES})",
                                 "TypeError")
        timeout = max(min(self.limits.fetch_timeout, self._remaining()), 0.001)
        _fetch_workers.run(_fetch_into, self.loop.done, fetch_id, spec, timeout)
        self.loop.fetches.add(fetch_id)  # its result is read by this thread, after this call
        self.loop.fetch_due[fetch_id] = (time.monotonic() + timeout, timeout)

    def _cancel_fetch(self, fetch_id: int) -> None:
        self.loop.end_fetch(fetch_id)

    def _module_source(self, name: str) -> str:
        return _prelude_parts()[1][name]

    def _derive_secret(self, salt_hex: str) -> str:
        salt = bytes.fromhex(salt_hex)
        if self.wapo is None:
            return derive_secret(self.worker_key, self.code, salt).hex()
        with _outside_failures():
            secret = self.wapo.derive_secret(self.code, salt)
        return secret.hex()

    def _hash(self, algorithm: str, data_hex: str) -> str:
        return wapo_hash(algorithm, bytes.fromhex(data_hex)).hex()

    def _nc_hash(self, algorithm: str, data_hex: str) -> str:
        if algorithm != "wyhash64":
            raise _ContractError(
                f"unsupported non-cryptographic hash {algorithm!r}; use 'wyhash64'")
        return wyhash64(bytes.fromhex(data_hex)).to_bytes(8, "little").hex()

    def _public_key(self) -> str:
        return worker_public_key(self.worker_key).hex()

    def _sign(self, message_hex: str) -> str:
        return worker_sign(self.worker_key, bytes.fromhex(message_hex)).hex()

    def _sgx_quote(self, message_hex: str) -> str | dict[str, Any]:
        message = bytes.fromhex(message_hex)
        if self.wapo is None:
            return dev_quote(self.worker_key, self.code, message).hex()
        with _outside_failures():
            answer = self.wapo.quote(self.code, message)
        return {name: answer.get(name) for name in ("quote", "event_log", "compose_hash")}


@contextmanager
def _outside_failures() -> Iterator[None]:
    """A `KitError` from a `WapoSource` (its message names the step, never a secret) becomes an
    Error thrown into the contract, not an internal error."""
    from kit.errors import KitError

    try:
        yield
    except KitError as exc:
        raise _ContractError(str(exc)) from None


class _Workers:
    """Daemon threads for fetches, reused: starting a thread per fetch cost about as much as the
    fetch itself. A job never waits for a busy worker (a new thread starts when none is idle), so
    a fetch's timeout runs from its start as before; a worker idle for `idle_seconds` ends.
    Daemon threads, as before, so a fetch left running never holds the process open."""

    def __init__(self, idle_seconds: float = 60.0) -> None:
        self.idle_seconds = idle_seconds
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a job and not yet promised one

    def run(self, function: Callable[..., None], *args: Any) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        if start:  # first, so that a thread that cannot start leaves no job behind
            threading.Thread(target=self._work, name="kit-fetch", daemon=True).start()
        self._jobs.put((function, args))

    def _work(self) -> None:
        while True:
            try:
                function, args = self._jobs.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # no job was promised to this worker: it may end
                        self._idle -= 1
                        return
                continue
            function(*args)  # never raises: _fetch_into hands every failure over
            with self._lock:
                self._idle += 1


_fetch_workers = _Workers()


def _fetch_into(done: queue.SimpleQueue, fetch_id: int, spec: dict[str, Any],
                timeout: float) -> None:
    """Fetch-thread body: always hands a result over, so the event loop never waits in vain."""
    try:
        result = _perform_fetch(spec, timeout)
    except Exception as exc:  # e.g. a header value http.client cannot encode
        result = {"error": f"fetch failed: {type(exc).__name__}"}
    done.put((fetch_id, result))


# Fetches share keep-alive connections across invocations: opening a TCP connection (and the
# requests.Session around it) for every fetch cost more CPU than running the contract. Pooled
# connections carry no state of one invocation into another: a response is read to its end
# before its connection goes back to the pool, and a connection is dropped when it is not.
_POOL_HOSTS = 32
_POOL_CONNECTIONS_PER_HOST = 8  # idle ones kept; more may be open at once, closed after use
_MAX_REDIRECTS = 20  # the fetch standard's limit
_REDIRECT_STATUSES = (301, 302, 303, 307, 308)


@lru_cache(maxsize=1)
def _connection_pools() -> Any:
    """The process's shared pool manager (thread-safe), with the CA bundle requests uses."""
    import certifi  # a dependency of requests, as urllib3 is
    import urllib3

    return urllib3.PoolManager(num_pools=_POOL_HOSTS, maxsize=_POOL_CONNECTIONS_PER_HOST,
                               block=False, ca_certs=certifi.where())


def _perform_fetch(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """One HTTP request for the contract's fetch, following redirects as fetch does; every
    failure becomes {"error": ...} (names as requests gave them: ConnectionError, ...)."""
    import urllib3

    body = spec["text"].encode("utf-8") if "text" in spec else (
        base64.b64decode(spec["b64"]) if "b64" in spec else None)
    method, url, headers = spec["method"], spec["url"], dict(spec["headers"])
    redirects, deadline = 0, time.monotonic() + timeout
    try:
        while True:
            response = _connection_pools().urlopen(
                method, url, body=body, headers=headers, redirect=False, retries=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout), preload_content=False)
            location = response.headers.get("location")
            if response.status not in _REDIRECT_STATUSES or not location:
                break
            response.close()  # a redirect's body is not read; its connection is not reused
            redirects += 1
            if redirects > _MAX_REDIRECTS:
                return {"error": f"fetch failed: more than {_MAX_REDIRECTS} redirects"}
            method, url, body, headers = _redirected(response.status, method, url, location,
                                                     body, headers)
        try:
            content = _read_until(response, deadline)
        finally:
            response.release_conn()
    except urllib3.exceptions.NewConnectionError:  # before TimeoutError: it subclasses it
        return {"error": "fetch failed: ConnectionError"}
    except (urllib3.exceptions.TimeoutError, _FetchDeadline):
        return {"error": _fetch_timeout(timeout)}
    except (urllib3.exceptions.ProtocolError, ConnectionError):
        return {"error": "fetch failed: ConnectionError"}
    except urllib3.exceptions.HTTPError as exc:
        return {"error": f"fetch failed: {type(exc).__name__}"}
    except _ContractError as exc:
        return {"error": str(exc)}
    answer: dict[str, Any] = {
        "status": response.status, "statusText": response.reason or "",
        "headers": [[k.lower(), v] for k, v in response.headers.items()],
        "url": url, "redirected": redirects > 0,
    }
    try:
        answer["text"] = content.decode("utf-8")
    except UnicodeDecodeError:
        answer["b64"] = base64.b64encode(content).decode("ascii")
    return answer


def _redirected(status: int, method: str, url: str, location: str, body: bytes | None,
                headers: dict[str, str]) -> tuple[str, str, bytes | None, dict[str, str]]:
    """The next request after a redirect, as the fetch standard makes it: 303 (and 301/302
    after a POST) becomes a GET without a body; credentials stay with their origin."""
    from urllib.parse import urljoin, urlsplit

    target = urljoin(url, location)
    if not target.startswith(("http://", "https://")):
        raise _ContractError(f"fetch failed: redirect to a non-http URL {target[:200]!r}")
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", None
        headers = {k: v for k, v in headers.items()
                   if k.lower() not in ("content-type", "content-length", "content-encoding",
                                        "content-language", "content-location")}
    before, after = urlsplit(url), urlsplit(target)
    if (before.scheme, before.netloc) != (after.scheme, after.netloc):
        headers = {k: v for k, v in headers.items()
                   if k.lower() not in ("authorization", "cookie", "proxy-authorization")}
    return method, target, body, headers


def _fetch_timeout(timeout: float) -> str:
    return f"fetch failed: no answer within {timeout:.1f} s"


class _FetchDeadline(Exception):
    """The fetch's whole time ran out while its body was read."""


def _read_until(response: Any, deadline: float) -> bytes:
    """The body, read by `deadline`: a server that drips it slowly has its socket shut down
    then (the read timeout bounds each wait for bytes, not the whole body)."""
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        sock = getattr(response.connection, "sock", None)
        try:
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    alarm = _alarms.add(deadline, stop)
    try:
        content = _read_capped(response)
    except Exception:
        if not expired.is_set():
            raise
    finally:
        _alarms.cancel(alarm)
    if expired.is_set():  # the shut-down socket may also read as an early end of the body
        response.close()  # never reuse the connection
        raise _FetchDeadline()
    return content


def _read_capped(response: Any) -> bytes:
    chunks, total = [], 0
    for chunk in response.stream(65536):
        total += len(chunk)
        if total > _MAX_FETCH_BODY_BYTES:
            response.close()  # unread bytes stay on the connection: never reuse it
            raise _ContractError(f"fetch failed: response body over {_MAX_FETCH_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# ---- output mapping ----------------------------------------------------------------------------


def _fault_answer(code: str, message: str) -> tuple[int, dict[str, str], str, str]:
    body = json.dumps({"error": {"code": code, "message": message}})
    return 500, dict(_JSON_HEADERS), body, f"{code}: {message}"


def map_output(output: str | None) -> tuple[int, dict[str, str], str, str | None]:
    """The gateway's mapping of scriptOutput to (status, headers, body, error)."""
    if output is None:
        return _fault_answer("no_output", "the contract finished without setting scriptOutput "
                                          "(a promise that never settles?)")
    if output == "":
        return 200, {}, "", None
    try:
        data = jsonsafe.loads(output)
    except ValueError:
        return _fault_answer("invalid_output", f"scriptOutput is not JSON: {output[:200]!r}")
    if not isinstance(data, dict):
        return _fault_answer("invalid_output", "scriptOutput must be a JSON object "
                                               '{"status", "body", "headers"}')
    if data.get("success") is False:
        message = _well_formed(str(data.get("error")))[:500]
        return 500, dict(_JSON_HEADERS), output, f"contract_error: {message}"
    return _checked_response(data)


def _checked_response(data: dict[str, Any]) -> tuple[int, dict[str, str], str, str | None]:
    status, body, headers = data.get("status", 200), data.get("body", ""), data.get("headers", {})
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return _fault_answer("invalid_output", f"status must be an integer 200-599 (1xx are "
                                               f"interim answers, never final), got {status!r:.80}")
    if not isinstance(body, str):
        return _fault_answer("invalid_output", f"body must be a string, got {type(body).__name__}")
    if not body.isascii() and _well_formed(body) is not body:
        return _fault_answer("invalid_output", _LONE_SURROGATE.format("body"))
    if not isinstance(headers, dict) or not all(
        isinstance(v, str) for v in headers.values()
    ):
        return _fault_answer("invalid_output", "headers must be an object of string values")
    for name, value in headers.items():
        problem = _header_problem(name, value)
        if problem:
            return _fault_answer("invalid_output", problem)
    return status, dict(headers), body, None


def _header_problem(name: str, value: str) -> str | None:
    """Why a header cannot be written as given (it is never written raw: CR or LF would split
    the answer, and HTTP/1.1 carries latin-1 only)."""
    if not _HEADER_NAME.fullmatch(name):
        return (f"header name {ascii(name)[:80]} is not an HTTP token (letters, digits and "
                "!#$%&'*+-.^_`|~ only)")
    allowed = _HEADER_VALUE.match(value)  # always matches (maybe empty): where it stops
    bad = allowed.end() if allowed else 0
    if bad < len(value):  # the value itself is never echoed: it may hold a secret
        return (f"header {name} has a value with CR, LF, another control character or a "
                f"character outside latin-1 (U+{ord(value[bad]):04X} at position {bad})")
    return None


def _well_formed(text: str) -> str:
    """`text` itself when UTF-8 can carry it, else a copy with each lone surrogate as U+FFFD."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def invoke(
    code: str,
    request: dict[str, Any],
    *,
    limits: Limits = Limits(),
    worker_key: bytes | None = None,
    wapo: WapoSource | None = None,
) -> Invocation:
    """Run `code` once on the serialized `request` in a fresh context and map its output.
    `wapo`: where deriveSecret and sgxQuote come from (None: the worker key, dev quotes)."""
    key = default_worker_key() if worker_key is None else worker_key
    if len(key) != WORKER_KEY_BYTES:
        raise InputError(f"worker key must be {WORKER_KEY_BYTES} bytes, got {len(key)}")
    session = _Session(code, limits, key, wapo)
    try:
        status, headers, body, error = map_output(session.run(json.dumps(request)))
    except _Fault as fault:
        status, headers, body, error = _fault_answer(fault.code, fault.message)
    duration_ms = (time.monotonic() - session.started) * 1000.0
    return Invocation(status, headers, body, session.logs, error, duration_ms)
