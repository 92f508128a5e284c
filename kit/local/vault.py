"""The local gateway's vault: secrets bound to one CID, persisted to a private JSON file.

As on the Phala gateway, `store` answers a `key` (public: callers send it as `?key=`) and a
`token` (private: reads the data back). Secrets reach a contract only when the request's key was
stored for the very CID being run; a CID string is matched exactly, as the gateway does, so a
new deployment needs its secrets stored again. Secret values never appear in an exception, a
log line or a repr.
"""

from __future__ import annotations

import json
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kit.errors import InputError, KitError
from kit.fsutil import write_private

FORMAT_VERSION = 1
MAX_DATA_DEPTH = 32  # nesting of a stored document; JSON's own encoder recurses per level


class VaultKeyUnknown(InputError):
    """No vault entry has this key."""


class VaultTokenRejected(InputError):
    """The key exists but the token does not match it."""


class VaultFileInvalid(KitError):
    """The vault file exists but cannot be read as a vault."""


@dataclass(frozen=True)
class VaultEntry:
    key: str
    token: str = field(repr=False)
    cid: str
    data: dict[str, Any] = field(repr=False)


class Vault:
    """Thread-safe; every change is written through atomically before it is acknowledged."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries: dict[str, VaultEntry] = self._load()

    def __repr__(self) -> str:
        return f"Vault(path={str(self.path)!r}, entries={len(self._entries)})"

    def _load(self) -> dict[str, VaultEntry]:
        if not self.path.exists():
            return {}
        try:
            document = json.loads(self.path.read_text(encoding="utf-8"))
            entries = [VaultEntry(**item) for item in document["entries"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise VaultFileInvalid(
                f"the vault file {self.path} is not a valid vault ({type(exc).__name__}); "
                "move it aside and store the secrets again"
            ) from None
        return {entry.key: entry for entry in entries}

    def _save(self, entries: dict[str, VaultEntry]) -> None:
        document = {"version": FORMAT_VERSION, "entries": [asdict(e) for e in entries.values()]}
        write_private(self.path, json.dumps(document, indent=2, sort_keys=True) + "\n")

    def store(self, cid: str, data: dict[str, Any]) -> VaultEntry:
        """Bind `data` to `cid` under a fresh key and token."""
        from kit.cid import is_valid_cid

        if not isinstance(cid, str) or not is_valid_cid(cid):
            raise InputError("'cid' must be a valid CID (Qm... or bafy...)")
        if not isinstance(data, dict):
            raise InputError("'data' must be a JSON object of secret names to values")
        if _depth(data) > MAX_DATA_DEPTH:
            raise InputError(f"'data' is nested deeper than {MAX_DATA_DEPTH} levels; "
                             "store flat secret names and values")
        entry = VaultEntry(
            key=secrets.token_hex(16), token=secrets.token_hex(32), cid=cid, data=dict(data)
        )
        with self._lock:
            updated = {**self._entries, entry.key: entry}
            self._save(updated)
            self._entries = updated
        return entry

    def read(self, key: str, token: str) -> dict[str, Any]:
        """The data stored under `key`, for the holder of its token."""
        entry = self._entries.get(key)
        if entry is None:
            raise VaultKeyUnknown("no vault entry has this key; store the secrets again")
        if not secrets.compare_digest(entry.token.encode(), token.encode()):
            raise VaultTokenRejected("the token does not match this key; use the token "
                                     "answered when the secrets were stored")
        return dict(entry.data)

    def secret_for(self, cid: str, key: str | None) -> dict[str, Any] | None:
        """The data to inject for a request to `cid` carrying `?key=`; None when the key is
        absent, unknown or stored for another CID (silently, as the gateway does)."""
        entry = self._entries.get(key) if key else None
        if entry is None or entry.cid != cid:
            return None
        return dict(entry.data)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in `value` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_DATA_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest
