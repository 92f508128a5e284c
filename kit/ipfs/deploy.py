"""`kit deploy` and `kit verify`: build, compute the CID locally, pin, check, fetch back, record.

Nothing is recorded unless every check passes: the CID the backend returns must equal the one
computed locally, and the bytes a gateway serves for it must hash to it again. When a deploy
fails, the pins it created are removed again (a pin that existed before is never touched).
Each step reports through `progress` and is timed.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from kit.errors import CidMismatch, GatewayError, KitError, PinningError, map_os_errors

if TYPE_CHECKING:
    from kit.contract.config import ProjectConfig
    from kit.ipfs.client import IpfsClient
    from kit.ipfs.pinning import Pinned, Pinner
    from kit.contract.project import BuildResult
    from kit.ipfs.records import Deployment

Progress = Callable[[str], None]
DEFAULT_TIMEOUT = 30.0
MAX_FETCH_BYTES = 64 * 2**20  # a contract is far smaller; bounds a misbehaving gateway
ATTEST_TIMEOUT = 10.0  # seconds for the gateway's /attestation after a deploy


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
    """Build, pin, check and record `project_dir`'s contract; raises a KitError on any failure.

    Deploys of one project take turns (the records lock, held from the build to the record).
    A failed deploy removes the pins it added (on the node and, once pinned, on the service)."""
    from kit.contract.config import check_option_ipfs_api, check_option_url, load_config
    from kit.ipfs.records import records_lock

    if ipfs_api is not None:
        check_option_ipfs_api("--ipfs-api", ipfs_api)
    if gateway is not None:
        check_option_url("--gateway", gateway)
    steps = _Steps(progress)
    with map_os_errors():  # the script calls this directly: no OSError past here either
        config = load_config(project_dir)
        with records_lock(config.root, waiting=steps.progress):
            return _deploy_locked(config, steps, ipfs_api=ipfs_api,
                                  pinning_service=pinning_service, gateway=gateway,
                                  cid_version=cid_version, timeout=timeout)


def _deploy_locked(config: ProjectConfig, steps: _Steps, *, ipfs_api: str | None,
                   pinning_service: str | None, gateway: str | None, cid_version: int | None,
                   timeout: float) -> DeployResult:
    from kit.cid import bytes_cid
    from kit.ipfs.client import IpfsClient
    from kit.ipfs.node import resolve_api
    from kit.ipfs.pinning import make_pinner
    from kit.contract.project import build_project
    from kit.ipfs.records import load_history, load_latest, record

    load_latest(config.root), load_history(config.root)  # a corrupt record fails before pinning
    with steps.step("render", "rendering the contract"):
        build = build_project(config.root, cid_version=cid_version)
        data = build.path.read_bytes()
    with steps.step("cid", f"computing the CIDv{build.cid_version} of the bytes on disk"):
        local_cid = bytes_cid(data, version=build.cid_version)
    client = IpfsClient(ipfs_api or resolve_api(config.ipfs.api), timeout)
    pinner = make_pinner(pinning_service, client, timeout=timeout)
    with _PinUndo(pinner, client, local_cid) as undo:
        with steps.step("add", f"adding {build.size} bytes through the {pinner.name} backend"):
            undo.pinned = pinner.pin(data, local_cid, build.path.name, build.cid_version)
        with steps.step("pin", f"checking the returned CID {undo.pinned.cid} and the pin"):
            _check_pinned(pinner, undo.pinned, local_cid)
        verified_via = gateway or pinner.gateway or client.gateway_url()
        with steps.step("verify", f"fetching {local_cid} back through {verified_via}"):
            check = verify_one(local_cid, verified_via, timeout=timeout, expected_size=len(data))
            if not check.ok:
                fault = GatewayError if check.cid is None else CidMismatch
                raise fault(f"{check.error}; no deployment recorded")
    deployment = _keep_signers(config.root, _deployment(config, build, local_cid, verified_via,
                                                        pinner.name))
    with steps.step("record", "writing deployments/latest.json and history.json"):
        recorded = record(config.root, deployment)
    warnings = [*undo.pinned.notes, *_stale_secrets_warning(config.root, local_cid)]
    with steps.step("attest", f"recording the answer signer attested at {config.gateway.url}"):
        deployment = _attest_signer(config.root, deployment, warnings)
    return DeployResult(
        cid=local_cid, cid_version=build.cid_version, backend=pinner.name,
        verified_via=verified_via, size=build.size, recorded=recorded,
        record=deployment.to_dict(), timings_ms=steps.timings_ms, warnings=warnings,
    )


def _keep_signers(project_dir: Path, deployment: Deployment) -> Deployment:
    """A re-deploy of the same CID keeps the signers attested for it."""
    from dataclasses import replace

    from kit.ipfs.records import load_latest

    latest = load_latest(project_dir)
    if latest is None or latest.cid != deployment.cid:
        return deployment
    return replace(deployment, signers=latest.signers)


def _attest_signer(project_dir: Path, deployment: Deployment, warnings: list[str]) -> Deployment:
    """Attest the answer signer at the gateway and record it; a failure is a warning, never a
    failed deploy (`kit attest` retries it). Production checks, except that a loopback gateway
    (the kit's own local runtime on this machine) may answer with a dev quote."""
    from kit.ipfs.records import load_latest
    from kit.trust.attestation import attest_deployment, is_loopback
    from kit.trust.quotes import AttestationPolicy

    policy = AttestationPolicy(allow_dev=is_loopback(deployment.gateway_url))
    try:
        attest_deployment(project_dir, policy=policy, timeout=ATTEST_TIMEOUT)
    except KitError as exc:
        warnings.append(f"answer signer not recorded ({exc}); run `kit attest` when the gateway "
                        "serves the contract")
        return deployment
    return load_latest(project_dir) or deployment


class _PinUndo:
    """Undoes the pins a failed deploy added: the node's pin of the CID (when this run created
    it; the node and pinning-service backends add the bytes to the node) and the remote pin
    once a remote backend reported it as created. The outcome is appended to the error."""

    def __init__(self, pinner: Pinner, client: IpfsClient, cid: str) -> None:
        self.pinner, self.cid = pinner, cid
        self.node = None if pinner.name == "pinata" else client  # Pinata never uses the node
        self.pinned: Pinned | None = None
        self.node_had_it = True

    def __enter__(self) -> _PinUndo:
        if self.node is not None:
            self.node_had_it = self.node.is_pinned(self.cid)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 traceback: object) -> None:
        if exc is None:
            return
        notes = [note for note in (self._undo_remote(), self._undo_node()) if note]
        if notes and isinstance(exc, KitError):
            exc.args = (f"{exc}; " + "; ".join(notes),)

    def _undo_remote(self) -> str:
        pinned = self.pinned
        if self.pinner.name == "node" or pinned is None or not pinned.created:
            return ""  # the node's pin is undone below
        if pinned.cid != self.cid:
            return ""  # a mismatching pin was undone by _check_pinned
        return _attempt(lambda: self.pinner.unpin(self.cid),
                        f"the {self.pinner.name} pin this deploy added was removed",
                        f"removing the {self.pinner.name} pin of {self.cid} failed")

    def _undo_node(self) -> str:
        node = self.node
        if node is None or self.node_had_it:
            return ""

        def unpin() -> None:
            if node.is_pinned(self.cid):
                node.unpin(self.cid)

        return _attempt(unpin, f"the node pin of {self.cid} this deploy added was removed",
                        f"removing the node pin of {self.cid} failed; `ipfs pin rm` it by hand")


def _attempt(action: Callable[[], None], done: str, failed: str) -> str:
    try:
        action()
    except KitError as exc:
        return f"{failed} ({exc})"
    return done


def _stale_secrets_warning(project_dir: Path, cid: str) -> list[str]:
    from kit.mech.secrets import load_binding

    binding = load_binding(project_dir)
    if binding is None or binding.cid == cid:
        return []
    return [f"the vault secrets are bound to the previous CID {binding.cid}; the gateway ignores "
            f"them for {cid}: run `kit secrets set NAME=VALUE...` again"]


def _deployment(config: ProjectConfig, build: BuildResult, cid: str, verified_via: str,
                backend: str) -> Deployment:
    from kit import __version__
    from kit.ipfs.records import Deployment, utc_now

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
    from kit.ipfs.client import normalise_cid

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
