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


def quickstart_argv(tmp_path: Path, project: str, prompt: str, *options: str) -> list[str]:
    """scripts/quickstart.py on free loopback ports, its IPFS repository under tmp_path."""
    ports = [str(free_port()) for _ in range(4)]
    return [sys.executable, str(ROOT / "scripts" / "quickstart.py"), *options,
            "--dir", str(tmp_path / project), "--ipfs-repo", str(tmp_path / "ipfs"),
            "--ipfs-api-port", ports[0], "--ipfs-gateway-port", ports[1],
            "--gateway-port", ports[2], "--llm-port", ports[3], "--prompt", prompt]


def run_quickstart(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=QUICKSTART_TIMEOUT,
                          check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def stand_in_answer(prompt: str) -> str:
    """The stand-in LLM's documented answer (kit/local/mock_llm.py), computed here."""
    return "stand-in answer: " + hashlib.sha256(prompt.encode()).hexdigest()[:16]


def test_quickstart_runs_twice(tmp_path: Path) -> None:
    argv = quickstart_argv(tmp_path, "hello-agent", "hello from the test")
    outputs = []
    for _ in range(2):
        out = run_quickstart(argv)
        outputs.append(out)
        assert f"answer:       {stand_in_answer('hello from the test')}" in out
        assert "proof: verified (signer 0x" in out  # the tool checked it (kit/trust)
        assert running_node(tmp_path / "ipfs") is None  # the node it started is stopped again
    first, second = (dict(line.split(":", 1) for line in out.splitlines()
                          if line.startswith(("CID:", "package hash:"))) for out in outputs)
    assert first == second  # same project, same CID and package hash


def test_quickstart_dstack_runtime(tmp_path: Path) -> None:
    """`--runtime dstack`: `kit gateway serve` under the stand-in guest agent, a TDX dev
    attestation checked against the compose hash, the answer's proof against its signer."""
    out = run_quickstart(quickstart_argv(tmp_path, "hello-agent", "hello from dstack",
                                         "--runtime", "dstack"))
    assert f"answer:       {stand_in_answer('hello from dstack')}" in out
    assert "proof: verified (tdx dev quote accepted with --allow-dev-quote)" in out
    record = json.loads((tmp_path / "hello-agent" / "deployments" / "dstack.json").read_text())
    app_compose = (tmp_path / "hello-agent" / record["app_compose"]).read_bytes()
    assert hashlib.sha256(app_compose).hexdigest() == record["compose_hash"]
    assert f"hash {record['compose_hash']}" in out
    assert not (tmp_path / "hello-agent" / ".kit" / "vault.json").exists()  # no plain vault
    sealed = (tmp_path / "hello-agent" / ".kit" / "cvm-data" / "vault.sealed").read_bytes()
    assert sealed.startswith(b"KIT-SEALED-VAULT-v1\n") and b"mock" not in sealed
    assert running_node(tmp_path / "ipfs") is None


def test_quickstart_confidential_provider(tmp_path: Path) -> None:
    """`--confidential`: the stand-in's provider key attested (dev quote) and pinned, the
    contract checking every completion's signature, both signers verified in the result."""
    from eth_account import Account

    out = run_quickstart(quickstart_argv(tmp_path, "agent", "hello, confidential",
                                         "--confidential"))
    assert f"answer:       {stand_in_answer('hello, confidential')}" in out
    assert "proof: verified (signer 0x" in out
    # the stand-in's documented public key: sha256 of its published seed (kit/local/mock_llm.py)
    seed = b"kit mock-llm confidential stand-in signing key v1 (public, never secret)"
    provider = Account.from_key(hashlib.sha256(seed).digest()).address
    assert f"provider proof: verified (signer {provider})" in out
    assert provider.lower() in (tmp_path / "agent" / "agent.toml").read_text().lower()
