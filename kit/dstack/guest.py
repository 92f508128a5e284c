"""The Wapo globals inside a dstack CVM, served from the guest agent (issue 15, item 2).

- ``derive_secret(cid, code, salt)``: 64 bytes, from ``GetKey`` on
  ``agent-contract-kit/wapo/derive-secret/v1/<cid>/<sha256(salt) hex>``. The path names the CID,
  so two contracts never share a key; the KMS derives per app id, so replicas of one app (same
  compose hash) share theirs. The gateway only runs bytes that hash to the CID, so the CID
  stands for the code; the code's sha256 is mixed in as well, as the local runtime does.
  ``GetKey`` is deterministic (same app, same path, same key), so its answers are kept in a
  bounded in-process cache: a contract that derives its signing key on every request costs one
  guest-agent call per CID and salt, not one per request.
- ``quote(cid, message)``: ``GetQuote`` with report_data = ``kit.trust.tdx.tdx_report_data``
  (sha256 of a labelled text naming the CID and the message, zero-padded to 64 bytes), answered
  as ``{quote_type: "tdx", quote, event_log, compose_hash}`` for `/attestation`. Never cached:
  each message (and its nonce) gets its own quote.

`kit.dstack.serve.production_gateway` wires these into the runtime (`kit.local.runtime.WapoSource`,
one per CID through `GuestAgent.wapo_for`); `kit dev` never uses them.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from typing import Any, Callable, TypeVar

from kit.errors import ExternalError
from kit.trust.tdx import tdx_report_data

DERIVE_PATH = "agent-contract-kit/wapo/derive-secret/v1"
DERIVE_TAG = b"agent-contract-kit wapo deriveSecret v1"
KEY_CACHE_ENTRIES = 4096
T = TypeVar("T")


class GuestAgent:
    """A thin, error-mapping wrapper over `dstack_sdk.DstackClient` (thread-safe)."""

    def __init__(self, endpoint: str | None = None, timeout: float = 5.0) -> None:
        from dstack_sdk import DstackClient

        try:
            self._client = DstackClient(endpoint, timeout=timeout)
        except (OSError, ValueError) as exc:
            raise ExternalError(f"no dstack guest agent ({type(exc).__name__}): mount "
                                "/var/run/dstack.sock, or run `kit dstack-sim`") from None
        self._keys: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._compose_hash: str | None = None

    def _call(self, what: str, action: Callable[[], T]) -> T:
        try:
            return action()
        except Exception as exc:  # httpx and pydantic errors are not wrapped by the SDK
            raise ExternalError(f"the dstack guest agent failed {what} "
                                f"({type(exc).__name__})") from None

    def _key(self, path: str) -> bytes:
        with self._lock:
            if path in self._keys:
                self._keys.move_to_end(path)
                return self._keys[path]
        key = self._call("GetKey", lambda: self._client.get_key(
            path, "wapo-derive-secret").decode_key())
        with self._lock:
            self._keys[path] = key
            while len(self._keys) > KEY_CACHE_ENTRIES:
                self._keys.popitem(last=False)
        return key

    def derive_secret(self, cid: str, code: str, salt: bytes) -> bytes:
        key = self._key(f"{DERIVE_PATH}/{cid}/{hashlib.sha256(salt).hexdigest()}")
        code_hash = hashlib.sha256(code.encode("utf-8")).digest()
        return hmac.new(key, DERIVE_TAG + code_hash + salt, hashlib.sha512).digest()

    def quote(self, cid: str, message: bytes | str) -> dict[str, Any]:
        report_data = tdx_report_data(cid, message)
        answer = self._call("GetQuote", lambda: self._client.get_quote(report_data))
        return {"quote_type": "tdx", "quote": answer.quote, "event_log": answer.event_log,
                "compose_hash": self.compose_hash()}

    def compose_hash(self) -> str:
        """The app's compose hash as the guest agent reports it (fixed for the CVM's life)."""
        if self._compose_hash is None:
            self._compose_hash = self._call("Info", lambda: self._client.info().compose_hash)
        return self._compose_hash

    def wapo_for(self, cid: str) -> Any:
        """The `kit.local.runtime.WapoSource` for the contract at `cid`."""
        from kit.local.runtime import WapoSource

        return WapoSource(
            derive_secret=lambda code, salt: self.derive_secret(cid, code, salt),
            quote=lambda code, message: self.quote(cid, message),
        )
