"""Deployment records: `deployments/latest.json` and `deployments/history.json` in the project.

Both files are committable (sorted keys, no secrets) and written atomically, history first, so
a failure leaves the previous latest record intact. Recording a deployment identical to the
latest one (all fields but the time) writes nothing: re-deploying is idempotent.

Writers are serialized by an advisory lock (`fcntl.flock`) on `.kit/deploy.lock`: two deploys
of one project at once take turns, so none loses a history entry and `latest.json` is always
the last entry. The kernel releases the lock when its holder exits, even on SIGKILL, so a
crashed deploy never leaves a stale lock behind.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kit.errors import ExternalError, InputError
from kit.fsutil import atomic_write_json

RECORDS_DIR = "deployments"
LATEST = "latest.json"
HISTORY = "history.json"
LOCK_FILE = Path(".kit") / "deploy.lock"  # .kit/ is git-ignored; the lock holds no data
LOCK_WAIT_SECONDS = 900.0  # longer than any deploy's bounded retries and polls


@dataclass(frozen=True)
class Deployment:
    cid: str
    cid_version: int
    gateway_url: str  # the gateway that runs the contract (agent.toml gateway.url)
    verified_via: str  # the IPFS gateway the bytes were fetched back through
    artifact: str  # relative to the project, e.g. dist/agent.js
    size: int
    config_sha256: str
    template_version: str
    kit_version: str
    backend: str
    deployed_at: str  # ISO-8601 UTC
    # answer-signing addresses attested for this CID (`kit attest`, kit.trust); optional: older
    # records have none
    signers: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def same_as(self, other: Deployment) -> bool:
        """Equal in everything but the time."""
        return replace(self, deployed_at="") == replace(other, deployed_at="")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _from_dict(value: Any, source: Path) -> Deployment:
    names = {f.name for f in fields(Deployment)}
    optional = {"signers"}
    signers = value.get("signers", []) if isinstance(value, dict) else None
    if (not isinstance(value, dict) or not names - optional <= set(value) <= names
            or not isinstance(signers, list) or not all(isinstance(s, str) for s in signers)):
        raise InputError(
            f"{source} is not a deployment record (expected keys: {', '.join(sorted(names))}); "
            "restore it from version control or delete it"
        )
    return Deployment(**{**value, "signers": tuple(signers)})


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise InputError(
            f"{path} is not valid JSON ({exc}); restore it from version control"
        ) from None


def records_dir(project_dir: Path) -> Path:
    return Path(project_dir) / RECORDS_DIR


def load_latest(project_dir: Path) -> Deployment | None:
    path = records_dir(project_dir) / LATEST
    value = _read_json(path)
    return None if value is None else _from_dict(value, path)


def load_history(project_dir: Path) -> list[Deployment]:
    path = records_dir(project_dir) / HISTORY
    value = _read_json(path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InputError(f"{path} must hold a JSON list; restore it from version control")
    return [_from_dict(item, path) for item in value]


_held = threading.local()  # lock paths this thread holds: re-entering one does not block


@contextmanager
def records_lock(project_dir: Path, *, wait: float = LOCK_WAIT_SECONDS,
                 waiting: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the project's deploy lock (re-entrant within a thread); `waiting` hears once if
    another process holds it. ExternalError after `wait` seconds."""
    path = (Path(project_dir) / LOCK_FILE).resolve()
    held: set[str] = getattr(_held, "paths", set())
    if str(path) in held:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, path, wait, waiting)
        _held.paths = held | {str(path)}
        try:
            yield
        finally:
            _held.paths = held
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _acquire(fd: int, path: Path, wait: float, waiting: Callable[[str], None] | None) -> None:
    import fcntl

    deadline = time.monotonic() + wait
    announced = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise ExternalError(
                    f"another `kit deploy` of this project has held {path} for over {wait:g}s; "
                    "wait for it to finish, then run again"
                ) from None
            if not announced and waiting is not None:
                waiting(f"lock: waiting for another `kit deploy` of this project ({path})")
                announced = True
            time.sleep(0.05)


def record(project_dir: Path, deployment: Deployment) -> bool:
    """Append to the history and make it the latest; False (nothing written) if unchanged.
    Runs under the project's deploy lock: concurrent writers take turns, none is lost."""
    with records_lock(project_dir):
        latest = load_latest(project_dir)
        if latest is not None and latest.same_as(deployment):
            return False
        history = load_history(project_dir)
        directory = records_dir(project_dir)
        atomic_write_json(directory / HISTORY, [d.to_dict() for d in [*history, deployment]])
        atomic_write_json(directory / LATEST, deployment.to_dict())
        return True


def add_signers(project_dir: Path, cid: str, signers: list[str]) -> bool:
    """Add attested signers to the latest record (and its history entry) when it is for `cid`;
    False when nothing changed. InputError when the latest deployment is another CID."""
    with records_lock(project_dir):
        latest = load_latest(project_dir)
        if latest is None or latest.cid != cid:
            raise InputError(f"the latest deployment is not {cid}: deploy it first")
        merged = tuple(sorted(set(latest.signers) | set(signers), key=str.lower))
        if merged == latest.signers:
            return False
        updated = replace(latest, signers=merged)
        history = [updated if d == latest else d for d in load_history(project_dir)]
        directory = records_dir(project_dir)
        atomic_write_json(directory / HISTORY, [d.to_dict() for d in history])
        atomic_write_json(directory / LATEST, updated.to_dict())
        return True
