"""Deployment records: `deployments/latest.json` and `deployments/history.json` in the project.

Both files are committable (sorted keys, no secrets) and written atomically, history first, so
a failure leaves the previous latest record intact. Recording a deployment identical to the
latest one (all fields but the time) writes nothing: re-deploying is idempotent.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from kit.errors import InputError
from kit.fsutil import atomic_write_json

RECORDS_DIR = "deployments"
LATEST = "latest.json"
HISTORY = "history.json"


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def same_as(self, other: Deployment) -> bool:
        """Equal in everything but the time."""
        return replace(self, deployed_at="") == replace(other, deployed_at="")


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _from_dict(value: Any, source: Path) -> Deployment:
    names = {f.name for f in fields(Deployment)}
    if not isinstance(value, dict) or set(value) != names:
        raise InputError(
            f"{source} is not a deployment record (expected keys: {', '.join(sorted(names))}); "
            "restore it from version control or delete it"
        )
    return Deployment(**value)


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


def record(project_dir: Path, deployment: Deployment) -> bool:
    """Append to the history and make it the latest; False (nothing written) if unchanged."""
    latest = load_latest(project_dir)
    if latest is not None and latest.same_as(deployment):
        return False
    history = load_history(project_dir)
    directory = records_dir(project_dir)
    atomic_write_json(directory / HISTORY, [d.to_dict() for d in [*history, deployment]])
    atomic_write_json(directory / LATEST, deployment.to_dict())
    return True
