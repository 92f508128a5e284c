"""The local IPFS dev node: install, init, start, stop, status.

The node is the pinned js-ipfs of `scripts/ipfs-node/` (REFERENCE section 4), or a Kubo `ipfs`
binary when one is on PATH. Its repository lives in a per-user data directory unless told
otherwise (argument, or `KIT_IPFS_REPO`); it listens on 127.0.0.1 only, has no bootstrap peers
and no discovery, and runs `--offline`. `kit-node.json` in the repository records the daemon's
PID (with its start time, so that a recycled PID is never signalled) and its addresses.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kit.errors import InputError, NodeUnavailable
from kit.fsutil import atomic_write_json

DEFAULT_API_PORT = 5002  # js-ipfs defaults
DEFAULT_GATEWAY_PORT = 9090
STATE_FILE = "kit-node.json"
LOG_FILE = "daemon.log"
NPM_CI_TIMEOUT = 900.0


@dataclass(frozen=True)
class NodeInfo:
    pid: int
    started_at: str  # the process start time as the kernel reports it (identifies the process)
    api: str  # multiaddr, e.g. /ip4/127.0.0.1/tcp/5002/http
    gateway_url: str
    repo: str
    implementation: str  # "js-ipfs" or "kubo"
    log: str


@dataclass(frozen=True)
class NodeStatus:
    repo: str
    running: bool
    info: NodeInfo | None
    api_answers: bool
    gateway_answers: bool


# --- locations ------------------------------------------------------------------------------


def default_repo() -> Path:
    """`KIT_IPFS_REPO`, else `$XDG_DATA_HOME/agent-contract-kit/ipfs` (~/.local/share/...)."""
    if os.environ.get("KIT_IPFS_REPO"):
        return Path(os.environ["KIT_IPFS_REPO"]).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data_home) / "agent-contract-kit" / "ipfs"


def node_package_dir() -> Path:
    """`KIT_IPFS_NODE_DIR`, else `scripts/ipfs-node` of the source checkout the kit runs from."""
    if os.environ.get("KIT_IPFS_NODE_DIR"):
        return Path(os.environ["KIT_IPFS_NODE_DIR"]).expanduser()
    return Path(__file__).resolve().parents[2] / "scripts" / "ipfs-node"


def _jsipfs_binary() -> Path:
    """The js-ipfs CLI, running `npm ci` first when its dependencies are not installed."""
    node_dir = node_package_dir()
    if not (node_dir / "package-lock.json").is_file():
        raise NodeUnavailable(
            f"no pinned js-ipfs node at {node_dir} (it ships with the kit's source checkout, "
            "not with the wheel); set KIT_IPFS_NODE_DIR to a checkout's scripts/ipfs-node, or "
            "put a Kubo `ipfs` binary on PATH"
        )
    binary = node_dir / "node_modules" / ".bin" / "jsipfs"
    if not binary.exists():
        _npm_ci(node_dir)
    return binary


def _npm_ci(node_dir: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise NodeUnavailable("npm is not on PATH; install Node.js 20 and npm, then run again")
    _run_step([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], f"npm ci in {node_dir}",
              NPM_CI_TIMEOUT, "fix that and run again", cwd=node_dir)


def _run_step(argv: list[str], what: str, timeout: float, fix: str, **options: Any) -> None:
    """Run a set-up command; NodeUnavailable, with its output's tail, when it fails."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                              **options)
    except subprocess.TimeoutExpired:
        raise NodeUnavailable(f"`{what}` did not finish within {timeout:.0f}s; {fix}") from None
    if done.returncode != 0:
        output = (done.stderr or done.stdout).strip()[-500:]
        raise NodeUnavailable(f"`{what}` failed (exit {done.returncode}): {output}; {fix}")


# --- process identity -----------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (None if it is gone or a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return _start_time_portable(pid)
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] == "Z" else fields[19]


def _start_time_portable(pid: int) -> str | None:
    # Without /proc the PID alone identifies the process (weaker, but signal 0 is harmless).
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # it exists, owned by someone else
    return "unknown"


def _reap(pid: int) -> None:
    """Collect the exit status if the daemon is our own child (the test fixtures' case)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_running(info: NodeInfo) -> bool:
    _reap(info.pid)
    return _start_time(info.pid) == info.started_at


# --- state ----------------------------------------------------------------------------------


def _state_path(repo: Path) -> Path:
    return repo / STATE_FILE


def _load_state(repo: Path) -> NodeInfo | None:
    try:
        return NodeInfo(**json.loads(_state_path(repo).read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"{_state_path(repo)} is unreadable ({exc}); stop the node by hand and delete it"
        ) from None


def _running_node(repo: Path) -> NodeInfo | None:
    """The recorded node if it is still that process; a stale state file is removed."""
    info = _load_state(repo)
    if info is not None and not _is_running(info):
        _state_path(repo).unlink(missing_ok=True)
        return None
    return info


# --- configuration --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _loopback_settings(api_port: int, gateway_port: int, js: bool) -> dict[str, object]:
    settings: dict[str, object] = {
        "Addresses.API": f"/ip4/127.0.0.1/tcp/{api_port}",
        "Addresses.Gateway": f"/ip4/127.0.0.1/tcp/{gateway_port}",
        "Addresses.Swarm": ["/ip4/127.0.0.1/tcp/0"],
        "Bootstrap": [],
        "Discovery.MDNS.Enabled": False,
    }
    if js:
        settings["Discovery.webRTCStar.Enabled"] = False
    return settings


def _configure(repo: Path, settings: dict[str, object], js: bool) -> None:
    # The daemon is not running yet: editing the file is what `config --json KEY VALUE` does,
    # without starting one node process per key.
    path = repo / "config"
    config = json.loads(path.read_text())
    for dotted, value in settings.items():
        *parents, leaf = dotted.split(".")
        table = config
        for key in parents:
            table = table.setdefault(key, {})
        table[leaf] = value
    if js:
        # js-ipfs's gRPC endpoint has a fixed default port: two nodes would collide on it.
        config.get("Addresses", {}).pop("RPC", None)
    atomic_write_json(path, config, private=True)


def _commands(js_binary: Path | None) -> tuple[list[str], list[str], str]:
    """(init argv, daemon argv, implementation name); Kubo wins when it is on PATH."""
    kubo = shutil.which("ipfs")
    if kubo:
        return [kubo, "init", "-e", "--profile", "test"], [kubo, "daemon", "--offline"], "kubo"
    binary = str(js_binary or _jsipfs_binary())
    return (
        [binary, "init", "-e", "--profile", "test"],
        [binary, "daemon", "--offline", "--enable-preload=false"],
        "js-ipfs",
    )


def _init_repo(repo: Path, init_argv: list[str], timeout: float) -> None:
    if (repo / "config").is_file():
        return
    repo.mkdir(parents=True, exist_ok=True)
    _run_step(init_argv, f"ipfs init in {repo}", timeout,
              "delete the directory or choose another with --repo",
              env={**os.environ, "IPFS_PATH": str(repo)})


# --- a daemon killed with SIGKILL --------------------------------------------------------------


STALE_FILES = ("repo.lock", "api")  # what a killed daemon leaves in its repository


def _clear_stale_locks(repo: Path) -> None:
    """Remove the lock and API file a killed daemon left (js-ipfs refuses to start while the
    lock is younger than its 10 s staleness). Called only when the recorded daemon is gone; if
    the API the file names still answers, another daemon owns the repository: refuse instead."""
    api = _read_api_file(repo / "api")
    if api is not None and _api_answers(api):
        raise NodeUnavailable(
            f"another IPFS daemon, not started by `kit node up`, uses {repo} (its API {api} "
            "answers); stop it, or choose another repository with --repo"
        )
    for name in STALE_FILES:
        path = repo / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def _read_api_file(path: Path) -> str | None:
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    try:
        multiaddr_to_url(text)
    except InputError:
        return None  # unreadable: nothing can answer at it
    return text


# --- lifecycle ------------------------------------------------------------------------------


def up(
    repo: Path | None = None,
    *,
    api_port: int = DEFAULT_API_PORT,
    gateway_port: int = DEFAULT_GATEWAY_PORT,
    timeout: float = 60.0,
) -> tuple[NodeInfo, bool]:
    """Start the node (installing and initialising as needed); (info, started).

    `started` is False when the recorded node is already running: nothing is changed then.
    Port 0 means "pick a free port".
    """
    repo = (repo or default_repo()).resolve()
    running = _running_node(repo)
    if running is not None:
        return running, False
    init_argv, daemon_argv, implementation = _commands(None)
    _init_repo(repo, init_argv, timeout)
    _clear_stale_locks(repo)
    api_port, gateway_port = api_port or free_port(), gateway_port or free_port()
    js = implementation == "js-ipfs"
    _configure(repo, _loopback_settings(api_port, gateway_port, js), js)
    process = _spawn(repo, daemon_argv)
    info = NodeInfo(
        pid=process.pid,
        started_at=_start_time(process.pid) or "unknown",
        api=f"/ip4/127.0.0.1/tcp/{api_port}/http",
        gateway_url=f"http://127.0.0.1:{gateway_port}",
        repo=str(repo),
        implementation=implementation,
        log=str(repo / LOG_FILE),
    )
    atomic_write_json(_state_path(repo), asdict(info))
    _wait_ready(info, process, timeout)
    return info, True


def _spawn(repo: Path, argv: list[str]) -> subprocess.Popen[bytes]:
    with open(repo / LOG_FILE, "ab") as log:
        return subprocess.Popen(
            argv,
            env={**os.environ, "IPFS_PATH": str(repo)},
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a Ctrl-C in the shell spares it
        )


def _wait_ready(info: NodeInfo, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            _state_path(Path(info.repo)).unlink(missing_ok=True)
            raise NodeUnavailable(
                f"the IPFS daemon exited with code {process.returncode} while starting: "
                f"{_log_tail(Path(info.log))}; see {info.log}"
            )
        if _api_answers(info.api):
            return
        time.sleep(0.2)
    _stop(info, grace=5.0)
    _state_path(Path(info.repo)).unlink(missing_ok=True)
    raise NodeUnavailable(
        f"the IPFS daemon did not answer within {timeout:.0f}s and was stopped; see {info.log}"
    )


def _log_tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def down(repo: Path | None = None, *, grace: float = 10.0) -> NodeInfo | None:
    """Stop the recorded node (SIGTERM, then SIGKILL after `grace` s); None if none ran."""
    repo = (repo or default_repo()).resolve()
    info = _running_node(repo)
    if info is None:
        return None
    _stop(info, grace)
    _state_path(repo).unlink(missing_ok=True)
    return info


def _stop(info: NodeInfo, grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if not _is_running(info):
            return
        try:
            os.kill(info.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and _is_running(info):
            time.sleep(0.1)
    if _is_running(info):
        raise NodeUnavailable(f"the IPFS daemon (PID {info.pid}) did not stop; stop it by hand")


def status(repo: Path | None = None) -> NodeStatus:
    repo = (repo or default_repo()).resolve()
    info = _running_node(repo)
    return NodeStatus(
        repo=str(repo),
        running=info is not None,
        info=info,
        api_answers=info is not None and _api_answers(info.api),
        gateway_answers=info is not None and _gateway_answers(info.gateway_url),
    )


def running_node(repo: Path | None = None) -> NodeInfo | None:
    """The node `kit node up` started for this repository, if it still runs."""
    return _running_node((repo or default_repo()).resolve())


# --- probes ---------------------------------------------------------------------------------


def resolve_api(configured: str) -> str:
    """The node `kit node up` runs when agent.toml names the default address, else that address."""
    from kit.contract.config import LOCAL_IPFS_API

    node = running_node() if configured == LOCAL_IPFS_API else None
    return node.api if node is not None else configured


def multiaddr_to_url(api: str) -> str:
    """`/ip4/127.0.0.1/tcp/5002/http` -> `http://127.0.0.1:5002`; URLs pass through."""
    if api.startswith(("http://", "https://")):
        return api.rstrip("/")
    parts = api.strip("/").split("/")
    if len(parts) < 4 or parts[2] != "tcp":
        raise InputError(f"{api!r} is not a /ip4|/dns/HOST/tcp/PORT[/http] multiaddr")
    scheme = parts[4] if len(parts) > 4 and parts[4] in ("http", "https") else "http"
    host = f"[{parts[1]}]" if parts[0] == "ip6" else parts[1]
    return f"{scheme}://{host}:{parts[3]}"


def _api_answers(api: str) -> bool:
    import requests

    try:
        return requests.post(f"{multiaddr_to_url(api)}/api/v0/version", timeout=2).ok
    except requests.RequestException:
        return False


def _gateway_answers(gateway_url: str) -> bool:
    import requests

    try:
        # Any HTTP answer means the gateway listens (an empty path is not a valid IPFS path).
        requests.get(f"{gateway_url}/ipfs/", timeout=2)
    except requests.RequestException:
        return False
    return True
