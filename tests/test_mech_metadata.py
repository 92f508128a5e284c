"""The mech's tool metadata (kit.mech.metadata), checked against the mech's own rules.

Oracles (independent of the kit's code):
- tests/data/mech/tool_schemas.yaml: the real schema text of the registry (valory-xyz/
  mech-predict scripts/tool_schemas.yaml, commit 55acb69cee0c6065e8c1b5e2a2c6005241ac4b71).
- `mech_server_verdict` below restates, rule by rule and in its order, `_validate_metadata_file`
  of valory-xyz/mech-server mtd/services/metadata/publish.py (commit 5338c19994f7df5adbe5783709
  131a1609a55670): the check the mech runs before it publishes metadata. The kit checks with a
  JSON Schema restatement (jsonschema); the two must agree.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from kit.mech.metadata import metadata_problems, tool_entries, write_metadata

REGISTRY = yaml.safe_load(
    (Path(__file__).parent / "data" / "mech" / "tool_schemas.yaml").read_text())["defaults"]

_TOP = {"name": str, "description": str, "inputFormat": str, "outputFormat": str, "image": str,
        "tools": list, "toolMetadata": dict}
_TOOL = {"name": str, "description": str, "input": dict, "output": dict}
_INPUT = {"type": str, "description": str}
_OUTPUT = {"type": str, "description": str, "schema": dict}
_SCHEMA = {"properties": dict, "required": list, "type": str}
_PROPERTIES = {"requestId": dict, "result": dict, "prompt": dict}
_PROPERTY = {"type": str, "description": str}


def _keys(data: dict[str, Any], rules: dict[str, type], where: str) -> str | None:
    for key, kind in rules.items():
        if key not in data:
            return f"missing {where}{key}"
        if not isinstance(data[key], kind):
            return f"bad type of {where}{key}"
    return None


def mech_server_verdict(metadata: dict[str, Any]) -> str | None:
    """None when mech-server would publish `metadata`, else the first rule it breaks."""
    problem = _keys(metadata, _TOP, "")
    if problem:
        return problem
    tools, entries = metadata["tools"], metadata["toolMetadata"]
    if len(tools) != len(entries):
        return "tools and toolMetadata differ in number"
    for tool in tools:
        if tool not in entries:
            return f"no toolMetadata for {tool}"
        data = entries[tool]
        problem = _keys(data, _TOOL, f"{tool}.")
        if problem:
            return problem
        problem = _keys(data["input"], _INPUT, f"{tool}.input.") or _keys(
            data["output"], _OUTPUT, f"{tool}.output.")
        if problem:
            return problem
        schema = data["output"]["schema"]
        problem = _keys(schema, _SCHEMA, f"{tool}.output.schema.")
        if problem:
            return problem
        properties = schema["properties"]
        if len(properties) != len(schema["required"]):
            return "properties and required differ in number"
        problem = _keys(properties, _PROPERTIES, f"{tool}.properties.")
        if problem:
            return problem
        for name in _PROPERTIES:
            problem = _keys(properties[name], _PROPERTY, f"{tool}.properties.{name}.")
            if problem:
                return problem
    return None


@pytest.mark.parametrize("preset", ["chat", "prediction"])
def test_entries_carry_the_registry_schemas_of_their_kind(preset: str) -> None:
    entries = tool_entries(["tee-a-m1", "tee-a-m2"], "tee_a", "An agent.", preset)
    assert list(entries) == ["tee-a-m1", "tee-a-m2"]
    for entry in entries.values():
        assert entry == {"name": "tee_a", "description": "An agent.",
                         "input": REGISTRY[preset]["input"],
                         "output": REGISTRY[preset]["output"]}


def test_written_metadata_passes_both_checks_and_keeps_other_tools(tmp_path: Path) -> None:
    path = tmp_path / "metadata.json"
    write_metadata(path, ["tee-p-gpt"], "tee_p", "Predicts.", "prediction")
    write_metadata(path, ["tee-j-gpt"], "tee_j", "Answers JSON.", "json")
    document = write_metadata(path, ["tee-c-a", "tee-c-b"], "tee_c", "Chats.", "chat")
    document = write_metadata(path, ["tee-c-b"], "tee_c", "Chats.", "chat")  # model a dropped
    assert json.loads(path.read_text()) == document
    assert document["tools"] == ["tee-p-gpt", "tee-j-gpt", "tee-c-b"]
    assert document["inputFormat"] == document["outputFormat"] == "ipfs-v0.1"
    assert mech_server_verdict(document) is None
    assert metadata_problems(document) == []


def _mutations() -> list[tuple[str, Callable[[dict[str, Any]], None]]]:
    def entry(doc: dict[str, Any]) -> dict[str, Any]:
        return doc["toolMetadata"]["tee-p-gpt"]

    def props(doc: dict[str, Any]) -> dict[str, Any]:
        return entry(doc)["output"]["schema"]["properties"]

    return [
        ("no image", lambda d: d.pop("image")),
        ("tools not a list", lambda d: d.update(tools="tee-p-gpt")),
        ("an extra tool name", lambda d: d["tools"].append("tee-x")),
        ("a tool without metadata", lambda d: d["tools"].__setitem__(0, "tee-other")),
        ("no description", lambda d: entry(d).pop("description")),
        ("input without type", lambda d: entry(d)["input"].pop("type")),
        ("output schema not an object", lambda d: entry(d)["output"].update(schema="x")),
        ("required not a list", lambda d: entry(d)["output"]["schema"].update(required="x")),
        ("no prompt property", lambda d: props(d).pop("prompt")),
        ("an extra property", lambda d: props(d).update(extra={"type": "string",
                                                              "description": "x"})),
        ("result description not text", lambda d: props(d)["result"].update(description=1)),
    ]


@pytest.mark.parametrize("name,mutate", _mutations(), ids=[m[0] for m in _mutations()])
def test_each_broken_rule_is_refused_by_both(tmp_path: Path, name: str,
                                             mutate: Callable[[dict[str, Any]], None]) -> None:
    good = write_metadata(tmp_path / "metadata.json", ["tee-p-gpt"], "tee_p", "P.", "prediction")
    broken = copy.deepcopy(good)
    mutate(broken)
    assert mech_server_verdict(broken) is not None, name
    assert metadata_problems(broken), name


def test_an_unreadable_existing_file_is_refused_and_kept(tmp_path: Path) -> None:
    from kit.errors import InputError

    path = tmp_path / "metadata.json"
    path.write_text('{"name": "not metadata"}')
    with pytest.raises(InputError, match="not mech tool metadata"):
        write_metadata(path, ["tee-p-gpt"], "tee_p", "P.", "prediction")
    assert path.read_text() == '{"name": "not metadata"}'


def test_kit_tool_writes_the_metadata_beside_packages(deployed_factory: Any) -> None:
    from kit.mech.package import generate_tool

    project = deployed_factory(preset="prediction")
    result = generate_tool(project)
    assert result.metadata_path == project / "metadata.json"
    document = json.loads(result.metadata_path.read_text())
    assert document["tools"] == list(result.tools_to_package_hash)
    for tool in document["tools"]:
        assert document["toolMetadata"][tool]["name"] == result.name
        assert document["toolMetadata"][tool]["output"] == REGISTRY["prediction"]["output"]
    assert mech_server_verdict(document) is None
