"""Issue 9: paths and options that used to end in a Python traceback. Each goes through the real
entry point (`kit.cli.main`, in-process: an escaping exception fails the test) and must exit 2
with a message naming the path or option, leaving every file as it was.

Tests run as root, so `chmod` cannot make a directory unwritable; the unwritable targets here
are ones the kernel refuses to everybody: a path whose parent is a regular file (ENOTDIR), a
new entry under /proc (procfs has no mkdir: ENOENT) and under /sys (sysfs refuses: EPERM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fixtures.ipfs_node import run_cli
from kit.ipfs.records import Deployment, load_history, load_latest, record

VALID_CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"  # an existing CIDv0 (Kubo docs)


LOCK_ENTRIES = {".kit", ".kit/deploy.lock"}  # the deploy lock: empty, git-ignored, kept


def tree(directory: Path) -> dict[str, bytes | None]:
    """Every entry under `directory` but the deploy lock: file bytes, None for directories and
    links."""
    entries = {
        str(path.relative_to(directory)): path.read_bytes()
        if path.is_file() and not path.is_symlink() else None
        for path in sorted(directory.rglob("*"))
    }
    return {name: data for name, data in entries.items() if name not in LOCK_ENTRIES}


def assert_refused(result: tuple[int, str, str], *names: str) -> str:
    code, out, err = result
    print(err)  # shown by pytest -rA: what a user reads
    assert code == 2, err
    assert "Traceback" not in out + err and err.startswith("error: ")
    for name in names:
        assert name in err
    return err


# --- paths ----------------------------------------------------------------------------------


def test_agent_toml_that_is_a_directory(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "agent.toml").mkdir()
    before = tree(tmp_path)
    assert_refused(run_cli(capsys, "build", "-C", str(tmp_path)),
                   str(tmp_path / "agent.toml"), "is a directory")
    assert tree(tmp_path) == before


def test_agent_toml_that_cannot_be_read(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    # unreadable even for root: a symbolic link to itself (ELOOP)
    (tmp_path / "agent.toml").symlink_to("agent.toml")
    before = tree(tmp_path)
    assert_refused(run_cli(capsys, "build", "-C", str(tmp_path)), "agent.toml", "fix the link")
    assert tree(tmp_path) == before


def test_dist_that_is_a_file(project_factory: Callable[..., Path],
                             capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    (project / "dist" / "agent.js").unlink()
    (project / "dist").rmdir()
    (project / "dist").write_text("not a directory\n")
    before = tree(project)
    assert_refused(run_cli(capsys, "build", "-C", str(project)), str(project / "dist"))
    assert tree(project) == before


@pytest.mark.parametrize("command", ["deploy", "verify", "secrets-set"])
def test_deployments_that_is_a_file(command: str, project_factory: Callable[..., Path],
                                    capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    (project / "deployments").write_text("not a directory\n")
    before = tree(project)
    argv = {
        # an address nothing listens on: the records are read before any node is asked
        "deploy": ["deploy", "-C", str(project), "--ipfs-api", "/ip4/127.0.0.1/tcp/9/http"],
        "verify": ["verify", "-C", str(project)],
        "secrets-set": ["secrets", "set", "-C", str(project), "apiKey=not-shown-value"],
    }[command]
    err = assert_refused(run_cli(capsys, *argv), str(project / "deployments"))
    assert "not-shown-value" not in err
    assert tree(project) == before


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("file-parent", "not a directory"),  # DIR/sub where DIR is a regular file
        ("/proc/kit-init-test", "no such file"),  # procfs: nobody can create entries
        ("/sys/kit-init-test", "not permitted"),  # sysfs: refused even to root
    ],
)
def test_init_where_nothing_can_be_written(target: str, reason: str, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if target == "file-parent":
        (tmp_path / "plain-file").write_text("x")
        target = str(tmp_path / "plain-file" / "project")
    assert not Path(target).exists()
    err = assert_refused(run_cli(capsys, "init", target, "--name", "no-place"), reason)
    assert target in err or str(Path(target).parent) in err
    assert not Path(target).exists()


def test_init_with_user_info_in_the_base_url_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "project"
    err = assert_refused(run_cli(capsys, "init", str(target), "--name", "user-info",
                                 "--base-url", "https://someone:pw-canary@x.test/v1"),
                         "provider.base_url", "user-info")
    assert "pw-canary" not in err
    assert not target.exists()


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("address", ["garbage", "/ip4/127.0.0.1/tcp/99999/http",
                                     "/ip4/999.0.0.1/tcp/5002/http",
                                     "/ip4/127.0.0.1/tcp/5002/http\n", "http://127.0.0.1:99999"])
def test_deploy_with_a_malformed_ipfs_api(address: str, project_factory: Callable[..., Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    before = tree(project)
    assert_refused(run_cli(capsys, "deploy", "-C", str(project), "--ipfs-api", address),
                   "--ipfs-api")
    assert tree(project) == before


@pytest.mark.parametrize("address", ["garbage", "/ip4/127.0.0.1/tcp/99999/http"])
def test_dev_with_a_malformed_ipfs_api(address: str, tmp_path: Path) -> None:
    # a subprocess, bounded: were the option not checked, `kit dev` would serve until stopped
    done = subprocess.run([sys.executable, "-m", "kit", "dev", "-C", str(tmp_path), "--port", "0",
                           "--ipfs-api", address], capture_output=True, text=True, timeout=30)
    assert_refused((done.returncode, done.stdout, done.stderr), "--ipfs-api")
    assert list(tmp_path.iterdir()) == []


MALFORMED_URLS = ["not a url", "ftp://x.test", "http//127.0.0.1:8000", "http://",
                  "http://127.0.0.1:8000\n", "http://127.0.0.1:99999", "http://u:p@127.0.0.1"]


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_deploy_with_a_malformed_gateway(url: str, project_factory: Callable[..., Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    before = tree(project)
    assert_refused(run_cli(capsys, "deploy", "-C", str(project), "--ipfs-api",
                           "/ip4/127.0.0.1/tcp/9/http", "--gateway", url), "--gateway")
    assert tree(project) == before


@pytest.mark.parametrize("url", MALFORMED_URLS)
def test_verify_with_a_malformed_gateway(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert_refused(run_cli(capsys, "verify", VALID_CID, "--gateway", "http://127.0.0.1:9",
                           "--gateway", url), "--gateway")


def test_secrets_set_with_a_malformed_gateway(project_factory: Callable[..., Path],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    before = tree(project)
    err = assert_refused(run_cli(capsys, "secrets", "set", "-C", str(project), "--gateway",
                                 "gateway.local", "apiKey=value-canary"), "--gateway")
    assert "value-canary" not in err
    assert tree(project) == before


# --- the mapping itself ---------------------------------------------------------------------


def test_os_error_mapping_table() -> None:
    import errno

    from kit.errors import ExternalError, PathError, from_os_error

    refused = from_os_error(IsADirectoryError(errno.EISDIR, "Is a directory", "/p/agent.toml"))
    assert isinstance(refused, PathError) and refused.exit_code == 2
    assert str(refused).startswith("/p/agent.toml: is a directory;")
    # a rename names its target, not the temporary file
    renamed = from_os_error(OSError(errno.EISDIR, "Is a directory", "/p/.x.tmp", None, "/p/x"))
    assert str(renamed).startswith("/p/x:")
    full = from_os_error(OSError(errno.ENOSPC, "No space left on device", "/p/dist/agent.js"))
    assert isinstance(full, ExternalError) and full.exit_code == 1
    assert "/p/dist/agent.js" in str(full)


# --- records: concurrent writers (issue 9, "nothing lost") ----------------------------------

WRITER = """
import sys
from kit.ipfs.records import Deployment, record
project, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
for n in range(rounds):
    record(project, Deployment(cid=f"{tag}-{n}", cid_version=0, gateway_url="http://g",
           verified_via="http://v", artifact="dist/agent.js", size=n, config_sha256="0" * 64,
           template_version="t", kit_version="k", backend="node",
           deployed_at="2026-01-01T00:00:00Z"))
"""
WRITERS, ROUNDS = 3, 25


def test_concurrent_record_writers_lose_nothing(tmp_path: Path) -> None:
    """3 processes x 25 records each, all different: every one must be in the history, in each
    writer's order, and latest.json must equal the last entry."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), f"w{i}",
                                 str(ROUNDS)], env=env) for i in range(WRITERS)]
    for writer in writers:
        assert writer.wait(timeout=120) == 0
    history = [entry.cid for entry in load_history(tmp_path)]
    assert sorted(history) == sorted(f"w{i}-{n}" for i in range(WRITERS) for n in range(ROUNDS))
    for i in range(WRITERS):
        assert [cid for cid in history if cid.startswith(f"w{i}-")] == \
            [f"w{i}-{n}" for n in range(ROUNDS)]
    assert load_latest(tmp_path).cid == history[-1]


def test_record_is_reentrant_under_its_lock(tmp_path: Path) -> None:
    from kit.ipfs.records import records_lock

    deployment = Deployment(cid="c", cid_version=0, gateway_url="g", verified_via="v",
                            artifact="a", size=1, config_sha256="0", template_version="t",
                            kit_version="k", backend="node", deployed_at="d")
    with records_lock(tmp_path):
        assert record(tmp_path, deployment) is True  # does not deadlock on its own lock
    assert json.loads((tmp_path / "deployments/latest.json").read_text())["cid"] == "c"
