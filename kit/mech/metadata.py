"""The metadata a mech publishes for its tools (`metadata.json`), written by `kit tool`.

The format, from Valory's sources (facts restated, no code copied):
- valory-xyz/mech-predict `scripts/generate_metadata.py` (commit 153f651577d66957554cfd2f06a5
  ebd619b35a47) builds `{"name", "description", "inputFormat": "ipfs-v0.1", "outputFormat":
  "ipfs-v0.1", "image", "tools": [<tool name>...], "toolMetadata": {<tool name>: {"name":
  <component name>, "description": <component description>, "input", "output"}}}`, one entry
  per name in the tool file's ALLOWED_TOOLS, and writes it to `metadata.json` beside
  `packages/`; the input/output schemas come per tool kind from `scripts/tool_schemas.yaml`
  (commit 55acb69cee0c6065e8c1b5e2a2c6005241ac4b71): `prediction`, `chat`, ... (KIND_SCHEMAS
  below restates the two the kit's presets map to).
- valory-xyz/mech-server `mtd/services/metadata/publish.py` (commit 5338c19994f7df5adbe578370
  9131a1609a55670; the same rules in valory-xyz/mech-tools-dev at 163f939f1438632c13d9fb1f6da7
  11695c6de2d0) refuses to publish a file that fails `_validate_metadata_file`: the top-level
  keys with their types, as many toolMetadata entries as tools, each tool's name/description
  (str), input {type, description} (str), output {type, description (str), schema (dict)},
  schema {properties (dict), required (list), type (str)}, as many properties as required names,
  and properties requestId, result and prompt, each a dict with str type and description.
  METADATA_SCHEMA restates those rules as a JSON Schema (draft 7), checked with the reference
  validator (`jsonschema`); the two count rules JSON Schema cannot state are checked beside it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from kit import jsonsafe
from kit.errors import InputError, KitError
from kit.fsutil import atomic_write

METADATA_FILE = "metadata.json"
IO_FORMAT = "ipfs-v0.1"
DEFAULT_MECH_NAME = "Agent-contract mech"
DEFAULT_MECH_DESCRIPTION = ("A mech whose tools run agent contracts in a TEE and sign "
                            "every answer.")


def _result_output(description: str, result: str, prompt: str,
                   example: str | None = None) -> dict[str, Any]:
    result_schema: dict[str, Any] = {"type": "string", "description": result}
    if example is not None:
        result_schema["example"] = example
    return {
        "type": "object",
        "description": description,
        "schema": {
            "type": "object",
            "properties": {
                "requestId": {"type": "integer",
                              "description": "Unique identifier for the request"},
                "result": result_schema,
                "prompt": {"type": "string", "description": prompt},
            },
            "required": ["requestId", "result", "prompt"],
        },
    }


# tool_schemas.yaml `defaults` (mech-predict, commit above): the kinds the presets map to.
KIND_SCHEMAS: dict[str, dict[str, Any]] = {
    "prediction": {
        "input": {"type": "text", "description": "The text to make a prediction on"},
        "output": _result_output(
            "A JSON object containing the prediction and confidence",
            "Result information in JSON format as a string",
            "The prompt used to make the prediction.",
            '{\n  "p_yes": 0.6,\n  "p_no": 0.4,\n  "confidence": 0.8,\n  "info_utility": 0.6\n}'),
    },
    "chat": {
        "input": {"type": "text", "description": "The prompt to send to the chat model"},
        "output": _result_output(
            "A JSON object containing the chat model response",
            "The chat model's text response",
            "The prompt sent to the chat model."),
    },
}
# the json preset: not a kind of the registry; same shape, its own words
KIND_SCHEMAS["json"] = {
    "input": {"type": "text", "description": "The prompt to answer with a JSON document"},
    "output": _result_output(
        "A JSON object containing the structured answer",
        "The answer as JSON text meeting the agent's output schema",
        "The prompt used to produce the answer."),
}
PRESET_KINDS = {"chat": "chat", "prediction": "prediction", "json": "json"}

_TEXT = {"type": "string"}
_PROPERTY = {"type": "object", "required": ["type", "description"],
             "properties": {"type": _TEXT, "description": _TEXT}}
METADATA_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "required": ["name", "description", "inputFormat", "outputFormat", "image", "tools",
                 "toolMetadata"],
    "properties": {
        "name": _TEXT, "description": _TEXT, "inputFormat": _TEXT, "outputFormat": _TEXT,
        "image": _TEXT, "tools": {"type": "array"},
        "toolMetadata": {"type": "object", "additionalProperties": {"$ref": "#/definitions/tool"}},
    },
    "definitions": {
        "tool": {
            "type": "object",
            "required": ["name", "description", "input", "output"],
            "properties": {
                "name": _TEXT, "description": _TEXT,
                "input": {"type": "object", "required": ["type", "description"],
                          "properties": {"type": _TEXT, "description": _TEXT}},
                "output": {
                    "type": "object", "required": ["type", "description", "schema"],
                    "properties": {
                        "type": _TEXT, "description": _TEXT,
                        "schema": {
                            "type": "object", "required": ["properties", "required", "type"],
                            "properties": {
                                "type": _TEXT, "required": {"type": "array"},
                                "properties": {
                                    "type": "object",
                                    "required": ["requestId", "result", "prompt"],
                                    "properties": {"requestId": _PROPERTY, "result": _PROPERTY,
                                                   "prompt": _PROPERTY},
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def metadata_problems(metadata: Any) -> list[str]:
    """Every way `metadata` breaks the mech's rules (empty: it would be published)."""
    from jsonschema import Draft7Validator

    validator = Draft7Validator(METADATA_SCHEMA)
    problems = [f"{'/'.join(str(p) for p in error.absolute_path) or '(top)'}: {error.message}"
                for error in sorted(validator.iter_errors(metadata), key=lambda e: e.path)]
    if problems:
        return problems
    tools, entries = metadata["tools"], metadata["toolMetadata"]
    if len(tools) != len(entries):
        problems.append(f"tools lists {len(tools)} names but toolMetadata has {len(entries)}")
    problems += [f"toolMetadata: no entry for tool {tool!r}" for tool in tools
                 if tool not in entries]
    for tool, entry in entries.items():
        schema = entry["output"]["schema"]
        if len(schema["properties"]) != len(schema["required"]):
            problems.append(f"toolMetadata/{tool}/output/schema: {len(schema['properties'])} "
                            f"properties but {len(schema['required'])} required names")
    return problems


def tool_entries(tools: list[str], name: str, description: str,
                 preset: str) -> dict[str, dict[str, Any]]:
    """The toolMetadata entries of one package: one per tool name it serves."""
    schemas = KIND_SCHEMAS[PRESET_KINDS[preset]]
    return {tool: {"name": name, "description": description,
                   "input": copy.deepcopy(schemas["input"]),
                   "output": copy.deepcopy(schemas["output"])} for tool in tools}


def _read_existing(path: Path) -> dict[str, Any] | None:
    try:
        document = jsonsafe.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read it as JSON ({exc}); move it aside and run "
                         "`kit tool` again") from None
    problems = metadata_problems(document)
    if problems:
        raise InputError(f"{path}: not mech tool metadata ({problems[0]}); move it aside and "
                         "run `kit tool` again")
    return document


def write_metadata(path: Path, tools: list[str], name: str, description: str,
                   preset: str) -> dict[str, Any]:
    """Add (or replace) this package's tools in the metadata file at `path`, keeping every
    other tool, check the result against the mech's rules and write it; the document."""
    document = _read_existing(path) or {
        "name": DEFAULT_MECH_NAME, "description": DEFAULT_MECH_DESCRIPTION,
        "inputFormat": IO_FORMAT, "outputFormat": IO_FORMAT, "image": "tbd",
        "tools": [], "toolMetadata": {},
    }
    stale = [tool for tool, entry in document["toolMetadata"].items()
             if entry.get("name") == name and tool not in tools]
    for tool in stale:  # a model dropped from provider.models: its tool is gone too
        del document["toolMetadata"][tool]
    document["tools"] = [tool for tool in document["tools"] if tool not in stale]
    document["toolMetadata"].update(tool_entries(tools, name, description, preset))
    document["tools"] += [tool for tool in tools if tool not in document["tools"]]
    problems = metadata_problems(document)
    if problems:
        raise KitError(f"the tool metadata breaks the mech's rules ({problems[0]}); "
                       "report this as a kit bug")
    atomic_write(path, json.dumps(document, indent=4) + "\n")
    return document
