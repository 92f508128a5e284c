"""`kit node up|status|down` through the real CLI (subprocesses) against a real js-ipfs node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from kit.ipfs.node import STATE_FILE, multiaddr_to_url

CLI_TIMEOUT = 150


def kit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kit", *args], env=env, capture_output=True,
                          text=True, timeout=CLI_TIMEOUT, check=False)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def bystander() -> subprocess.Popen[bytes]:
    """An unrelated process that `kit node down` must never touch."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def test_up_is_idempotent_status_reports_and_down_stops_only_that_pid(tmp_path: Path) -> None:
    env = {**os.environ, "KIT_IPFS_REPO": str(tmp_path / "repo")}
    other = bystander()
    try:
        first = kit(env, "node", "up", "--api-port", "0", "--gateway-port", "0", "--json")
        assert first.returncode == 0, first.stderr
        info = json.loads(first.stdout)
        assert info["started"] is True and info["implementation"] == "js-ipfs"
        version = requests.post(multiaddr_to_url(info["api"]) + "/api/v0/version", timeout=5)
        assert version.status_code == 200 and "Version" in version.json()

        config = json.loads((tmp_path / "repo" / "config").read_text())
        assert config["Bootstrap"] == []
        assert config["Discovery"]["MDNS"]["Enabled"] is False
        assert config["Discovery"]["webRTCStar"]["Enabled"] is False
        for address in (config["Addresses"]["API"], config["Addresses"]["Gateway"],
                        *config["Addresses"]["Swarm"]):
            assert address.startswith("/ip4/127.0.0.1/")

        second = kit(env, "node", "up", "--json")
        assert second.returncode == 0, second.stderr
        again = json.loads(second.stdout)
        assert again["started"] is False and again["pid"] == info["pid"]
        assert "already running" in kit(env, "node", "up").stdout

        status = json.loads(kit(env, "node", "status", "--json").stdout)
        assert status["running"] and status["api_answers"] and status["gateway_answers"]

        down = kit(env, "node", "down", "--json")
        assert down.returncode == 0, down.stderr
        assert json.loads(down.stdout) == {"stopped": True, "pid": info["pid"]}
        assert not pid_alive(info["pid"])
        assert other.poll() is None, "down must stop only the recorded PID"

        after = kit(env, "node", "status")
        assert after.returncode == 0 and "no node running" in after.stdout
        assert "no node running" in kit(env, "node", "down").stdout
    finally:
        kit(env, "node", "down")
        other.kill()
        other.wait()


def test_stale_state_naming_a_live_unrelated_pid_is_not_signalled(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    other = bystander()
    try:
        (repo / STATE_FILE).write_text(json.dumps({
            "pid": other.pid, "started_at": "1", "api": "/ip4/127.0.0.1/tcp/1/http",
            "gateway_url": "http://127.0.0.1:1", "repo": str(repo), "implementation": "js-ipfs",
            "log": str(repo / "daemon.log"),
        }))
        env = {**os.environ, "KIT_IPFS_REPO": str(repo)}
        down = kit(env, "node", "down")
        assert down.returncode == 0 and "no node running" in down.stdout
        assert other.poll() is None
        assert not (repo / STATE_FILE).exists(), "a stale state file is cleared"
    finally:
        other.kill()
        other.wait()


def test_up_without_the_node_package_says_where_to_get_it(tmp_path: Path) -> None:
    env = {**os.environ, "KIT_IPFS_REPO": str(tmp_path / "repo"),
           "KIT_IPFS_NODE_DIR": str(tmp_path / "nowhere"),
           "PATH": os.path.dirname(sys.executable)}  # no Kubo `ipfs` either
    result = kit(env, "node", "up", "--api-port", "0", "--gateway-port", "0")
    assert result.returncode == 1
    assert "KIT_IPFS_NODE_DIR" in result.stderr and "scripts/ipfs-node" in result.stderr
    assert not (tmp_path / "repo" / STATE_FILE).exists()


def test_up_after_the_node_was_killed_mid_add_works_the_first_time(tmp_path: Path) -> None:
    """Issue 9: SIGKILL leaves js-ipfs's repo.lock and api file behind; the next `kit node up`
    failed once ("Lock already being held") before it worked. It must work at once."""
    import signal
    import threading

    env = {**os.environ, "KIT_IPFS_REPO": str(tmp_path / "repo")}
    first = kit(env, "node", "up", "--api-port", "0", "--gateway-port", "0", "--json")
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    try:
        def big_add() -> None:  # 64 MiB, streamed: still running when the node is killed
            chunks = (b"x" * 2**20 for _ in range(64))
            try:
                requests.post(multiaddr_to_url(info["api"]) + "/api/v0/add",
                              files={"file": ("big.bin", b"".join(chunks))}, timeout=30)
            except requests.RequestException:
                pass  # the node dies under it: that is the point

        adder = threading.Thread(target=big_add, daemon=True)
        adder.start()
        time.sleep(0.5)
        os.kill(info["pid"], signal.SIGKILL)
        adder.join(timeout=30)
        assert (tmp_path / "repo" / "repo.lock").exists(), "the killed daemon left its lock"

        again = kit(env, "node", "up", "--api-port", "0", "--gateway-port", "0", "--json")
        assert again.returncode == 0, again.stderr
        restarted = json.loads(again.stdout)
        assert restarted["started"] is True and restarted["pid"] != info["pid"]
        version = requests.post(multiaddr_to_url(restarted["api"]) + "/api/v0/version",
                                timeout=5)
        assert version.status_code == 200
    finally:
        kit(env, "node", "down")


def test_up_refuses_a_repo_another_live_daemon_uses(tmp_path: Path) -> None:
    """The stale-lock removal never touches a repository whose API still answers."""
    env = {**os.environ, "KIT_IPFS_REPO": str(tmp_path / "repo")}
    first = kit(env, "node", "up", "--api-port", "0", "--gateway-port", "0", "--json")
    assert first.returncode == 0, first.stderr
    info = json.loads(first.stdout)
    state = tmp_path / "repo" / STATE_FILE
    saved = state.read_text()
    try:
        state.unlink()  # as if this daemon had not been started by `kit node up`
        refused = kit(env, "node", "up", "--api-port", "0", "--gateway-port", "0")
        assert refused.returncode == 1 and "another IPFS daemon" in refused.stderr
        assert (tmp_path / "repo" / "repo.lock").exists() and pid_alive(info["pid"])
    finally:
        state.write_text(saved)
        kit(env, "node", "down")
