"""`kit dstack compose|deploy`, the app-compose document and the Dockerfile, checked without Docker.

Oracles: hashlib (sha256 of the written bytes: what a CVM measures), `dstack_sdk.get_compose_hash`
on the file as read back, PyYAML for the compose file, /bin/sh for the Dockerfile's digest guard.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import stat
import subprocess
from pathlib import Path

import pytest
import yaml
from dstack_sdk import get_compose_hash

from kit.cli import main
from kit.dstack import compose

ROOT = Path(__file__).resolve().parents[1]
DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGE = f"ghcr.io/example/kit-gateway:0.1.0@{DIGEST}"
PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_:
        main(list(argv))
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


# -- compose ----------------------------------------------------------------------------------

def test_compose_writes_a_document_whose_bytes_hash_to_the_recorded_hash(tmp_path, capsys):
    code, out, _ = run(capsys, "dstack", "compose", "-C", str(tmp_path), "--image", IMAGE,
                       "--name", "My Agent", "--json")
    assert code == 0
    result = json.loads(out)
    raw = (tmp_path / "dstack" / "app-compose.json").read_bytes()
    assert hashlib.sha256(raw).hexdigest() == result["compose_hash"]
    assert get_compose_hash(json.loads(raw)) == result["compose_hash"]
    record = json.loads((tmp_path / "deployments" / "dstack.json").read_text())
    assert record["compose_hash"] == result["compose_hash"] and record["image"] == IMAGE
    assert record["app_id"] == result["compose_hash"][:40] and record["name"] == "my-agent"


def test_compose_file_pins_every_image_and_mounts_the_guest_agent(tmp_path, capsys):
    assert run(capsys, "dstack", "compose", "-C", str(tmp_path), "--image", IMAGE,
               "--ipfs-gateway", "http://127.0.0.1:8080", "--ipfs-gateway",
               "https://ipfs.invalid/")[0] == 0
    document = json.loads((tmp_path / "dstack" / "app-compose.json").read_text())
    assert document["runner"] == "docker-compose" and document["kms_enabled"] is True
    assert document["allowed_envs"] == []
    services = yaml.safe_load(document["docker_compose_file"])["services"]
    for service in services.values():
        assert PINNED.search(service["image"]), service["image"]
        assert "env_file" not in service
    assert services["gateway"]["environment"] == [
        "KIT_IPFS_GATEWAYS=http://127.0.0.1:8080 https://ipfs.invalid/"]
    assert "/var/run/dstack.sock:/var/run/dstack.sock" in services["gateway"]["volumes"]
    # the recorded gateways are reused, and a credential in a URL is refused
    assert run(capsys, "dstack", "compose", "-C", str(tmp_path))[0] == 0
    assert json.loads((tmp_path / "dstack" / "app-compose.json").read_text()) == document
    code, _, err = run(capsys, "dstack", "compose", "-C", str(tmp_path), "--ipfs-gateway",
                       "https://user:hunter2@ipfs.invalid/")
    assert code == 2 and "hunter2" not in err
    on_disk = (tmp_path / "dstack" / "docker-compose.yaml").read_text()
    assert on_disk == document["docker_compose_file"]


def test_compose_is_idempotent_and_reuses_the_recorded_image(tmp_path, capsys):
    assert run(capsys, "dstack", "compose", "-C", str(tmp_path), "--image", IMAGE)[0] == 0
    first = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    assert run(capsys, "dstack", "compose", "-C", str(tmp_path))[0] == 0
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == first
    other = IMAGE.replace("0123", "4567")
    code, out, _ = run(capsys, "dstack", "compose", "-C", str(tmp_path), "--image", other,
                       "--json")
    assert code == 0 and json.loads(out)["compose_hash"] != \
        json.loads(first[tmp_path / "deployments" / "dstack.json"])["compose_hash"]


@pytest.mark.parametrize("image", [
    "ghcr.io/example/kit-gateway:0.1.0",  # a tag only
    "ghcr.io/example/kit-gateway:latest",
    "kit-gateway@sha256:1234",  # short digest
    f"kit-gateway@{DIGEST.upper().replace('SHA256', 'sha256')}",  # upper-case hex
    f"Kit Gateway@{DIGEST}",
    f"kit-gateway@md5:{'0' * 32}",
])
def test_unpinned_or_malformed_images_are_refused_and_nothing_changes(tmp_path, capsys, image):
    assert run(capsys, "dstack", "compose", "-C", str(tmp_path), "--image", IMAGE)[0] == 0
    before = {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}
    code, _, err = run(capsys, "dstack", "compose", "-C", str(tmp_path), "--image", image)
    assert code == 2 and "--image" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()} == before


def test_compose_without_any_image_says_what_to_do(tmp_path, capsys):
    code, _, err = run(capsys, "dstack", "compose", "-C", str(tmp_path))
    assert code == 2 and "--image" in err
    assert not (tmp_path / "deployments").exists()


def test_images_with_registry_ports_and_no_tag_are_accepted():
    for ref in (f"localhost:5000/kit/gateway@{DIGEST}", f"python@{DIGEST}",
                f"docker.io/library/python:3.11-slim@{DIGEST}"):
        assert compose.check_image(ref) == ref


# -- deploy -----------------------------------------------------------------------------------

def test_deploy_prints_the_commands_without_the_phala_cli(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert run(capsys, "dstack", "compose", "-C", str(tmp_path), "--image", IMAGE)[0] == 0
    code, out, _ = run(capsys, "dstack", "deploy", "-C", str(tmp_path), "--json")
    result = json.loads(out)
    assert code == 0 and result["ran"] is False and result["phala_cli"] is False
    argv = shlex.split(result["commands"][-1])
    assert argv[:2] == ["phala", "deploy"]
    assert argv[argv.index("--compose") + 1] == "dstack/docker-compose.yaml"


def test_deploy_runs_the_phala_cli_when_installed(tmp_path, capsys, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "argv.txt"
    fake = bin_dir / "phala"  # records how it was called
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {shlex.quote(str(log))}\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    project = tmp_path / "project"
    assert run(capsys, "dstack", "compose", "-C", str(project), "--image", IMAGE,
               "--name", "demo")[0] == 0
    code, out, _ = run(capsys, "dstack", "deploy", "-C", str(project), "--json")
    assert code == 0 and json.loads(out)["ran"] is True
    assert log.read_text().split() == ["deploy", "--name", "demo", "--compose",
                                       "dstack/docker-compose.yaml"]


def test_deploy_without_compose_is_an_input_error(tmp_path, capsys):
    code, _, err = run(capsys, "dstack", "deploy", "-C", str(tmp_path))
    assert code == 2 and "kit dstack compose" in err


# -- Dockerfile -------------------------------------------------------------------------------

def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text()
    lines, current = [], ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, rest))
    return result


def build_args() -> dict[str, str]:
    values = {}
    for keyword, rest in instructions():
        if keyword == "ARG" and "=" in rest:
            name, value = rest.split("=", 1)
            values[name] = value
        if keyword == "FROM":
            break
    return values


def test_every_base_image_is_pinned_by_digest():
    args = build_args()
    assert PINNED.search(args["PYTHON_IMAGE"])
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim")  # requires-python >= 3.10
    for stage in stages():
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert PINNED.search(image), image


def test_digest_guard_refuses_an_unpinned_base():
    guard = next(rest for keyword, rest in stages()[0] if keyword == "RUN" and "case" in rest)
    pinned = build_args()["PYTHON_IMAGE"]
    ok = subprocess.run(["sh", "-c", guard], env={"PYTHON_IMAGE": pinned}, timeout=10)
    bad = subprocess.run(["sh", "-c", guard], env={"PYTHON_IMAGE": "python:3.11-slim"},
                         capture_output=True, timeout=10)
    assert ok.returncode == 0 and bad.returncode != 0


def test_final_stage_runs_as_non_root_without_build_tools():
    final = stages()[-1]
    users = [rest.split(":")[0] for keyword, rest in final if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    run_lines = " ".join(rest for keyword, rest in final if keyword == "RUN")
    for tool in ("gcc", "build-essential", "apt-get install", "make ", "cargo", "rustc"):
        assert tool not in run_lines
    assert "--no-index" in run_lines and "agent-contract-kit" in run_lines
    assert not [rest for keyword, rest in final if keyword == "COPY" and "--from" not in rest]
    cmd = next(rest for keyword, rest in final if keyword == "CMD")
    assert json.loads(cmd)[:3] == ["kit", "gateway", "serve"]
    build = " ".join(rest for keyword, rest in stages()[0] if keyword == "RUN")
    assert "pip wheel" in build


def test_build_context_leaves_out_the_venv_and_tests():
    rules = [line for line in (ROOT / ".dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "*"
    allowed = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "kit", "contract_template"}
    copied = {rest.split()[0] for keyword, rest in stages()[0] if keyword == "COPY"}
    assert copied <= allowed


def _docker_daemon() -> bool:
    """Whether a Docker daemon answers here (the client alone is not enough)."""
    import shutil

    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


@pytest.mark.skipif(not _docker_daemon(), reason="no Docker daemon: the image is built only "
                                                 "where Docker runs (CI with Docker)")
def test_image_builds_and_runs_as_non_root():
    """Where Docker runs, build the image for real (bounded) and check its configured user."""
    tag = "kit-gateway-test:ci"
    built = subprocess.run(["docker", "build", "-t", tag, str(ROOT)], capture_output=True,
                           text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-2000:]
    user = subprocess.run(["docker", "image", "inspect", "--format", "{{.Config.User}}", tag],
                          capture_output=True, text=True, timeout=60).stdout.strip()
    assert user and user.split(":")[0] not in ("root", "0")
    help_text = subprocess.run(["docker", "run", "--rm", tag, "kit", "gateway", "serve",
                                "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and "--ipfs-gateway" in help_text.stdout
