"""Rendering of `contract_template/` into the deployable JavaScript contract.

The template is rendered in a sandboxed Jinja2 environment with `StrictUndefined`; configured
values reach it only through the `js` filter, which emits JSON that is also safe inside JS
source. Output is deterministic: the same config gives the same bytes on any machine.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from kit.contract.config import ProjectConfig
from kit.errors import InputError, KitError
from kit.resources import contract_template_dir

if TYPE_CHECKING:
    from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_VERSION = "1.2.0"  # 1.1: signed answers (proof) and /attestation; 1.2: user module, presets
TEMPLATE_FILE = "agent.js.j2"
SCHEMA_FILE = "schema.json"
# Vendored JavaScript (contract_template/vendor/<name>, with <name>.sha256 beside it), regenerated
# only by scripts/vendor-crypto from pinned npm packages; the template includes it by name.
VENDOR_DIR = "vendor"

# JSON leaves these as they are, but inside JS source they can end a <script> element or (before
# ES2019) a string literal; NUL is escaped by JSON already and listed for clarity.
_JS_UNSAFE = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029\0"}


def js_literal(value: Any) -> str:
    """`value` as a JSON text that is also a safe JavaScript expression, with sorted keys."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, indent=2, allow_nan=False)
    return text.translate(_JS_UNSAFE)


def sandboxed_environment(
    folder: Path, filters: dict[str, Callable[[Any], str]], *, trim_blocks: bool = False
) -> SandboxedEnvironment:
    """A sandboxed Jinja2 environment over `folder`: undefined names fail, nothing is
    auto-escaped, so every value must go through one of `filters` (its target's encoder)."""
    from jinja2 import FileSystemLoader, StrictUndefined
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(
        loader=FileSystemLoader(str(folder)),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=trim_blocks,
        lstrip_blocks=trim_blocks,
    )
    environment.filters.update(filters)
    return environment


def template_environment() -> SandboxedEnvironment:
    """The sandboxed environment the contract template (and its tests) render in."""
    return sandboxed_environment(contract_template_dir(),
                                 {"js": _js_filter, "vendored": _vendored_filter,
                                  "module_code": _module_filter})


def _module_filter(code: str) -> str:
    """The user module's code (kit.contract.bundle), placed as it is: it is JavaScript, not a value. It
    must not hold the wrapper's marker comments, which locate it for stack traces."""
    from kit.contract.bundle import END_MARKER, START_MARKER

    if START_MARKER in code or END_MARKER in code:
        raise InputError("src/agent.js holds a kit:user-module marker comment; remove it")
    return code


def _vendored_filter(name: str) -> str:
    return js_literal(vendored_source(name))


def vendored_source(name: str) -> str:
    """The text of `vendor/<name>`, only if its sha256 is the one recorded in `<name>.sha256`
    (sha256sum format). The template embeds it as a string constant and compiles it on use."""
    if Path(name).name != name or name.startswith("."):
        raise KitError(f"vendored file names are plain file names, got {name!r}; "
                       "reinstall the kit")
    folder = contract_template_dir() / VENDOR_DIR
    path, record = folder / name, folder / f"{name}.sha256"
    try:
        data = path.read_bytes()
        recorded = record.read_text(encoding="ascii").split()[0].lower()
    except (OSError, ValueError, IndexError):
        raise InputError(f"cannot read {path} and its recorded sha256 ({record.name}); "
                         "reinstall the kit") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != recorded:
        raise InputError(
            f"{path} does not match its recorded sha256 (recorded {recorded}, file {actual}): "
            "refusing to build with modified vendored code; restore it, or regenerate it with "
            "scripts/vendor-crypto (npm ci && node build.mjs), which also records the new hash")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; regenerate it with scripts/vendor-crypto"
                         ) from None


def _js_filter(value: Any) -> str:
    from jinja2 import Undefined

    if isinstance(value, Undefined):  # a filter receives undefined values instead of failing
        value._fail_with_undefined_error()
    return js_literal(value)


def load_schema() -> dict[str, Any]:
    """`contract_template/schema.json`: every template parameter with type, default, description."""
    path = contract_template_dir() / SCHEMA_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise KitError(f"cannot read {path}: {exc}; reinstall the kit") from None


def contract_parameters(config: ProjectConfig) -> dict[str, Any]:
    """The config values the schema names, nested by section, plus the template version."""
    values = config.to_dict()
    parameters: dict[str, Any] = {"template_version": TEMPLATE_VERSION}
    for parameter in load_schema()["parameters"]:
        section, key = parameter["name"].split(".")
        value = values[section][key]
        parameters.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
    if "output_schema" in parameters.get("contract", {}):  # canonical JSON text -> object
        from kit.contract.presets import output_schema_object

        parameters["contract"]["output_schema"] = output_schema_object(
            parameters["contract"]["output_schema"])
    return parameters


def render_parameters(parameters: dict[str, Any], user_module: str | None = None) -> bytes:
    """Render the contract template with `parameters` as its `config` object and the user
    module's code (kit.contract.bundle: already checked, placed as it is), if any."""
    from jinja2 import TemplateError

    try:
        template = template_environment().get_template(TEMPLATE_FILE)
        text = template.render(config=parameters, user_module=user_module)
    except TemplateError as exc:
        problem = f"the contract template failed to render ({exc}); reinstall the kit"
        raise KitError(problem) from None
    return text.encode("utf-8")


def render_contract(config: ProjectConfig) -> bytes:
    """The contract for `config` with its user module (src/agent.js, kit.contract.bundle), as the bytes
    written to `dist/agent.js`."""
    from kit.contract.bundle import check_syntax, load_module

    module = load_module(config.root)
    if module is not None:
        check_syntax(module)
    return render_parameters(contract_parameters(config), module.code if module else None)
