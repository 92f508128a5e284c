"""The kit gateway as a dstack app: app-compose document, compose hash, deployment record.

A dstack CVM runs a Docker Compose file wrapped in an *app-compose* document; the CVM measures
sha256 of that document into RTMR3 (the "compose-hash" event), and verifiers pin that hash.
So the document must be byte-stable: it is written exactly as `dstack_sdk`'s deterministic
JSON (sorted keys, compact), and its hash is computed by `dstack_sdk.get_compose_hash`, the
real library, never re-implemented here. sha256 of the written file equals that hash.

Every image is pinned by digest (``REF@sha256:<64 hex>``): a tag alone can be re-pointed after
the hash is pinned, which would change the code without changing the compose hash.

Files written in the project (all committable, no secrets):
- ``dstack/app-compose.json``: the document whose hash the CVM measures;
- ``dstack/docker-compose.yaml``: the same compose file, for the ``phala`` CLI;
- ``deployments/dstack.json``: ``{compose_hash, app_id, image, name, files, written_at, ...}``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from kit.errors import InputError
from kit.fsutil import atomic_write, atomic_write_json

COMPOSE_DIR = "dstack"
APP_COMPOSE = "app-compose.json"
DOCKER_COMPOSE = "docker-compose.yaml"
RECORD = "deployments/dstack.json"
SERVICE = "gateway"
CONTAINER_PORT = 8000
GUEST_AGENT_SOCKET = "/var/run/dstack.sock"

_IMAGE = re.compile(
    r"^(?P<repo>(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"@(?P<digest>sha256:[0-9a-f]{64})$"
)
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")


@dataclass(frozen=True)
class ComposeRecord:
    """What `deployments/dstack.json` holds."""

    name: str
    image: str
    compose_hash: str
    app_id: str  # dstack's default app id: the first 20 bytes of the compose hash
    app_compose: str  # relative paths in the project
    docker_compose: str
    written_at: str
    kit_version: str
    ipfs_gateways: tuple[str, ...] = ()  # where the gateway fetches contracts (measured)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_image(ref: str) -> str:
    """`REF[:TAG]@sha256:<64 hex>` or InputError: a tag without a digest is refused."""
    value = (ref or "").strip()
    if _IMAGE.match(value):
        return value
    if "@sha256:" not in value:
        raise InputError(f"--image {value[:120]!r}: pin the image by digest "
                         "(REF@sha256:<64 hex>, e.g. from `docker buildx imagetools inspect`); "
                         "a tag can be re-pointed after the compose hash is pinned")
    raise InputError(f"--image {value[:120]!r}: not an image reference of the form "
                     "REF[:TAG]@sha256:<64 lower-case hex>")


def check_name(name: str) -> str:
    value = (name or "").strip().lower()
    value = re.sub(r"[^a-z0-9-]+", "-", value).strip("-")[:63].strip("-")
    if not _NAME.match(value):
        raise InputError(f"--name {name[:80]!r}: use letters, digits and dashes")
    return value


def check_gateways(urls: Sequence[str]) -> tuple[str, ...]:
    """IPFS gateway URLs for the compose file: http(s), no credentials, no spaces."""
    from kit.contract.config import check_option_url

    return tuple(check_option_url("--ipfs-gateway", url.strip()) for url in urls)


def docker_compose_text(image: str, ipfs_gateways: Sequence[str] = ()) -> str:
    """The Compose file: one gateway service talking to the guest agent's socket. Its only
    environment is public configuration (measured with the compose hash), never a secret."""
    image = check_image(image)
    gateways = check_gateways(ipfs_gateways)
    environment = ["    environment:", f"      - KIT_IPFS_GATEWAYS={' '.join(gateways)}"] \
        if gateways else []
    return "\n".join([
        "services:",
        f"  {SERVICE}:",
        f"    image: {image}",
        "    restart: always",
        *environment,
        "    ports:",
        f"      - \"{CONTAINER_PORT}:{CONTAINER_PORT}\"",
        "    volumes:",
        f"      - {GUEST_AGENT_SOCKET}:{GUEST_AGENT_SOCKET}",
        "      - kit-data:/data",
        "volumes:",
        "  kit-data: {}",
        "",
    ])


def app_compose(image: str, name: str, ipfs_gateways: Sequence[str] = ()) -> dict[str, Any]:
    """The app-compose document (dstack manifest v2) for the gateway image."""
    return {
        "manifest_version": 2,
        "name": check_name(name),
        "runner": "docker-compose",
        "docker_compose_file": docker_compose_text(image, ipfs_gateways),
        "kms_enabled": True,  # keys from the KMS per app id: every replica derives the same
        "gateway_enabled": True,
        "local_key_provider_enabled": False,
        "public_logs": False,  # logs may carry prompts; keep them private
        "public_sysinfo": True,
        "public_tcbinfo": True,  # lets anyone read the measured compose and event log
        "allowed_envs": [],  # secrets go through the sealed vault, not environment variables
        "no_instance_id": False,
        "secure_time": False,
    }


def deterministic_json(document: dict[str, Any]) -> str:
    """The exact text dstack_sdk hashes (sorted keys, compact, UTF-8)."""
    from dstack_sdk.get_compose_hash import AppCompose, to_deterministic_json

    return to_deterministic_json(AppCompose.from_dict(copy.deepcopy(document)))


def compose_hash(document: dict[str, Any]) -> str:
    """sha256 of the app-compose document, by `dstack_sdk.get_compose_hash`."""
    from dstack_sdk import get_compose_hash

    # from_dict pops keys out of the dict it is given: hand it a copy
    return get_compose_hash(copy.deepcopy(document))


def load_record(project_dir: Path) -> ComposeRecord | None:
    path = Path(project_dir) / RECORD
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
        value["ipfs_gateways"] = tuple(value.get("ipfs_gateways", ()))
        return ComposeRecord(**value)
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        raise InputError(f"{path} is not a dstack compose record; restore it from version "
                         "control or delete it and run `kit dstack compose` again") from None


def default_name(project_dir: Path) -> str:
    from kit.contract.config import load_config
    from kit.errors import KitError

    try:
        return load_config(project_dir).agent.name
    except KitError:  # no (valid) agent.toml: the directory name will do
        return Path(project_dir).resolve().name or "kit-gateway"


def write_compose(project_dir: Path, image: str | None = None, name: str | None = None,
                  ipfs_gateways: Sequence[str] | None = None) -> ComposeRecord:
    """Write the compose files and the record; returns the record. Idempotent for same input."""
    from kit import __version__

    project_dir = Path(project_dir)
    previous = load_record(project_dir)
    if image is None:
        if previous is None:
            raise InputError("no image yet: pass --image REF@sha256:<digest> (build it from "
                             "the Dockerfile and push it first)")
        image = previous.image
    image = check_image(image)
    name = check_name(name or (previous.name if previous else default_name(project_dir)))
    if ipfs_gateways is None:
        ipfs_gateways = previous.ipfs_gateways if previous else ()
    gateways = check_gateways(ipfs_gateways)
    document = app_compose(image, name, gateways)
    text = deterministic_json(document)
    digest = compose_hash(document)
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != digest:  # self-check, cheap
        raise InputError("internal: compose text and compose hash disagree; report this")
    app_path = f"{COMPOSE_DIR}/{APP_COMPOSE}"
    compose_path = f"{COMPOSE_DIR}/{DOCKER_COMPOSE}"
    record = ComposeRecord(name=name, image=image, compose_hash=digest, app_id=digest[:40],
                           app_compose=app_path, docker_compose=compose_path,
                           written_at=_utc_now(), kit_version=__version__,
                           ipfs_gateways=gateways)
    if previous is not None and previous.compose_hash == digest and \
            (project_dir / app_path).is_file():
        record = previous
    atomic_write(project_dir / compose_path, document["docker_compose_file"])
    atomic_write(project_dir / app_path, text)
    atomic_write_json(project_dir / RECORD, record.to_dict())
    return record


def deploy_commands(record: ComposeRecord) -> list[list[str]]:
    """The `phala` CLI commands that create the CVM from the written compose file."""
    return [
        ["phala", "auth", "login"],
        ["phala", "deploy", "--name", record.name, "--compose", record.docker_compose],
    ]


def phala_cli() -> str | None:
    return shutil.which("phala")


def _utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
