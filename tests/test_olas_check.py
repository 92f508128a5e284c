"""The Olas tools' own checks on what `kit tool` writes (issue 9; issue 10's introduction).

Oracles, all run offline from the separate Olas venv (tests/fixtures/olas.py):
- `autonomy packages lock --check` (open-autonomy 0.21.30): every component's fingerprints
  against its files, and each package hash in packages/packages.json against the directory;
- `autonomy check-packages`: author = directory, public id, description, and the PyPI
  dependencies declared in component.yaml against the package's third-party imports;
- `aea fingerprint by-path` (open-aea): rewrites component.yaml's fingerprints from the files.
Each check is also shown to fail on a tampered copy, so a pass means something.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from fixtures.olas import OlasTools
from kit.mech.package import generate_tool

# The published tee_openai_request 0.1.0 package and its hash (shared/REFERENCE.md section 2).
PUBLISHED = Path(__file__).parent / "data" / "tee_openai_request"
PUBLISHED_HASH = "bafybeictmezaorzxelsy4dztbxh5n2343zio3rk6vo7wc5lptxlobhdnku"


def output(done: object) -> str:
    return f"{getattr(done, 'stdout', '')}\n{getattr(done, 'stderr', '')}"


def component(package_dir: Path) -> dict:
    return yaml.safe_load((package_dir / "component.yaml").read_text(encoding="utf-8"))


def make_generated(deployed_factory: Callable[..., Path], **tool: str) -> tuple[Path, Path]:
    """(the project holding packages/, the generated package directory), as `kit tool` left
    them for a freshly deployed project."""
    project = deployed_factory(description="Answers questions through a TEE.")
    result = generate_tool(project, **tool)
    assert result.package_dir.is_relative_to(project / "packages")
    return project, result.package_dir


@pytest.fixture
def generated(deployed_factory: Callable[..., Path]) -> tuple[Path, Path]:
    return make_generated(deployed_factory)


@pytest.fixture
def generated_checkable(deployed_factory: Callable[..., Path]) -> tuple[Path, Path]:
    """As `generated`, under a tool name that `check-packages` really inspects: open-aea 2.2.10
    skips every file whose name shares a first character with "tests" (it tests
    `os.path.commonprefix([file, "tests"]) != ""`), so the default `tee_<name>.py` entry point
    is never read by its import check."""
    return make_generated(deployed_factory, name="answer_agent")


def test_lock_check_accepts_the_published_package(olas: OlasTools, tmp_path: Path) -> None:
    """The oracle itself, on the package the ecosystem published."""
    customs = tmp_path / "packages" / "valory" / "customs"
    shutil.copytree(PUBLISHED, customs / "tee_openai_request")
    (tmp_path / "packages" / "packages.json").write_text(json.dumps(
        {"dev": {"custom/valory/tee_openai_request/0.1.0": PUBLISHED_HASH}, "third_party": {}}))
    done = olas.run("autonomy", "packages", "lock", "--check", cwd=tmp_path)
    assert done.returncode == 0, output(done)


def test_lock_check_passes_on_what_kit_tool_writes(olas: OlasTools,
                                                   generated: tuple[Path, Path]) -> None:
    project, _ = generated
    done = olas.run("autonomy", "packages", "lock", "--check", cwd=project)
    assert done.returncode == 0, output(done)
    assert "Verification successful" in done.stdout


def test_lock_check_fails_when_a_file_changes_after_kit_tool(
        olas: OlasTools, generated: tuple[Path, Path]) -> None:
    project, package_dir = generated
    entry = package_dir / component(package_dir)["entry_point"]
    entry.write_text(entry.read_text(encoding="utf-8") + "\n# edited by hand\n", encoding="utf-8")
    done = olas.run("autonomy", "packages", "lock", "--check", cwd=project)
    assert done.returncode != 0
    assert "Fingerprints does not match" in output(done)


def test_lock_check_fails_on_a_wrong_package_hash(olas: OlasTools,
                                                  generated: tuple[Path, Path]) -> None:
    project, _ = generated
    packages_json = project / "packages" / "packages.json"
    packages = json.loads(packages_json.read_text())
    (key,) = packages["dev"]
    packages["dev"][key] = PUBLISHED_HASH  # a valid hash, of another package
    packages_json.write_text(json.dumps(packages, indent=4))
    done = olas.run("autonomy", "packages", "lock", "--check", cwd=project)
    assert done.returncode != 0
    assert "Hash does not match" in output(done)


def test_check_packages_passes_on_what_kit_tool_writes(
        olas: OlasTools, generated: tuple[Path, Path],
        generated_checkable: tuple[Path, Path]) -> None:
    for project, _ in (generated, generated_checkable):
        done = olas.run("autonomy", "check-packages", cwd=project)
        assert done.returncode == 0, output(done)
        assert "OK!" in done.stdout


def test_check_packages_fails_on_an_undeclared_import(
        olas: OlasTools, generated_checkable: tuple[Path, Path]) -> None:
    project, package_dir = generated_checkable
    entry = package_dir / component(package_dir)["entry_point"]
    entry.write_text("import yaml  # noqa\n" + entry.read_text(encoding="utf-8"), encoding="utf-8")
    done = olas.run("autonomy", "check-packages", cwd=project)
    assert done.returncode != 0
    assert "unresolved imports: yaml" in output(done)


def test_aea_fingerprint_rewrites_nothing(olas: OlasTools, generated: tuple[Path, Path],
                                          tmp_path: Path) -> None:
    """`aea fingerprint by-path` on a copy leaves component.yaml as `kit tool` wrote it."""
    _, package_dir = generated
    copy = tmp_path / "copy" / package_dir.name
    shutil.copytree(package_dir, copy)
    done = olas.run("aea", "fingerprint", "by-path", str(copy), cwd=tmp_path)
    assert done.returncode == 0, output(done)
    assert component(copy)["fingerprint"] == component(package_dir)["fingerprint"]
    assert (copy / "component.yaml").read_bytes() == (package_dir / "component.yaml").read_bytes()


def test_aea_fingerprint_sees_a_changed_file(olas: OlasTools, generated: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    _, package_dir = generated
    copy = tmp_path / "copy" / package_dir.name
    shutil.copytree(package_dir, copy)
    (copy / "__init__.py").write_text("# changed\n", encoding="utf-8")
    done = olas.run("aea", "fingerprint", "by-path", str(copy), cwd=tmp_path)
    assert done.returncode == 0, output(done)
    before, after = component(package_dir)["fingerprint"], component(copy)["fingerprint"]
    assert before["__init__.py"] != after["__init__.py"]
    assert {k: v for k, v in before.items() if k != "__init__.py"} == \
        {k: v for k, v in after.items() if k != "__init__.py"}
