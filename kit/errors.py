"""One exception hierarchy for the kit. Every message says what went wrong and what to do next.

Exit codes (the CLI's contract): 2 for bad input from the user, 1 for a failure of the outside
world (node down, gateway error, CID mismatch). Messages never contain secret values.
"""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Iterator


class KitError(Exception):
    """Base of every error the kit raises on purpose."""

    exit_code = 1


class InputError(KitError):
    """The user gave something invalid: an argument, a config value, a file."""

    exit_code = 2


class ConfigError(InputError):
    """`agent.toml` is missing or invalid. The message names the key."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        where = key if key == "agent.toml" else f"agent.toml: {key}"
        super().__init__(f"{where}: {problem}")


class ExternalError(KitError):
    """Something outside the kit failed: a node, a gateway, a pinning service, a provider."""


class NodeUnavailable(ExternalError):
    """The IPFS node cannot be reached."""


class GatewayError(ExternalError):
    """A gateway answered with an error or something malformed."""


class PinningError(ExternalError):
    """A pinning backend refused or failed an operation."""


class CidMismatch(ExternalError):
    """Content does not hash to the CID it was supposed to have."""


class RuntimeFault(ExternalError):
    """A contract failed in the local runtime (throw, timeout, memory, invalid output)."""


class PathError(InputError):
    """A file or directory the kit must read or write is unusable (wrong kind, no permission,
    missing parent). Translated from `OSError` at the boundary; the message names the path."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        super().__init__(f"{path}: {problem}")


# errno -> what to do, for the OSErrors a user can fix by changing a path (exit 2). Like httpx's
# mapping table (httpx/_exceptions.py): one explicit list at the one boundary, nothing implicit.
_PATH_ERRNOS: dict[int, str] = {
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "a part of this path is a file, not a directory: move that file away or "
                   "choose another path",
    errno.EISDIR: "a file is needed here: move the directory away",
    errno.EEXIST: "a directory is needed here: move the file away or choose another path",
    errno.EACCES: "fix the permissions or choose another path",
    errno.EPERM: "choose another path",
    errno.EROFS: "choose another path",
    errno.ELOOP: "fix the link",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.ENOTEMPTY: "move it away or choose another path",
}


def from_os_error(exc: OSError) -> KitError:
    """The kit error for an `OSError`: PathError (exit 2) when the user can fix the path, else
    ExternalError (exit 1: disk full, I/O error, a connection). Never carries file contents."""
    path = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = (exc.strerror or type(exc).__name__).lower()
    if path is not None and exc.errno in _PATH_ERRNOS:
        return PathError(os.fsdecode(path), f"{reason}; {_PATH_ERRNOS[exc.errno]}")
    where = f"{os.fsdecode(path)}: " if path is not None else ""
    return ExternalError(f"{where}{reason}; the operating system refused: fix that and run again")


@contextmanager
def map_os_errors() -> Iterator[None]:
    """Translate an `OSError` raised inside the block into the kit's tree (see from_os_error)."""
    try:
        yield
    except OSError as exc:
        raise from_os_error(exc) from None
