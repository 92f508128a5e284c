"""The README's main job (scripts/quickstart.py, after set-up) in a temporary directory, twice;
and its `--runtime dstack` path once."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from kit.ipfs.node import free_port, running_node

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
        assert "proof: verified (signer 0x" in done.stdout  # the tool checked it (kit/trust)
        assert running_node(repo) is None  # the node it started is stopped again
    first, second = (dict(line.split(":", 1) for line in out.splitlines()
                          if line.startswith(("CID:", "package hash:"))) for out in outputs)
    assert first == second  # same project, same CID and package hash


def test_quickstart_dstack_runtime(tmp_path: Path) -> None:
    """`--runtime dstack`: `kit gateway serve` under the stand-in guest agent, a TDX dev
    attestation checked against the compose hash, the answer's proof against its signer."""
    repo = tmp_path / "ipfs"
    ports = [str(free_port()) for _ in range(4)]
    argv = [sys.executable, str(ROOT / "scripts" / "quickstart.py"), "--runtime", "dstack",
            "--dir", str(tmp_path / "hello-agent"), "--ipfs-repo", str(repo),
            "--ipfs-api-port", ports[0], "--ipfs-gateway-port", ports[1],
            "--gateway-port", ports[2], "--llm-port", ports[3], "--prompt", "hello from dstack"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=QUICKSTART_TIMEOUT,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "stand-in answer: " + hashlib.sha256(b"hello from dstack").hexdigest()[:16]
    assert f"answer:       {expected}" in done.stdout
    assert "proof: verified (tdx dev quote accepted with --allow-dev-quote)" in done.stdout
    record = json.loads((tmp_path / "hello-agent" / "deployments" / "dstack.json").read_text())
    app_compose = (tmp_path / "hello-agent" / record["app_compose"]).read_bytes()
    assert hashlib.sha256(app_compose).hexdigest() == record["compose_hash"]
    assert f"hash {record['compose_hash']}" in done.stdout
    assert not (tmp_path / "hello-agent" / ".kit" / "vault.json").exists()  # no plain vault
    sealed = (tmp_path / "hello-agent" / ".kit" / "cvm-data" / "vault.sealed").read_bytes()
    assert sealed.startswith(b"KIT-SEALED-VAULT-v1\n") and b"mock" not in sealed
    assert running_node(repo) is None


def test_quickstart_confidential_provider(tmp_path: Path) -> None:
    """`--confidential`: the stand-in's provider key attested (dev quote) and pinned, the
    contract checking every completion's signature, both signers verified in the result."""
    from eth_account import Account

    ports = [str(free_port()) for _ in range(4)]
    argv = [sys.executable, str(ROOT / "scripts" / "quickstart.py"), "--confidential",
            "--dir", str(tmp_path / "agent"), "--ipfs-repo", str(tmp_path / "ipfs"),
            "--ipfs-api-port", ports[0], "--ipfs-gateway-port", ports[1],
            "--gateway-port", ports[2], "--llm-port", ports[3], "--prompt", "hello, confidential"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=QUICKSTART_TIMEOUT,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    expected = "stand-in answer: " + hashlib.sha256(b"hello, confidential").hexdigest()[:16]
    assert f"answer:       {expected}" in done.stdout
    assert "proof: verified (signer 0x" in done.stdout
    # the stand-in's documented public key: sha256 of its published seed (kit/local/mock_llm.py)
    seed = b"kit mock-llm confidential stand-in signing key v1 (public, never secret)"
    provider = Account.from_key(hashlib.sha256(seed).digest()).address
    assert f"provider proof: verified (signer {provider})" in done.stdout
    assert provider.lower() in (tmp_path / "agent" / "agent.toml").read_text().lower()
