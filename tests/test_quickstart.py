"""The README's main job (scripts/quickstart.py, after set-up) in a temporary directory, twice."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from kit.node import free_port, running_node

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART_TIMEOUT = 240  # seconds for one run once dependencies are installed


def test_quickstart_runs_twice(tmp_path: Path) -> None:
    repo = tmp_path / "ipfs"
    ports = [str(free_port()) for _ in range(4)]
    argv = [sys.executable, str(ROOT / "scripts" / "quickstart.py"), "--dir",
            str(tmp_path / "hello-agent"), "--ipfs-repo", str(repo), "--ipfs-api-port", ports[0],
            "--ipfs-gateway-port", ports[1], "--gateway-port", ports[2], "--llm-port", ports[3],
            "--prompt", "hello from the test"]
    expected = "stand-in answer: " + hashlib.sha256(b"hello from the test").hexdigest()[:16]
    outputs = []
    for _ in range(2):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=QUICKSTART_TIMEOUT,
                              check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout)
        assert f"answer:       {expected}" in done.stdout
        assert running_node(repo) is None  # the node it started is stopped again
    first, second = (dict(line.split(":", 1) for line in out.splitlines()
                          if line.startswith(("CID:", "package hash:"))) for out in outputs)
    assert first == second  # same project, same CID and package hash
