"""A STAND-IN for the dstack guest agent (the API a CVM serves on /var/run/dstack.sock).

It speaks the guest agent's HTTP protocol as `dstack_sdk` uses it (``POST /<Method>`` with a
JSON body; shared/REFERENCE.md section 8), on a Unix socket and/or on 127.0.0.1, so that the
real `dstack_sdk.DstackClient` (socket path, or ``DSTACK_SIMULATOR_ENDPOINT``) talks to it
unchanged. What it is not: a TEE. Its keys come from a public, fixed seed and its quotes are
*dev quotes* (`kit.trust.tdx` layout: ``KIT-DEV-TDX-QUOTE-v1`` in the first bytes, a TDX v4
body at the real offsets, an ed25519 signature by the stand-in's key). Production verification
refuses them.

Methods: ``GetKey {path, purpose, algorithm}`` -> ``{key, signature_chain}`` (deterministic per
app and path; the purpose is only signed, as in dstack), ``GetQuote {report_data}`` ->
``{quote, event_log, report_data}``, ``Info``, ``Version``, ``EmitEvent {event, payload}``
(extends RTMR3, as in a CVM). Anything else answers 404.

The event log holds the runtime events a dstack CVM records at boot in RTMR3 (``system-
preparing``, ``app-id``, ``compose-hash``, ``instance-id``, ``boot-mr-done``, ``key-provider``,
``system-ready``) with dstack's digest rule, and the quote's RTMR3 is their replay.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Mapping

from kit import jsonsafe
from kit.errors import InputError
from kit.trust import tdx

DEFAULT_SEED = b"kit-dstack-sim stand-in seed v1 (public, never secret)"
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
MAX_BODY = 1 << 20
STAND_IN_VERSION = "kit-dstack-sim 1 (stand-in)"


class StandInError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _mac(key: bytes, *parts: str | bytes) -> bytes:
    data = b"\0".join(p.encode("utf-8") if isinstance(p, str) else p for p in parts)
    return hmac.new(key, data, hashlib.sha256).digest()


class GuestAgentStandIn:
    """The guest agent's behaviour, without transport (the servers below wrap it)."""

    def __init__(self, app_compose: Mapping[str, Any] | None = None, *,
                 compose_hash: str | None = None, seed: bytes = DEFAULT_SEED,
                 instance_id: str | None = None) -> None:
        from kit.dstack.compose import compose_hash as hash_of, deterministic_json

        if app_compose is not None:
            self.app_compose_text = deterministic_json(dict(app_compose))
            self.compose_hash = hash_of(dict(app_compose))
        elif compose_hash is not None and len(bytes.fromhex(compose_hash)) == 32:
            self.app_compose_text, self.compose_hash = "", compose_hash.lower()
        else:
            raise InputError("the stand-in needs an app-compose document or a compose hash")
        self.seed = seed
        self.app_id = self.compose_hash[:40]  # dstack's default: first 20 bytes
        self.instance_id = instance_id or _mac(seed, "instance", self.app_id)[:20].hex()
        self._app_key = _mac(seed, "app-key", self.app_id)
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        for name, payload in self._boot_events():
            self._extend(name, payload)

    # -- measurements ------------------------------------------------------------------------
    def _boot_events(self) -> list[tuple[str, bytes]]:
        provider = json.dumps({"name": "kit-dstack-sim", "id": "stand-in"},
                              separators=(",", ":")).encode()
        return [("system-preparing", b""), ("app-id", bytes.fromhex(self.app_id)),
                ("compose-hash", bytes.fromhex(self.compose_hash)),
                ("instance-id", bytes.fromhex(self.instance_id)), ("boot-mr-done", b""),
                ("key-provider", provider), ("system-ready", b"")]

    def _extend(self, name: str, payload: bytes) -> None:
        digest = tdx.runtime_event_digest(name, payload)
        self.events.append({"imr": 3, "event_type": tdx.DSTACK_RUNTIME_EVENT_TYPE,
                            "digest": digest.hex(), "event": name,
                            "event_payload": payload.hex()})

    def rtmr3(self) -> bytes:
        return tdx.replay_rtmr([bytes.fromhex(e["digest"]) for e in self.events if e["imr"] == 3])

    def mr_td(self) -> bytes:
        return hashlib.sha384(b"kit-dstack-sim stand-in MRTD").digest()

    # -- methods -----------------------------------------------------------------------------
    def get_key(self, path: str = "", purpose: str = "", algorithm: str = "secp256k1"
                ) -> dict[str, Any]:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        from eth_keys import keys

        algorithm = algorithm or "secp256k1"
        if algorithm in ("secp256k1", "k256"):
            key = self._k256(_mac(self._app_key, "key", path))
            public = keys.PrivateKey(key).public_key.to_compressed_bytes()
        elif algorithm == "ed25519":
            key = _mac(self._app_key, "ed25519", path)
            public = Ed25519PrivateKey.from_private_bytes(key).public_key().public_bytes(
                Encoding.Raw, PublicFormat.Raw)
        else:
            raise StandInError(400, f"unsupported algorithm {algorithm[:40]!r}")
        return {"key": key.hex(), "signature_chain": self._signature_chain(public, purpose)}

    def _k256(self, material: bytes) -> bytes:
        scalar = int.from_bytes(material, "big") % (SECP256K1_N - 1) + 1
        return scalar.to_bytes(32, "big")

    def _signature_chain(self, public: bytes, purpose: str) -> list[str]:
        """As dstack: the app key signs "purpose:pubkey"; a (stand-in) KMS root signs the app
        key. Recoverable secp256k1 signatures over keccak256, 65 bytes each."""
        from eth_keys import keys
        from eth_utils import keccak

        app = keys.PrivateKey(self._k256(self._app_key))
        root = keys.PrivateKey(self._k256(_mac(self.seed, "kms-root")))
        first = app.sign_msg_hash(keccak(f"{purpose}:{public.hex()}".encode()))
        issued = b"dstack-kms-issued:" + bytes.fromhex(self.app_id) + \
            app.public_key.to_compressed_bytes()
        second = root.sign_msg_hash(keccak(issued))
        return [first.to_bytes().hex(), second.to_bytes().hex()]

    def get_quote(self, report_data_hex: str) -> dict[str, Any]:
        try:
            report_data = bytes.fromhex(report_data_hex or "")
        except ValueError:
            raise StandInError(400, "report_data is not hex") from None
        if len(report_data) > 64:
            raise StandInError(400, "report_data is longer than 64 bytes")
        report_data = report_data.ljust(64, b"\0")
        with self._lock:
            quote = self._dev_quote(report_data)
            log = json.dumps(self.events, separators=(",", ":"))
        return {"quote": quote.hex(), "event_log": log, "report_data": report_data.hex(),
                "vm_config": ""}

    def _dev_quote(self, report_data: bytes) -> bytes:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        values = {name: bytes(size) for name, (_, size) in tdx.BODY_FIELDS.items()}
        values.update(mr_td=self.mr_td(), rt_mr3=self.rtmr3(), report_data=report_data)
        body = bytearray(tdx.BODY_BYTES)
        for name, (start, size) in tdx.BODY_FIELDS.items():
            body[start:start + size] = values[name]
        signed = tdx.DEV_QUOTE_MAGIC.ljust(tdx.HEADER_BYTES, b"\0") + bytes(body)
        signer = Ed25519PrivateKey.from_private_bytes(_mac(self.seed, "dev-quote-key"))
        public = signer.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return signed + public + signer.sign(signed)

    def emit_event(self, event: str, payload_hex: str) -> dict[str, Any]:
        if not event:
            raise StandInError(400, "event name cannot be empty")
        try:
            payload = bytes.fromhex(payload_hex or "")
        except ValueError:
            raise StandInError(400, "payload is not hex") from None
        with self._lock:
            self._extend(event, payload)
        return {}

    def info(self) -> dict[str, Any]:
        with self._lock:
            events = list(self.events)
        zero = bytes(48).hex()
        tcb = {"mrtd": self.mr_td().hex(), "rtmr0": zero, "rtmr1": zero, "rtmr2": zero,
               "rtmr3": self.rtmr3().hex(), "app_compose": self.app_compose_text,
               "event_log": events, "mr_aggregated": "", "os_image_hash": "",
               "compose_hash": self.compose_hash, "device_id": ""}
        return {"app_id": self.app_id, "instance_id": self.instance_id, "app_cert": "",
                "tcb_info": json.dumps(tcb, separators=(",", ":")),
                "app_name": "kit-dstack-sim", "device_id": "", "mr_aggregated": "",
                "os_image_hash": "", "key_provider_info": "kit-dstack-sim stand-in",
                "compose_hash": self.compose_hash, "vm_config": ""}

    def version(self) -> dict[str, Any]:
        return {"version": STAND_IN_VERSION, "rev": "stand-in"}

    def call(self, method: str, body: Mapping[str, Any]) -> dict[str, Any]:
        table: dict[str, Callable[[], dict[str, Any]]] = {
            "GetKey": lambda: self.get_key(str(body.get("path", "")),
                                           str(body.get("purpose", "")),
                                           str(body.get("algorithm", "secp256k1"))),
            "GetQuote": lambda: self.get_quote(str(body.get("report_data", ""))),
            "EmitEvent": lambda: self.emit_event(str(body.get("event", "")),
                                                 str(body.get("payload", ""))),
            "Info": self.info,
            "Version": self.version,
        }
        if method not in table:
            raise StandInError(404, f"method {method[:40]!r} is not served by the stand-in")
        return table[method]()


# ---------------------------------------------------------------------------------------------
# transport


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kit-dstack-sim"

    def do_POST(self) -> None:  # noqa: N802 - stdlib naming
        agent: GuestAgentStandIn = self.server.agent  # type: ignore[attr-defined]
        method = self.path.split("?", 1)[0].strip("/")
        method = method.removeprefix("prpc/")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0 or length > MAX_BODY:
                raise StandInError(413, "request body too large")
            raw = self.rfile.read(length) if length else b""
            body = jsonsafe.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise StandInError(400, "the body must be a JSON object")
            self._send(200, agent.call(method, body))
        except StandInError as exc:
            self._send(exc.status, {"error": str(exc)})
        except ValueError:
            self._send(400, {"error": "the body is not JSON"})

    do_GET = do_POST  # the guest agent's RPC layer also answers GET for argument-less methods

    def _send(self, status: int, value: Any) -> None:
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def address_string(self) -> str:
        return self.client_address[0] if self.client_address else "unix-socket"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return  # quiet: the CLI prints what matters


class _TcpServer(ThreadingHTTPServer):
    daemon_threads = True


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = True


class StandInServer:
    """Serve a `GuestAgentStandIn` on a Unix socket and/or 127.0.0.1:port, in threads."""

    def __init__(self, agent: GuestAgentStandIn, *, socket_path: Path | str | None = None,
                 host: str = "127.0.0.1", port: int | None = 0) -> None:
        self.agent = agent
        self.socket_path = Path(socket_path) if socket_path else None
        self.host, self.port = host, port
        self._servers: list[socketserver.BaseServer] = []
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str | None:
        for server in self._servers:
            if isinstance(server, _TcpServer):
                host, port = server.server_address[:2]
                return f"http://{host!s}:{port}"
        return None

    def start(self) -> StandInServer:
        try:
            if self.socket_path is not None:
                self._servers.append(self._bind_unix(self.socket_path))
            if self.port is not None:
                self._servers.append(_TcpServer((self.host, self.port), _Handler))
        except OSError as exc:
            self.stop()
            raise InputError(f"cannot listen for the stand-in guest agent ({exc.strerror}); "
                             "choose another --socket or --port") from None
        for server in self._servers:
            server.agent = self.agent  # type: ignore[attr-defined]
            thread = threading.Thread(target=server.serve_forever, name="kit-dstack-sim",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _bind_unix(self, path: Path) -> _UnixServer:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_socket():
            path.unlink()  # a stale socket from an earlier run
        elif path.exists():
            raise InputError(f"{path} exists and is not a socket; choose another --socket")
        server = _UnixServer(str(path), _Handler)
        os.chmod(path, 0o660)
        return server

    def stop(self) -> None:
        for server in self._servers[:len(self._threads)]:
            server.shutdown()  # only servers whose serve_forever runs (else it would block)
        for server in self._servers:
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers, self._threads = [], []
        if self.socket_path is not None and self.socket_path.is_socket():
            self.socket_path.unlink()

    def __enter__(self) -> StandInServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
