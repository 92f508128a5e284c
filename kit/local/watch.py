"""`kit dev --watch`: rebuild the project when `agent.toml` or `src/` changes.

Polling, standard library only. Each poll stats `agent.toml` and every file under `src/`
(a project holds a handful of files: one poll costs tens of microseconds) and compares
(inode, size, mtime_ns) with the last snapshot. Why not inotify/FSEvents (e.g. the `watchdog`
package): a dependency and a thread per backend for a few files, and editors that save through
a temp file and a rename, or a project on a container bind mount or network file system, are
exactly where native events go missing; a stat of a few paths every 50 ms sees all of those,
with at most one interval of delay, and works the same on every platform.

A change triggers a rebuild at once. The build computes everything before it writes
`dist/agent.js` (atomically), so a broken edit raises before anything is replaced: the gateway
keeps serving the last good build, and the event carries the error. When the files change again
while a build runs, the next poll rebuilds again (the last state always wins).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kit.contract.config import CONFIG_FILE
from kit.errors import KitError

SOURCE_DIR = "src"
DEFAULT_INTERVAL = 0.05  # seconds between polls
MAX_WATCHED_FILES = 2000  # a src/ larger than this is a mistake (node_modules?), not a module

Snapshot = dict[str, tuple[int, int, int]]


@dataclass(frozen=True)
class WatchEvent:
    """One rebuild: `cid` of the new build, or `error` (the last good build keeps serving)."""

    cid: str | None
    error: str | None
    elapsed_ms: float
    changed: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.error is None


def snapshot(project_dir: Path) -> Snapshot:
    """(inode, size, mtime_ns) of agent.toml and of every regular file under src/."""
    state: Snapshot = {}
    _stat_into(state, project_dir / CONFIG_FILE, CONFIG_FILE)
    stack = [project_dir / SOURCE_DIR]
    while stack and len(state) <= MAX_WATCHED_FILES:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue  # no src/ (yet), or it vanished mid-scan: the next poll sees it
        for entry in entries:
            if entry.name.startswith("."):
                continue  # editor swap and temp files
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
            else:
                relative = Path(entry.path).relative_to(project_dir).as_posix()
                _stat_into(state, Path(entry.path), relative)
    return state


def _stat_into(state: Snapshot, path: Path, name: str) -> None:
    try:
        info = path.stat()
    except OSError:
        return
    state[name] = (info.st_ino, info.st_size, info.st_mtime_ns)


def changed_paths(before: Snapshot, after: Snapshot) -> tuple[str, ...]:
    names = set(before) | set(after)
    return tuple(sorted(name for name in names if before.get(name) != after.get(name)))


class ProjectWatcher:
    """Polls a project and rebuilds it on change, reporting each rebuild to `on_event`.

    `build` returns the new CID or raises KitError; it defaults to `kit.contract.project.build_project`.
    """

    def __init__(
        self,
        project_dir: Path,
        on_event: Callable[[WatchEvent], None],
        *,
        interval: float = DEFAULT_INTERVAL,
        build: Callable[[Path], str] | None = None,
    ) -> None:
        self.project_dir = Path(project_dir)
        self.on_event, self.interval = on_event, interval
        self._build = build or _build_cid
        self._state = snapshot(self.project_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll_once(self) -> WatchEvent | None:
        """Rebuild if anything changed since the last poll; the event, or None."""
        current = snapshot(self.project_dir)
        changed = changed_paths(self._state, current)
        if not changed:
            return None
        self._state = current
        started = time.monotonic()
        try:
            cid, error = self._build(self.project_dir), None
        except KitError as exc:
            cid, error = None, str(exc)
        event = WatchEvent(cid, error, (time.monotonic() - started) * 1000.0, changed)
        self.on_event(event)
        return event

    def start(self) -> None:
        """Poll in a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self._loop, name="kit-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.poll_once()
            except Exception as exc:  # the watcher must outlive any one failed poll
                self.on_event(WatchEvent(None, f"watch failed: {type(exc).__name__}: {exc}",
                                         0.0, ()))


def _build_cid(project_dir: Path) -> str:
    from kit.contract.project import build_project

    return build_project(project_dir).cid
