"""`kit init` and `kit build` end to end through the installed console script, the scaffold,
and the packaging of the templates in a wheel."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import aleph_cid
import pytest

from kit.contract.project import init_project

REPO = Path(__file__).resolve().parents[1]
KIT = Path(sys.executable).parent / "kit"
SCAFFOLD_FILES = {".gitignore", "README.md", "agent.toml", "tests/test_agent.py",
                  "src/agent.js"}  # src/agent.js: the user module (issue 13)


def kit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KIT), *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def tree(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*")) if path.is_file()
    }


def test_init_then_build_end_to_end(tmp_path: Path) -> None:
    project = tmp_path / "hello-agent"
    init = kit("init", str(project), "--provider", "anthropic", "--json")
    assert init.returncode == 0, init.stderr
    assert {str(Path(f).relative_to(project)) for f in json.loads(init.stdout)["files"]} \
        == SCAFFOLD_FILES

    built = kit("build", "-C", str(project), "--json")
    assert built.returncode == 0, built.stderr
    result = json.loads(built.stdout)
    artifact = project / "dist" / "agent.js"
    assert result["path"] == str(artifact)
    assert result["size"] == artifact.stat().st_size
    assert result["cid_version"] == 0
    assert result["cid"] == aleph_cid.compute_cid(artifact.read_bytes())

    human = kit("build", cwd=project)  # -C defaults to the current directory
    assert human.returncode == 0, human.stderr
    assert human.stdout == result["cid"] + "\n"  # the CID alone: `CID=$(kit build)` works
    assert "dist/agent.js" in human.stderr


def test_init_refuses_to_overwrite_a_config(tmp_path: Path) -> None:
    assert kit("init", str(tmp_path), "--name", "first-agent").returncode == 0
    before = tree(tmp_path)

    again = kit("init", str(tmp_path), "--name", "second-agent")

    assert again.returncode == 2
    assert "agent.toml already exists" in again.stderr
    assert tree(tmp_path) == before


def test_init_accepts_an_empty_config_file(tmp_path: Path) -> None:
    (tmp_path / "agent.toml").write_text("")
    assert kit("init", str(tmp_path), "--name", "empty-start").returncode == 0
    assert 'name = "empty-start"' in (tmp_path / "agent.toml").read_text()


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--base-url", "ftp://example.org"], "provider.base_url"),
        (["--gateway", "not-a-url"], "gateway.url"),
        (["--name", "Not_Valid"], "agent.name"),
    ],
)
def test_init_with_an_invalid_value_writes_nothing(
    tmp_path: Path, args: list[str], key: str
) -> None:
    project = tmp_path / "agent"
    done = kit("init", str(project), *args)
    print(done.stderr)
    assert done.returncode == 2
    assert f"agent.toml: {key}:" in done.stderr
    assert not project.exists()


def test_init_rejects_an_invalid_provider_before_writing(tmp_path: Path) -> None:
    done = kit("init", str(tmp_path / "x-agent"), "--provider", "azure")
    assert done.returncode == 2
    assert "openai-compatible" in done.stderr
    assert not (tmp_path / "x-agent").exists()


def test_overrides_round_trip_through_agent_toml(tmp_path: Path) -> None:
    from kit.contract.config import load_config

    tricky = 'multi\nline "quoted" \\ back\u2028slash \x7f del \U0001F600'
    init_project(
        tmp_path, name="round-trip", provider="openai-compatible", system_prompt=tricky,
        models=["m1", "m2"], default_model="m2", caller_token_secret="callerToken",
        accept_key_in_body=True, cid_version=1, tool_author="acme", timeout_seconds=5,
    )
    config = load_config(tmp_path)
    assert config.agent.system_prompt == tricky
    assert config.provider.models == ("m1", "m2") and config.provider.default_model == "m2"
    assert config.agent.caller_token_secret == "callerToken"
    assert config.provider.accept_key_in_body is True and config.ipfs.cid_version == 1
    assert config.tool.author == "acme" and config.provider.timeout_seconds == 5


def test_unknown_init_option_is_refused(tmp_path: Path) -> None:
    from kit.errors import InputError

    with pytest.raises(InputError, match="unknown init option 'colour'"):
        init_project(tmp_path, name="some-agent", colour="blue")
    assert list(tmp_path.iterdir()) == []


def test_generated_project_test_is_valid_python(tmp_path: Path) -> None:
    init_project(tmp_path, name="py-check")
    source = (tmp_path / "tests" / "test_agent.py").read_text()
    module = ast.parse(source)
    tests = [n.name for n in module.body if isinstance(n, ast.FunctionDef)]
    assert [name for name in tests if name.startswith("test_")]


def test_generated_project_tests_pass(tmp_path: Path) -> None:
    pytest.importorskip("kit.local.runtime", reason="the local runtime (kit.local.runtime) is not built yet")
    init_project(tmp_path, name="self-test")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_gitignore_keeps_secrets_out_and_the_artifact_in(tmp_path: Path) -> None:
    init_project(tmp_path, name="git-check")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True, timeout=30)
    ignored = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", "--no-index",
         ".kit/secrets.json", ".kit/gateway-vault.json", "dist/agent.js", "agent.toml"],
        capture_output=True, text=True, timeout=30, check=False,
    ).stdout.split()
    assert ignored == [".kit/secrets.json", ".kit/gateway-vault.json"]


def test_existing_gitignore_gets_only_the_missing_lines(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\n__pycache__/")
    (tmp_path / "README.md").write_text("# mine\n")
    written = init_project(tmp_path, name="merge-check")
    assert tmp_path / "README.md" not in written
    assert (tmp_path / "README.md").read_text() == "# mine\n"
    lines = (tmp_path / ".gitignore").read_text().splitlines()
    assert lines[:2] == ["node_modules/", "__pycache__/"]
    assert ".kit/" in lines and lines.count("__pycache__/") == 1


# --- packaging ----------------------------------------------------------------------------------

RENDER_FROM_WHEEL = """
import hashlib, json, sys
from pathlib import Path
import kit, kit.contract.render
from kit.contract.config import parse_config
config = parse_config({"agent": {"name": "wheel-agent"}}, Path("."))
data = kit.contract.render.render_contract(config)
print(json.dumps({"kit": kit.__file__, "sha256": hashlib.sha256(data).hexdigest(),
                  "schema": len(kit.contract.render.load_schema()["parameters"])}))
"""


def test_wheel_ships_the_templates_and_renders_from_them(tmp_path: Path) -> None:
    from kit.contract.config import parse_config
    from kit.contract.render import render_contract

    # A clean copy: building in place would leave build/ in the checkout, and a stale build/
    # could slip removed files into the wheel.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "__pycache__",
    ))
    wheel_dir = tmp_path / "wheel"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w",
         str(wheel_dir)],
        check=True, timeout=180, capture_output=True,
    )
    [wheel] = wheel_dir.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"kit/contract_template/agent.js.j2", "kit/contract_template/schema.json"} <= names
    for template in ("agent.toml.j2", "gitignore.j2", "README.md.j2", "test_agent.py.j2"):
        assert f"kit/templates/project/{template}" in names

    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(wheel).extractall(unpacked)
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    done = subprocess.run(
        [sys.executable, "-c", RENDER_FROM_WHEEL], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60, check=True,
    )
    report = json.loads(done.stdout)
    assert Path(report["kit"]).is_relative_to(unpacked)
    expected = render_contract(parse_config({"agent": {"name": "wheel-agent"}}, tmp_path))
    assert report["sha256"] == hashlib.sha256(expected).hexdigest()
    assert report["schema"] > 0
