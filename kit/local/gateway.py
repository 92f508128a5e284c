"""The local gateway: the Phala gateway's protocol on 127.0.0.1 (REFERENCE section 1).

- `ANY /ipfs/<cid>[/sub/path]?...` loads the contract by CID (the IPFS node first, then the
  project's `dist/agent.js`), re-hashes the bytes and refuses any that do not hash to the CID,
  serializes the request (gen-1), runs it in `kit.local.runtime` and answers what the contract answered.
- `POST /vaults`, `GET /vaults/<key>/<token>`: the vault (`kit.local.vault`).
- `GET /logs/all/ipfs/<cid>[?format=json|text&limit=N&requestId=ID]`: recent invocation logs,
  newest first, with the full request URL as the real gateway logs it (so anything in a query
  string is public) and the contract's console lines; never request bodies or vault data.

Choices where the real gateway differs or is not published: the real one routes every method to
the contract; the gen-1 request only defines GET, POST, PUT and PATCH, so other methods get a
405 here instead of reaching a contract that cannot name them. Gateway errors are JSON
`{"error": {"code", "message"}}` (the real gateway answers plain text) so tools can read them.

HTTP hardening: a request whose Content-Length headers disagree is refused (400) and its
connection closed, as is any chunked body (411); JSON nested past Python's stack is a 400. Each
contract run has its own wall-clock limit (`kit.local.runtime.Limits.time_seconds`).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qsl, urlsplit

from kit import jsonsafe
from kit.errors import CidMismatch, InputError, KitError
from kit.local.httpserver import BackgroundServer, KeepAliveHandler

if TYPE_CHECKING:
    from kit.local.runtime import Limits, WapoSource

MAX_BODY_BYTES = 1 << 20
CODE_CACHE_ENTRIES = 64
LOG_RECORDS_PER_CID = 500
IPFS_LOOKUP_TIMEOUT = 3.0
QUEUE_TIMEOUT = 10.0
SOCKET_TIMEOUT = 30.0
CONTRACT_METHODS = ("GET", "POST", "PUT", "PATCH")
_HOP_BY_HOP = {"connection", "content-length", "transfer-encoding", "keep-alive", "upgrade"}
_LOG_LEVELS = {"log": "INFO", "info": "INFO", "debug": "INFO", "warn": "WARN", "error": "ERROR"}


class CodeNotFound(KitError):
    """No source holds code for the CID."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(status: int, value: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, json.dumps(value).encode(), {"content-type": "application/json",
                                                      **(headers or {})})


def error_reply(status: int, code: str, message: str) -> Reply:
    return json_reply(status, {"error": {"code": code, "message": message}})


# ---- code by CID ---------------------------------------------------------------------------------


def hashes_to(data: bytes, cid: str) -> bool:
    """Whether `data` added with Kubo's recipe for the CID's version gives that CID."""
    from kit.cid import bytes_cid, cid_version_of, to_cidv1_base32

    computed = bytes_cid(data, version=cid_version_of(cid))
    return to_cidv1_base32(computed) == to_cidv1_base32(cid)


class CodeStore:
    """Verified contract code by CID, from the IPFS node then the project build, LRU-cached."""

    def __init__(self, project_dir: Path | None, ipfs_api: str | None,
                 ipfs_timeout: float = IPFS_LOOKUP_TIMEOUT) -> None:
        self.project_dir, self.ipfs_api, self.ipfs_timeout = project_dir, ipfs_api, ipfs_timeout
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def load(self, cid: str) -> str:
        with self._lock:
            if cid in self._cache:
                self._cache.move_to_end(cid)
                return self._cache[cid]
        code = self._fetch_verified(cid)
        with self._lock:
            self._cache[cid] = code
            while len(self._cache) > CODE_CACHE_ENTRIES:
                self._cache.popitem(last=False)
        return code

    def _fetch_verified(self, cid: str) -> str:
        # The project's own build first (verified there; a few ms to hash): a fresh build under
        # `kit dev --watch` is served at once instead of after an IPFS lookup that may wait for
        # its timeout on a node that lacks it.
        data = self._from_project(cid)
        if data is not None:
            return data.decode("utf-8", "replace")
        data = self._from_ipfs(cid)
        if data is not None and not hashes_to(data, cid):
            raise CidMismatch(f"the IPFS node returned {len(data)} bytes for {cid} that do not "
                              "hash to that CID; refusing to run them")
        if data is None:
            data = self._from_project(cid)  # verified there: another build is "not found"
        if data is not None:
            return data.decode("utf-8", "replace")
        raise CodeNotFound(f"no code for {cid}: not on the IPFS node "
                           f"({self.ipfs_api or 'none configured'}) and not the project's build; "
                           "run `kit build` or `kit deploy`")

    def _from_ipfs(self, cid: str) -> bytes | None:
        if not self.ipfs_api:
            return None
        from kit.ipfs.client import IpfsClient

        try:
            return IpfsClient(self.ipfs_api, timeout=self.ipfs_timeout).cat(cid)
        except KitError:
            return None  # a node that is down or lacks the CID is one source fewer

    def _from_project(self, cid: str) -> bytes | None:
        if self.project_dir is None:
            return None
        from kit.contract.project import ARTIFACT

        path = self.project_dir / ARTIFACT
        try:
            data = path.read_bytes()
        except OSError:
            return None
        # another build of the project is "not found here", not a mismatch
        return data if hashes_to(data, cid) else None


# ---- invocation logs -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LogRecord:
    script_id: str
    request_id: str
    level: str
    message: str
    created_at: str


class InvocationLogs:
    """A bounded ring buffer of log records per CID."""

    def __init__(self, per_cid: int = LOG_RECORDS_PER_CID) -> None:
        self.per_cid = per_cid
        self._records: dict[str, deque[LogRecord]] = {}
        self._lock = threading.Lock()

    def add(self, cid: str, request_id: str, lines: list[tuple[str, str]]) -> None:
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        records = [LogRecord(f"ipfs/{cid}", request_id, level, message, now)
                   for level, message in lines]
        with self._lock:
            buffer = self._records.setdefault(cid, deque(maxlen=self.per_cid))
            buffer.extend(records)

    def recent(self, cid: str, *, limit: int, request_id: str | None = None) -> list[LogRecord]:
        with self._lock:
            records = list(self._records.get(cid, ()))
        matching = [r for r in reversed(records) if request_id in (None, r.request_id)]
        return matching[:limit]


def console_lines(logs: list[str]) -> list[tuple[str, str]]:
    """The runtime's "[level] text" entries as (LEVEL, text)."""
    lines = []
    for entry in logs:
        level, _, text = entry.partition("] ")
        if entry.startswith("[") and level[1:] in _LOG_LEVELS:
            lines.append((_LOG_LEVELS[level[1:]], text))
        else:
            lines.append(("INFO", entry))
    return lines


# ---- the gateway ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingRequest:
    method: str
    target: str  # path and query exactly as sent
    headers: list[tuple[str, str]]
    body: bytes | None


class LocalGateway:
    """Serves the gateway protocol; `start()` in a background thread or `serve_forever()`."""

    def __init__(
        self,
        project_dir: Path | None = None,
        *,
        ipfs_api: str | None = None,
        vault_path: Path,
        limits: Limits | None = None,
        max_concurrency: int = 8,
        host: str = "127.0.0.1",
        port: int = 0,
        worker_key: bytes | None = None,
        queue_timeout: float = QUEUE_TIMEOUT,
        ipfs_timeout: float = IPFS_LOOKUP_TIMEOUT,
        on_request: Callable[[str, str, int, float], None] | None = None,
        on_invocation: Callable[[str, str, list[str], str | None], None] | None = None,
        wapo_for: Callable[[str], WapoSource] | None = None,
    ) -> None:
        from kit.local.runtime import Limits
        from kit.local.vault import Vault

        self.code = CodeStore(project_dir, ipfs_api, ipfs_timeout)
        self.vault = Vault(vault_path)
        self.logs = InvocationLogs()
        self.limits = limits or Limits()
        self.worker_key, self.queue_timeout = worker_key, queue_timeout
        self.on_request = on_request
        # (cid, code, console lines, error) of each invocation that failed (status >= 500)
        self.on_invocation = on_invocation
        # cid -> where its Wapo.deriveSecret/sgxQuote come from (a dstack guest agent under
        # `kit gateway serve`); None: the worker key and dev quotes, as `kit dev` runs
        self.wapo_for = wapo_for
        self._slots = threading.BoundedSemaphore(max_concurrency)
        handler = type("GatewayHandler", (_Handler,), {"gateway": self})
        self._http = BackgroundServer(host, port, handler, "local gateway")

    # -- lifecycle --

    @property
    def url(self) -> str:
        host, port = self._http.address
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Bind and serve in a daemon thread; the base URL."""
        self._http.start()
        return self.url

    def serve_forever(self) -> None:
        """Serve in the calling thread until interrupted."""
        self._http.serve_forever()

    def stop(self) -> None:
        self._http.stop()

    # -- routing --

    def handle(self, request: IncomingRequest) -> Reply:
        path = urlsplit(request.target).path
        parts = path.split("/")
        if len(parts) >= 3 and parts[1] == "ipfs":
            return self._contract(request, parts[2])
        if path == "/vaults":
            return self._store_secret(request) if request.method == "POST" else \
                error_reply(405, "method_not_allowed", "use POST /vaults")
        if len(parts) == 4 and parts[1] == "vaults" and request.method == "GET":
            return self._read_secret(parts[2], parts[3])
        if len(parts) == 5 and parts[1:4] == ["logs", "all", "ipfs"] and request.method == "GET":
            return self._logs(parts[4], request.target)
        return error_reply(404, "not_found", "routes: /ipfs/<cid>[/path], POST /vaults, "
                                             "GET /vaults/<key>/<token>, GET /logs/all/ipfs/<cid>")

    # -- /ipfs --

    def _contract(self, request: IncomingRequest, cid: str) -> Reply:
        from kit.cid import is_valid_cid

        if request.method not in CONTRACT_METHODS:
            return error_reply(405, "method_not_allowed",
                               f"contracts take {', '.join(CONTRACT_METHODS)}")
        if not is_valid_cid(cid):
            return error_reply(400, "invalid_cid", f"{cid[:100]!r} is not a valid CID")
        try:
            code = self.code.load(cid)
        except CodeNotFound as exc:
            return error_reply(404, "not_found", str(exc))
        except CidMismatch as exc:
            return error_reply(502, "cid_mismatch", str(exc))
        if not self._slots.acquire(timeout=self.queue_timeout):
            return error_reply(503, "busy", "every contract slot is busy; retry shortly")
        try:
            return self._run(request, cid, code)
        finally:
            self._slots.release()

    def _run(self, request: IncomingRequest, cid: str, code: str) -> Reply:
        from kit.local.runtime import invoke, make_request

        split = urlsplit(request.target)
        query_pairs = parse_qsl(split.query, keep_blank_values=True)
        key = next((value for name, value in query_pairs if name == "key"), None)
        serialized = make_request(request.method, split.path, query_pairs, request.headers,
                                  request.body, self.vault.secret_for(cid, key))
        request_id = uuid.uuid4().hex
        wapo = self.wapo_for(cid) if self.wapo_for is not None else None
        result = invoke(code, serialized, limits=self.limits, worker_key=self.worker_key,
                        wapo=wapo)
        lines = [("REPORT", f"START Request: {request.method} {request.target}")]
        lines += console_lines(result.logs)
        if result.error:
            lines.append(("ERROR", result.error))
        lines.append(("REPORT", f"END Request: Duration: {result.duration_ms:.0f}ms"))
        self.logs.add(cid, request_id, lines)
        if self.on_invocation is not None and (result.error or result.status >= 500):
            self.on_invocation(cid, code, result.logs, result.error)
        headers = {name: value for name, value in result.headers.items()
                   if name.lower() not in _HOP_BY_HOP and _safe_header(name, value)}
        headers["x-request-id"] = request_id
        return Reply(result.status, result.body.encode("utf-8"), headers)

    # -- /vaults and /logs --

    def _store_secret(self, request: IncomingRequest) -> Reply:
        try:
            document = jsonsafe.loads(request.body or b"")
        except ValueError:  # also UnicodeDecodeError and jsonsafe.TooDeep
            return error_reply(400, "invalid_json", 'send {"cid": "<cid>", "data": {...}}')
        if not isinstance(document, dict):
            return error_reply(400, "invalid_json", 'send {"cid": "<cid>", "data": {...}}')
        try:
            entry = self.vault.store(document.get("cid"), document.get("data"))
        except InputError as exc:
            return error_reply(400, "invalid_vault_request", str(exc))
        return json_reply(200, {"token": entry.token, "key": entry.key, "succeed": True})

    def _read_secret(self, key: str, token: str) -> Reply:
        from kit.local.vault import VaultKeyUnknown, VaultTokenRejected

        try:
            data = self.vault.read(key, token)
        except VaultKeyUnknown as exc:
            return json_reply(404, {"error": {"code": "not_found", "message": str(exc)},
                                    "succeed": False})
        except VaultTokenRejected as exc:
            return json_reply(403, {"error": {"code": "forbidden", "message": str(exc)},
                                    "succeed": False})
        return json_reply(200, {"data": data, "succeed": True})

    def _logs(self, cid: str, target: str) -> Reply:
        options = dict(parse_qsl(urlsplit(target).query))
        try:
            limit = min(max(int(options.get("limit", "100")), 1), 100)
        except ValueError:
            return error_reply(400, "invalid_limit", "limit must be an integer from 1 to 100")
        records = self.logs.recent(cid, limit=limit, request_id=options.get("requestId"))
        if options.get("format") == "json":
            return json_reply(200, [asdict(record) for record in records])
        text = "".join(f"{r.created_at} [{r.request_id}] [{r.level}] {r.message}\n"
                       for r in records)
        return Reply(200, text.encode("utf-8"), {"content-type": "text/plain; charset=utf-8"})


def _safe_header(name: str, value: str) -> bool:
    """A contract's header must not split the response (CR/LF) or be an invalid name."""
    return bool(name) and all(c.isalnum() or c in "-_" for c in name) and not any(
        c in value for c in "\r\n\0"
    )


def redacted_path(target: str) -> str:
    """The path for an access log: no query string, no vault token."""
    path = urlsplit(target).path
    parts = path.split("/")
    if len(parts) == 4 and parts[1] == "vaults":
        return f"/vaults/{parts[2]}/<token>"
    return path


# ---- HTTP plumbing -------------------------------------------------------------------------------


class _BadBody(Exception):
    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


class _Handler(KeepAliveHandler):
    server_version = "kit-local-gateway"
    default_request_version = "HTTP/1.0"  # so that errors on junk still carry a status line
    timeout = SOCKET_TIMEOUT
    gateway: LocalGateway  # set on the subclass made per gateway

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """The standard library's answer to an unparsable request, as JSON."""
        self.close_connection = True
        self._send(error_reply(code, "bad_request", message or "malformed HTTP request"))

    def _read_body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding"):
            raise _BadBody(error_reply(411, "length_required", "send a Content-Length body"))
        values = self.headers.get_all("Content-Length") or []
        if len(set(values)) > 1:  # which one frames the body is ambiguous: a smuggling vector
            raise _BadBody(error_reply(400, "invalid_content_length",
                                       "conflicting Content-Length headers"))
        declared = values[0] if values else None
        if declared is None:
            return None
        if not (declared.isascii() and declared.isdigit()):
            raise _BadBody(error_reply(400, "invalid_content_length", "bad Content-Length"))
        if int(declared) > MAX_BODY_BYTES:
            raise _BadBody(error_reply(413, "body_too_large",
                                       f"bodies are limited to {MAX_BODY_BYTES} bytes"))
        return self.rfile.read(int(declared))

    def _dispatch(self) -> None:
        started = time.monotonic()
        try:
            body = self._read_body()
            reply = self.gateway.handle(IncomingRequest(
                self.command, self.path, list(self.headers.items()), body))
        except _BadBody as bad:
            self.close_connection = True  # the unread body would be taken for the next request
            reply = bad.reply
        except Exception as exc:  # the gateway keeps serving whatever one request does
            reply = error_reply(500, "gateway_error", "the local gateway failed on this request "
                                f"({type(exc).__name__}); see `kit dev` output and report it")
        self._send(reply)
        if self.gateway.on_request is not None:
            elapsed = (time.monotonic() - started) * 1000.0
            self.gateway.on_request(self.command, redacted_path(self.path), reply.status, elapsed)

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        no_body = self.command == "HEAD" or reply.status in (204, 304) or reply.status < 200
        self.send_header("Content-Length", "0" if no_body else str(len(reply.body)))
        self.end_headers()
        if not no_body:
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _dispatch
