"""HTTP plumbing shared by the local gateway and the stand-in LLM: a threaded server with
keep-alive handlers that answer in one send, run from a background thread or the caller's."""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kit.errors import InputError


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default of 5 refuses connections under modest load

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that vanishes or stalls mid-request is routine, not a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sys_version = ""
    # A buffered writer, so that an answer's status line, headers and body leave in one send
    # (handle_one_request and finish flush it); bigger bodies go straight through.
    wbufsize = 64 * 1024

    def setup(self) -> None:
        super().setup()
        # small writes (a 100 Continue, a body past the buffer) must not wait for the peer's
        # delayed ACK: without this, Nagle's algorithm adds about 40 ms to such answers
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def handle_expect_100(self) -> bool:
        """Send the 100 Continue now: the client waits for it before sending the body."""
        answered = super().handle_expect_100()
        self.wfile.flush()
        return answered

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Silent: the library never prints; servers report through their own callbacks."""


class BackgroundServer:
    """Serves `handler` on host:port, from a daemon thread (`start`) or the caller's."""

    def __init__(self, host: str, port: int, handler: type[KeepAliveHandler], name: str) -> None:
        self.host, self.port, self.handler, self.name = host, port, handler, name
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        if self._server is None:
            raise RuntimeError(f"the {self.name} is not started; call start() first")
        host, port = self._server.server_address[:2]
        return host, port

    def _bind(self) -> _Server:
        if self._server is None:
            try:
                self._server = _Server((self.host, self.port), self.handler)
            except OSError as exc:
                raise InputError(f"cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                                 "choose another --port") from None
        return self._server

    def start(self) -> None:
        server = self._bind()
        self._thread = threading.Thread(target=server.serve_forever, args=(0.1,),
                                        name=self.name, daemon=True)
        self._thread.start()

    def serve_forever(self) -> None:
        server = self._bind()
        try:
            server.serve_forever()
        finally:
            server.server_close()

    def stop(self) -> None:
        if self._server is None:
            return
        if self._thread is not None:  # shutdown() waits for a serve_forever loop to end
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()
