"""`kit deploy` and `kit verify`: build, compute the CID locally, pin, check, fetch back, record.

Nothing is recorded unless every check passes: the CID the backend returns must equal the one
computed locally (else the pin this deploy created is removed), and the bytes a gateway serves
for it must hash to it again. Each step reports through `progress` and is timed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from kit.errors import CidMismatch, GatewayError, KitError, PinningError

if TYPE_CHECKING:
    from kit.config import ProjectConfig
    from kit.pinning import Pinned, Pinner
    from kit.project import BuildResult
    from kit.records import Deployment

Progress = Callable[[str], None]
DEFAULT_TIMEOUT = 30.0
MAX_FETCH_BYTES = 64 * 2**20  # a contract is far smaller; bounds a misbehaving gateway


@dataclass(frozen=True)
class GatewayCheck:
    gateway: str
    ok: bool
    size: int | None = None
    cid: str | None = None  # what the fetched bytes hash to
    error: str | None = None


@dataclass
class DeployResult:
    cid: str
    cid_version: int
    backend: str
    verified_via: str  # the IPFS gateway the bytes were fetched back through
    size: int
    recorded: bool  # False: identical to the latest record (idempotent re-deploy)
    record: dict[str, Any]
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Steps:
    """Times each named step and announces it through the progress callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress or (lambda message: None)
        self.timings_ms: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, message: str) -> Iterator[None]:
        self.progress(f"{name}: {message}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.timings_ms[name] = round((time.perf_counter() - started) * 1000, 3)


def deploy(
    project_dir: Path,
    *,
    ipfs_api: str | None = None,
    pinning_service: str | None = None,
    gateway: str | None = None,
    cid_version: int | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    progress: Progress | None = None,
) -> DeployResult:
    """Build, pin, check and record `project_dir`'s contract; raises a KitError on any failure."""
    from kit.cid import bytes_cid
    from kit.config import load_config
    from kit.ipfs import IpfsClient
    from kit.node import resolve_api
    from kit.pinning import make_pinner
    from kit.project import build_project
    from kit.records import load_history, load_latest, record

    steps = _Steps(progress)
    config = load_config(project_dir)
    load_latest(config.root), load_history(config.root)  # a corrupt record fails before pinning
    with steps.step("render", "rendering the contract"):
        build = build_project(config.root, cid_version=cid_version)
        data = build.path.read_bytes()
    with steps.step("cid", f"computing the CIDv{build.cid_version} of the bytes on disk"):
        local_cid = bytes_cid(data, version=build.cid_version)
    client = IpfsClient(ipfs_api or resolve_api(config.ipfs.api), timeout)
    pinner = make_pinner(pinning_service, client)
    with steps.step("add", f"adding {build.size} bytes through the {pinner.name} backend"):
        pinned = pinner.pin(data, local_cid, build.path.name, build.cid_version)
    with steps.step("pin", f"checking the returned CID {pinned.cid} and the pin"):
        _check_pinned(pinner, pinned, local_cid)
    verified_via = gateway or pinner.gateway or client.gateway_url()
    with steps.step("verify", f"fetching {local_cid} back through {verified_via}"):
        check = verify_one(local_cid, verified_via, timeout=timeout, expected_size=len(data))
        if not check.ok:
            fault = GatewayError if check.cid is None else CidMismatch
            raise fault(f"{check.error}; no deployment recorded (the pin stays)")
    deployment = _deployment(config, build, local_cid, verified_via, pinner.name)
    with steps.step("record", "writing deployments/latest.json and history.json"):
        recorded = record(config.root, deployment)
    return DeployResult(
        cid=local_cid, cid_version=build.cid_version, backend=pinner.name,
        verified_via=verified_via, size=build.size, recorded=recorded,
        record=deployment.to_dict(), timings_ms=steps.timings_ms,
        warnings=_stale_secrets_warning(config.root, local_cid),
    )


def _stale_secrets_warning(project_dir: Path, cid: str) -> list[str]:
    from kit.secrets import load_binding

    binding = load_binding(project_dir)
    if binding is None or binding.cid == cid:
        return []
    return [f"the vault secrets are bound to the previous CID {binding.cid}; the gateway ignores "
            f"them for {cid}: run `kit secrets set NAME=VALUE...` again"]


def _deployment(config: ProjectConfig, build: BuildResult, cid: str, verified_via: str,
                backend: str) -> Deployment:
    from kit import __version__
    from kit.records import Deployment, utc_now

    return Deployment(
        cid=cid, cid_version=build.cid_version, gateway_url=config.gateway.url,
        verified_via=verified_via,
        artifact=build.path.relative_to(config.root).as_posix(), size=build.size,
        config_sha256=config.digest(), template_version=build.template_version,
        kit_version=__version__, backend=backend, deployed_at=utc_now(),
    )


def _check_pinned(pinner: Pinner, pinned: Pinned, local_cid: str) -> None:
    """The backend's CID must be ours; otherwise undo the pin this deploy created."""
    if pinned.cid == local_cid:
        if not pinner.is_pinned(local_cid):
            raise PinningError(
                f"the {pinner.name} backend added {local_cid} but does not list it as pinned; "
                "no deployment recorded; check the backend and deploy again"
            )
        return
    cleanup = "it was pinned before this deploy and was left in place"
    if pinned.created:
        try:
            pinner.unpin(pinned.cid)
            cleanup = "the pin this deploy added was removed"
        except KitError as exc:
            cleanup = f"removing the pin this deploy added failed ({exc}); unpin it by hand"
    raise CidMismatch(
        f"the {pinner.name} backend returned {pinned.cid} but the content hashes to "
        f"{local_cid} locally (Kubo's default recipe); {cleanup}; no deployment recorded. "
        "The backend chunks differently: use the local node or a backend that pins by CID"
    )


# --- verification ---------------------------------------------------------------------------


def _fetch(url: str, timeout: float) -> bytes:
    import requests

    try:
        with requests.get(url, timeout=timeout, stream=True) as response:
            if response.status_code != 200:
                raise GatewayError(f"{url} answered HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_content(65536):
                body += chunk
                if len(body) > MAX_FETCH_BYTES:
                    raise GatewayError(f"{url} sent more than {MAX_FETCH_BYTES} bytes")
            return bytes(body)
    except requests.Timeout:
        raise GatewayError(f"{url} did not answer within {timeout:g}s") from None
    except requests.RequestException as exc:
        raise GatewayError(f"cannot fetch {url} ({type(exc).__name__})") from None


def verify_one(cid: str, gateway: str, *, timeout: float = DEFAULT_TIMEOUT,
               expected_size: int | None = None) -> GatewayCheck:
    """Fetch `<gateway>/ipfs/<cid>` and re-hash it with the recipe of the CID's version."""
    from kit.cid import bytes_cid, cid_version_of
    from kit.ipfs import normalise_cid

    version = cid_version_of(cid)
    gateway = gateway.rstrip("/")
    try:
        data = _fetch(f"{gateway}/ipfs/{cid}", timeout)
    except GatewayError as exc:
        return GatewayCheck(gateway, ok=False, error=str(exc))
    got = bytes_cid(data, version=version)
    if expected_size is not None and len(data) != expected_size:
        problem = f"{gateway} served {len(data)} bytes for {cid}, expected {expected_size}"
        return GatewayCheck(gateway, False, len(data), got, f"{problem} (truncated or altered)")
    if normalise_cid(got) != normalise_cid(cid):
        problem = f"{gateway} served bytes for {cid} that hash to {got}"
        return GatewayCheck(gateway, False, len(data), got, f"{problem} (altered content)")
    return GatewayCheck(gateway, True, len(data), got)


def verify(
    cid: str, gateways: list[str], *, timeout: float = DEFAULT_TIMEOUT
) -> list[GatewayCheck]:
    """One check per gateway; never raises for a gateway's fault (InputError for a bad CID)."""
    from kit.cid import cid_version_of

    cid_version_of(cid)
    return [verify_one(cid, gateway, timeout=timeout) for gateway in gateways]
