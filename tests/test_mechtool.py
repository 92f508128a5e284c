"""`kit tool`: the mech tool package, its fingerprints, package hash and packages.json.

Oracles, never the kit's own output:
- tests/data/tee_openai_request/: the published `valory/tee_openai_request` 0.1.0 package of
  valory-xyz/mech (the files of the commit whose lock gives the worked example of REFERENCE
  section 2; its fingerprints and package hash are the values the ecosystem published);
- open-aea's own hashing (`aea_oracle`), installed apart from the kit;
- aleph-cid (an independent Rust implementation of Kubo's recipe) for single files.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import requests
import yaml

from fixtures.ipfs_node import RunningNode, change_prompt, oracle_cid, run_cli
from fixtures.mech import MECH_TOKEN_PRICES
from kit.ipfs.deploy import deploy
from kit.errors import CidMismatch, InputError
from kit.mech.package import file_fingerprint, generate_tool, package_hash, push_package
from kit.contract.project import build_project

PUBLISHED = Path(__file__).parent / "data" / "tee_openai_request"
WORKED_EXAMPLE = {
    "__init__.py": "bafybeibaxl4f33swhl5vk63v75ssw5mk3mhlgcwarok242ivgk5hphwpey",
    "tee_openai_request.py": "bafybeibhmihak7bexecww7mxxrtbsl54q77zl2t2r722u44yfmxv25j6bq",
}
WORKED_PACKAGE_HASH = "bafybeictmezaorzxelsy4dztbxh5n2343zio3rk6vo7wc5lptxlobhdnku"
COMPONENT_KEYS = [
    "name", "author", "version", "type", "description", "license", "aea_version", "fingerprint",
    "fingerprint_ignore_patterns", "entry_point", "callable", "params", "dependencies",
]
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def v0_to_v1_base32(cid_v0: str) -> str:
    """Independent conversion: base58btc multihash -> CIDv1 dag-pb, multibase base32."""
    number = 0
    for char in cid_v0:
        number = number * 58 + B58.index(char)
    multihash = number.to_bytes(34, "big")
    raw = bytes([0x01, 0x70]) + multihash
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


def package_files(package_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(package_dir.iterdir()) if p.is_file()}


def component(package_dir: Path) -> dict[str, Any]:
    return yaml.safe_load((package_dir / "component.yaml").read_text())


@pytest.fixture
def deployed_project(deployed_factory: Callable[..., Path]) -> Path:
    return deployed_factory(description="Answers questions through a TEE.")


def latest_cid(project: Path) -> str:
    return json.loads((project / "deployments" / "latest.json").read_text())["cid"]


# --- the published package: the worked example --------------------------------------------


def test_published_package_hashes_to_the_worked_example() -> None:
    for name, expected in WORKED_EXAMPLE.items():
        assert file_fingerprint(PUBLISHED / name) == expected
    assert component(PUBLISHED)["fingerprint"] == WORKED_EXAMPLE
    assert package_hash(PUBLISHED) == WORKED_PACKAGE_HASH


def test_open_aea_agrees_on_the_published_package(aea_oracle: Any) -> None:
    hashes = aea_oracle.hashes(PUBLISHED)
    assert hashes == {"package_hash": WORKED_PACKAGE_HASH, "fingerprints": WORKED_EXAMPLE}


# --- generation from a deployment -----------------------------------------------------------


def test_generates_the_package_for_the_deployed_cid(deployed_project: Path,
                                                    aea_oracle: Any) -> None:
    result = generate_tool(deployed_project)
    cid = latest_cid(deployed_project)
    name = "tee_test_agent"
    package_dir = deployed_project / "packages" / "dev" / "customs" / name
    assert result.package_dir == package_dir
    assert sorted(package_files(package_dir)) == ["__init__.py", "component.yaml", f"{name}.py"]

    data = component(package_dir)
    assert list(data) == COMPONENT_KEYS
    assert data["name"] == name and data["author"] == "dev" and data["version"] == "0.1.0"
    assert data["type"] == "custom" and data["license"] == "Apache-2.0"
    assert data["aea_version"] == ">=1.0.0, <2.0.0"
    assert data["description"] == "Answers questions through a TEE."
    assert data["fingerprint_ignore_patterns"] == []
    assert data["entry_point"] == f"{name}.py" and data["callable"] == "run"
    assert data["params"] == {"default_model": "gpt-4o-mini"}
    # pinned as valory-xyz/mech-predict's tools pin it (their component.yaml `version: ==...`)
    assert data["dependencies"] == {"requests": {"version": "==2.32.5"},
                                    # answer verification (kit/trust, [verify] answers)
                                    "eth-account": {"version": "==0.14.0"}}

    oracle = aea_oracle.hashes(package_dir)
    assert data["fingerprint"] == oracle["fingerprints"] == result.fingerprints
    for file_name, fingerprint in data["fingerprint"].items():
        assert fingerprint == v0_to_v1_base32(oracle_cid((package_dir / file_name).read_bytes(), 0))
    assert result.package_hash == oracle["package_hash"]

    tool_source = (package_dir / f"{name}.py").read_text()
    assert f'CID = "{cid}"' in tool_source
    assert 'GATEWAY_URLS = [\n    "http://127.0.0.1:8000",\n]' in tool_source
    packages = json.loads((deployed_project / "packages" / "packages.json").read_text())
    assert packages == {"dev": {f"custom/dev/{name}/0.1.0": oracle["package_hash"]},
                        "third_party": {}}
    tools = ["tee-test-agent-gpt-4o-mini", "tee-test-agent-gpt-4o"]
    assert result.tools_to_package_hash == {tool: oracle["package_hash"] for tool in tools}
    assert result.customs_line == f"- dev/{name}:0.1.0:{oracle['package_hash']}"
    assert result.cid == cid and result.version == "0.1.0"
    # neither default model has a price in the mech's token counter (fixtures.mech)
    assert [model for model in ("gpt-4o-mini", "gpt-4o") if model in MECH_TOKEN_PRICES] == []
    # the other warning: no answer signer recorded (no gateway ran at deploy; kit/trust)
    assert len(result.warnings) == 2 and "no answer signer" in result.warnings[1]
    assert "no price for gpt-4o-mini, gpt-4o" in result.warnings[0]
    assert "billed 0" in result.warnings[0]


def test_regenerating_unchanged_is_byte_identical(deployed_project: Path) -> None:
    first = generate_tool(deployed_project)
    before = package_files(first.package_dir)
    packages_before = (deployed_project / "packages" / "packages.json").read_bytes()
    second = generate_tool(deployed_project)
    assert package_files(second.package_dir) == before
    assert (deployed_project / "packages" / "packages.json").read_bytes() == packages_before
    assert (second.version, second.package_hash, second.changed) == (
        first.version, first.package_hash, False)


def test_redeploy_bumps_patch_and_updates_packages_json(
        deployed_project: Path, ipfs_node: RunningNode) -> None:
    packages_path = deployed_project / "packages" / "packages.json"
    others = {
        "dev": {"custom/alice/other_tool/0.2.0": "bafybeiaaaa", "skill/dev/x/0.1.0": "bafybeibbb"},
        "third_party": {"protocol/valory/acn/1.1.0": "bafybeiccc"},
    }
    packages_path.parent.mkdir(parents=True)
    packages_path.write_text(json.dumps(others))
    first = generate_tool(deployed_project)
    old_cid = latest_cid(deployed_project)

    change_prompt(deployed_project)
    deploy(deployed_project, ipfs_api=ipfs_node.api)
    new_cid = latest_cid(deployed_project)
    assert new_cid != old_cid
    second = generate_tool(deployed_project)

    assert second.version == "0.1.1" and second.cid == new_cid
    tool_file = f"{second.name}.py"
    assert second.fingerprints[tool_file] != first.fingerprints[tool_file]
    source = (second.package_dir / tool_file).read_text()
    assert new_cid in source and old_cid not in source
    assert component(second.package_dir)["version"] == "0.1.1"
    assert second.package_hash == package_hash(second.package_dir) != first.package_hash
    packages = json.loads(packages_path.read_text())
    assert packages == {
        "dev": {**others["dev"], f"custom/dev/{second.name}/0.1.1": second.package_hash},
        "third_party": others["third_party"],
    }
    explicit = generate_tool(deployed_project, version="1.0.0")
    assert explicit.version == "1.0.0"
    assert list(json.loads(packages_path.read_text())["dev"])[-1] == (
        f"custom/dev/{second.name}/1.0.0")


# --- refusals: a message, and nothing written -----------------------------------------------


def test_refuses_without_a_deployment(project_factory: Callable[..., Path]) -> None:
    project = project_factory()
    with pytest.raises(InputError, match="no deployment recorded .*run `kit deploy` first"):
        generate_tool(project)
    assert not (project / "packages").exists()


def test_refuses_a_build_that_no_longer_matches(deployed_project: Path) -> None:
    first = generate_tool(deployed_project)
    before = package_files(first.package_dir)
    change_prompt(deployed_project)
    build_project(deployed_project)
    with pytest.raises(InputError, match="not to the deployed CID .*run `kit deploy`"):
        generate_tool(deployed_project)
    assert package_files(first.package_dir) == before


def test_refuses_foreign_files_in_the_package(deployed_project: Path) -> None:
    first = generate_tool(deployed_project)
    before = package_files(first.package_dir)
    (first.package_dir / "notes.txt").write_text("draft")
    with pytest.raises(InputError, match="notes.txt.*move them out"):
        generate_tool(deployed_project, version="9.9.9")
    assert {k: v for k, v in package_files(first.package_dir).items() if k != "notes.txt"} == before


def test_refuses_invalid_names(deployed_project: Path) -> None:
    with pytest.raises(InputError, match="--name 'bad-name'"):
        generate_tool(deployed_project, name="bad-name")
    with pytest.raises(InputError, match="--version '1.0'"):
        generate_tool(deployed_project, version="1.0")
    # `$` also matches before a trailing newline: the checks are full matches
    with pytest.raises(InputError, match="--name"):
        generate_tool(deployed_project, name="good_name\n")
    with pytest.raises(InputError, match="--version"):
        generate_tool(deployed_project, version="1.0.0\n")
    assert not (deployed_project / "packages").exists()


# --- content safety -------------------------------------------------------------------------


def test_hostile_description_keeps_yaml_and_python_intact(
        deployed_factory: Callable[..., Path]) -> None:
    hostile = 'He said "hi" & \'bye\'\n---\nname: evil\n"""\n# not a comment: {x}'
    project = deployed_factory(description=hostile)
    result = generate_tool(project)
    documents = list(yaml.safe_load_all((result.package_dir / "component.yaml").read_text()))
    assert len(documents) == 1
    assert documents[0]["description"] == hostile and documents[0]["name"] == result.name
    for file_name in ("__init__.py", f"{result.name}.py"):
        compile((result.package_dir / file_name).read_text(), file_name, "exec")


def test_package_holds_no_secret(deployed_project: Path, local_gateway_factory: Any,
                                 ipfs_node: RunningNode) -> None:
    gateway = local_gateway_factory(ipfs_api=ipfs_node.api)
    secrets = {"openaiApiKey": "test-provider-secret-123456", "callerToken": "caller-token-98765"}
    answer = requests.post(f"{gateway.url}/vaults",
                           json={"cid": latest_cid(deployed_project), "data": secrets},
                           timeout=10).json()
    result = generate_tool(deployed_project)
    published = b"".join(package_files(result.package_dir).values())
    published += (deployed_project / "packages" / "packages.json").read_bytes()
    for value in [*secrets.values(), answer["key"], answer["token"]]:
        assert value.encode() not in published


# --- the command ----------------------------------------------------------------------------


def test_cli_prints_hash_entries_and_customs_line(deployed_project: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "tool", "-C", str(deployed_project), "--json")
    assert code == 0
    assert "warning: the mech's token counter has no price for gpt-4o-mini, gpt-4o" in err
    view = json.loads(out)
    package_dir = Path(view["package_dir"])
    assert view["package_hash"] == package_hash(package_dir)
    assert view["customs_line"] == f"- dev/tee_test_agent:0.1.0:{view['package_hash']}"
    code, out, _ = run_cli(capsys, "tool", "-C", str(deployed_project))
    assert code == 0
    assert "TOOLS_TO_PACKAGE_HASH" in out and view["customs_line"] in out
    assert f'"tee-test-agent-gpt-4o": "{view["package_hash"]}"' in out


def test_cli_without_deployment_exits_2(project_factory: Callable[..., Path],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    project = project_factory()
    code, out, err = run_cli(capsys, "tool", "-C", str(project))
    assert code == 2 and out == ""
    assert "run `kit deploy` first" in err


def test_push_pins_the_wrapped_package_under_the_computed_hash(
        deployed_project: Path, ipfs_node: RunningNode,
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "tool", "-C", str(deployed_project), "--push",
                             "--ipfs-api", ipfs_node.api, "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["pushed_to"] == ipfs_node.api
    assert ipfs_node.client.is_pinned(view["package_hash"])


def test_a_priced_configuration_gets_no_warning(deployed_factory: Callable[..., Path]) -> None:
    project = deployed_factory(models=("gpt-4", "claude-3-haiku-20240307"))
    assert all(model in MECH_TOKEN_PRICES for model in ("gpt-4", "claude-3-haiku-20240307"))
    warnings = generate_tool(project).warnings
    assert [w for w in warnings if "no answer signer" not in w] == []  # no gateway: kit/trust


# --- a tests/ folder inside the package (as mech-predict's tools ship) ----------------------


def add_tests(package_dir: Path) -> None:
    tests = package_dir / "tests"
    tests.mkdir()
    (tests / "__init__.py").write_text('"""Tests of the tool."""\n')
    (tests / "test_tool.py").write_text("def test_nothing() -> None:\n    assert True\n")
    (tests / "__pycache__").mkdir()
    (tests / "__pycache__" / "test_tool.cpython-311.pyc").write_bytes(b"not hashed")


def test_tests_folder_is_fingerprinted_as_olas_does(deployed_project: Path,
                                                    aea_oracle: Any) -> None:
    first = generate_tool(deployed_project)
    add_tests(first.package_dir)
    second = generate_tool(deployed_project)
    assert second.version == "0.1.1"  # the package changed: its fingerprints did
    data = component(second.package_dir)
    assert sorted(data["fingerprint"]) == [
        "__init__.py", "tee_test_agent.py", "tests/__init__.py", "tests/test_tool.py"]
    oracle = aea_oracle.hashes(second.package_dir)
    assert data["fingerprint"] == oracle["fingerprints"]
    assert second.package_hash == oracle["package_hash"]
    assert (second.package_dir / "tests" / "test_tool.py").read_text().startswith("def test_")


def test_empty_file_in_tests_is_refused(deployed_project: Path) -> None:
    first = generate_tool(deployed_project)
    before = package_files(first.package_dir)
    (first.package_dir / "tests").mkdir()
    (first.package_dir / "tests" / "__init__.py").write_text("")
    with pytest.raises(InputError, match="tests/__init__.py is empty"):
        generate_tool(deployed_project)
    assert package_files(first.package_dir) == before


# --- --push: exactly the hashed files, unpinned on mismatch ---------------------------------


def node_listing(node: RunningNode, cid: str) -> list[str]:
    answer = requests.post(f"{node.api_url}/api/v0/ls", params={"arg": cid}, timeout=20)
    answer.raise_for_status()
    return sorted(link["Name"] for link in answer.json()["Objects"][0]["Links"])


def test_push_after_import_leaves_pycache_out(deployed_project: Path, ipfs_node: RunningNode,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    result = generate_tool(deployed_project)
    add_tests(result.package_dir)
    result = generate_tool(deployed_project)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    imported = subprocess.run(  # what mech-predict's metadata script does to a tool
        [sys.executable, "-c", f"import {result.name}.{result.name}"],
        cwd=result.package_dir.parent, env=environment, capture_output=True, text=True,
        timeout=60, check=False)
    assert imported.returncode == 0, imported.stderr
    assert (result.package_dir / "__pycache__").is_dir()
    code, out, err = run_cli(capsys, "tool", "-C", str(deployed_project), "--push",
                             "--ipfs-api", ipfs_node.api, "--json")
    assert code == 0, err
    view = json.loads(out)
    assert view["package_hash"] == result.package_hash and not view["changed"]
    assert ipfs_node.client.is_pinned(result.package_hash)
    assert node_listing(ipfs_node, result.package_hash) == [result.name]
    inner = f"{result.package_hash}/{result.name}"
    assert node_listing(ipfs_node, inner) == [
        "__init__.py", "component.yaml", f"{result.name}.py", "tests"]
    assert node_listing(ipfs_node, inner + "/tests") == ["__init__.py", "test_tool.py"]


def test_push_mismatch_unpins_what_it_added(deployed_project: Path, ipfs_node: RunningNode,
                                            aea_oracle: Any) -> None:
    result = generate_tool(deployed_project)
    tool_file = result.package_dir / f"{result.name}.py"
    tool_file.write_text(tool_file.read_text() + "# edited after kit tool\n")
    edited_hash = aea_oracle.hashes(result.package_dir)["package_hash"]  # what the node adds
    assert edited_hash != result.package_hash
    with pytest.raises(CidMismatch, match="the pin was removed"):
        push_package(result.package_dir, result.package_hash, ipfs_api=ipfs_node.api)
    assert not ipfs_node.client.is_pinned(edited_hash)


def test_cli_refuses_a_multiline_copyright_holder(deployed_project: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "tool", "-C", str(deployed_project),
                             "--copyright-holder", "Evil\n# injected")
    assert code == 2 and out == "" and "--copyright-holder" in err
    assert not (deployed_project / "packages").exists()
