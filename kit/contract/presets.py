"""Contract presets (`kit init --preset chat|prediction|json`, `[contract] preset`).

- `chat`: the answer is the model's text (the kit's behaviour before presets).
- `prediction`: the contract asks for a binary-outcome prediction in the prompt style of Valory's
  prediction tools and answers `{"p_yes", "p_no", "confidence", "info_utility"}`, validated and
  normalised in the contract; the generated mech tool returns it in the format trader agents
  parse (see kit/templates/mech_tool and tests/test_presets.py for the sources).
- `json`: `[contract.output_schema]` in agent.toml is a JSON Schema the contract enforces on the
  model's output. The contract's validator (plain JavaScript, in contract_template/agent.js.j2)
  implements the subset below; a schema that uses anything else is refused here, at load time,
  instead of being half-enforced in the worker.

Supported JSON Schema subset (draft 2020-12 meanings): `type` (a name or a list of names among
object, array, string, number, integer, boolean, null), `properties`, `required`,
`additionalProperties` (true, false or a schema), `items` (one schema), `minItems`, `maxItems`,
`enum`, `const`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum` (numbers),
`minLength`, `maxLength` (in code points); annotations `title`, `description`, `default`,
`examples`, `$schema`, `$comment` are accepted and ignored.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kit.errors import ConfigError

PRESETS = ("chat", "prediction", "json")
SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
ANNOTATIONS = ("title", "description", "default", "examples", "$schema", "$comment")
MAX_SCHEMA_DEPTH = 32
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
_SUPPORTED = ("type", "properties", "required", "additionalProperties", "items", "enum",
              "const", *_COUNTS, *_BOUNDS, *ANNOTATIONS)


def canonical_output_schema(key: str, value: Any, preset: str) -> str:
    """`[contract.output_schema]` checked against the subset, as canonical JSON text ("" when
    absent). Required for the json preset, refused for the others (it would do nothing)."""
    if value is None:
        if preset == "json":
            raise ConfigError(key, 'the json preset needs a schema, e.g. [contract.output_schema] '
                                   'type = "object"')
        return ""
    if preset != "json":
        raise ConfigError(key, f"only the json preset uses it (preset is {preset!r}); remove it "
                               'or set preset = "json"')
    if not isinstance(value, dict):
        raise ConfigError(key, "must be a table (a JSON Schema object)")
    check_schema(value, key, 0)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_schema(schema: Any, where: str, depth: int) -> None:
    """Raise ConfigError naming the first place where `schema` leaves the supported subset."""
    if depth > MAX_SCHEMA_DEPTH:
        raise ConfigError(where, f"nests deeper than {MAX_SCHEMA_DEPTH} levels")
    if not isinstance(schema, dict):
        raise ConfigError(where, "must be a schema object (a table)")
    for keyword, value in schema.items():
        if keyword not in _SUPPORTED:
            raise ConfigError(f"{where}.{keyword}", "is not in the supported JSON Schema subset "
                              f"({', '.join(_SUPPORTED[:-len(ANNOTATIONS)])}); the contract "
                              "would not enforce it")
        _check_keyword(keyword, value, f"{where}.{keyword}", depth)


def _check_keyword(keyword: str, value: Any, where: str, depth: int) -> None:
    if keyword == "type":
        names = value if isinstance(value, list) else [value]
        if not names or any(name not in SCHEMA_TYPES for name in names):
            raise ConfigError(where, f"must be one of {', '.join(SCHEMA_TYPES)} (or a list)")
    elif keyword == "properties":
        if not isinstance(value, dict):
            raise ConfigError(where, "must be a table of property schemas")
        for name, sub in value.items():
            check_schema(sub, f"{where}.{name}", depth + 1)
    elif keyword == "required":
        if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
            raise ConfigError(where, "must be a list of property names")
    elif keyword in ("additionalProperties", "items"):
        if not isinstance(value, bool) or keyword == "items":
            check_schema(value, where, depth + 1)
    elif keyword == "enum":
        if not isinstance(value, list) or not value:
            raise ConfigError(where, "must be a non-empty list")
    elif keyword in _COUNTS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(where, "must be a non-negative integer")
    elif keyword in _BOUNDS:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ConfigError(where, "must be a number")


def output_schema_object(text: str) -> dict[str, Any] | None:
    """The schema as the contract's CONFIG carries it (None when there is none)."""
    return json.loads(text) if text else None


# The json preset's starting schema (kit init --preset json writes it to agent.toml).
DEFAULT_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["answer", "confidence"],
    "additionalProperties": False,
    "properties": {
        "answer": {"type": "string", "description": "The answer, in one or two sentences"},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key, ensure_ascii=False)


def schema_toml(text: str, table: str = "contract.output_schema") -> str:
    """The schema (canonical JSON text) as TOML tables under `[table]`: scalars and lists of
    scalars as keys, objects as sub-tables. "" for no schema."""
    if not text:
        return ""
    return _tables(json.loads(text), table)


def _tables(schema: dict[str, Any], table: str) -> str:
    lines = [f"[{table}]"]
    nested = []
    for key, value in schema.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            lines.append(f"{_toml_key(key)} = {_toml_inline(value)}")
    text = "\n".join(lines) + "\n"
    for key, value in nested:
        text += _tables(value, f"{table}.{_toml_key(key)}")
    return text


def _toml_inline(value: Any) -> str:
    """A TOML 1.0 inline value: arrays (mixed types allowed) and inline tables nest."""
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_inline(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    if isinstance(value, list):
        return "[" + ", ".join(_toml_inline(item) for item in value) + "]"
    if value is None:
        raise ConfigError("contract.output_schema", "TOML has no null; remove the null value")
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
