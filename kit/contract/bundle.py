"""The user module (`src/agent.js`) and how `kit build` bundles it into `dist/agent.js`.

No bundler and no Node.js: the kit accepts a documented module subset that needs none.

- One file, `src/agent.js` (UTF-8, at most MAX_MODULE_BYTES). Other files under `src/` are
  not bundled (keep data in the module or in agent.toml).
- No `import` (static or dynamic): the worker runs one self-contained script, and there is
  nothing to resolve at build time. The build refuses it with the file and line.
- `export` only as a declaration keyword at the start of a line (`export async function
  handle`, `export function`, `export const|let|class`); `export default`, `export {...}` and
  `export * from` are refused. The build replaces the keyword by spaces of the same width, so
  every line and column of the module stays where it was.
- It must export `handle(input, ctx)` (async or returning a promise).

The module is placed, as it is, inside a function scope in the template (so its names never
clash with the template's, and the worker's raw request, output and `fetch` are shadowed by the
template's checked versions: see contract_template/agent.js.j2), between two marker comments.
`map_trace` finds those markers in any built contract and turns the engine's `<input>:LINE`
into `src/agent.js:LINE` (or `dist/agent.js:LINE` for the template's own code), so `kit run` and
`kit dev` show the user's stack traces with their own file and line numbers. The build also
parses the wrapped module once in QuickJS (without running it), so a syntax error is reported
at build time with the user's line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kit.errors import InputError

MODULE_FILE = "src/agent.js"
MAX_MODULE_BYTES = 1 << 20
# The template's wrapper lines (contract_template/agent.js.j2 renders exactly these around the
# module): the module's line n is the marker line's number + n.
START_MARKER = "// kit:user-module src/agent.js"
END_MARKER = "// kit:user-module-end"

_IMPORT = re.compile(r"^\s*import\b(?!\s*\.meta)|\bimport\s*\(", re.MULTILINE)
_EXPORT = re.compile(r"^export(\s+)(default\b|\{|\*)?", re.MULTILINE)
_EXPORTED_HANDLE = re.compile(r"^export\s+(async\s+)?function\s*\*?\s*handle\s*\(|"
                              r"^export\s+(const|let)\s+handle\s*=", re.MULTILINE)
_FRAME_WITH_LINE = re.compile(r"\((?P<file>[^()]*?):(?P<line>\d+)(?::(?P<col>\d+))?\)")
_BARE_POSITION = re.compile(r"\bat (?P<file><input>|[^\s()]+\.js):(?P<line>\d+)(?::(?P<col>\d+))?")
_FRAME_NO_LINE = re.compile(r"at (?P<name>[A-Za-z_$][\w$]*) \((?P<file>[^():]*)\)")


@dataclass(frozen=True)
class UserModule:
    """The module's text with `export` keywords blanked, ready to be placed in the template."""

    path: Path
    code: str
    lines: int


def module_path(project_dir: Path) -> Path:
    return Path(project_dir) / MODULE_FILE


def load_module(project_dir: Path) -> UserModule | None:
    """`src/agent.js` checked against the subset and prepared for the template; None when the
    project has none (the template's built-in handler then answers)."""
    path = module_path(project_dir)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InputError(f"{MODULE_FILE}: cannot read it ({exc.strerror})") from None
    if len(raw) > MAX_MODULE_BYTES:
        raise InputError(f"{MODULE_FILE}: {len(raw)} bytes, over the {MAX_MODULE_BYTES}-byte "
                         "limit of a user module")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{MODULE_FILE}: not UTF-8 text (byte {exc.start})") from None
    text = text.replace("\r\n", "\n").lstrip("\ufeff")
    code = strip_exports(text)
    return UserModule(path=path, code=code, lines=code.count("\n") + 1)


def _line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def strip_exports(text: str) -> str:
    """The module with its `export` keywords blanked; InputError for anything outside the
    subset (the message names the line)."""
    found = _IMPORT.search(text)
    if found:
        raise InputError(f"{MODULE_FILE}:{_line_of(text, found.start())}: `import` is not "
                         "supported: the contract is one self-contained script; put the code "
                         "in src/agent.js (see README, 'User logic')")
    for match in _EXPORT.finditer(text):
        if match.group(2):
            raise InputError(f"{MODULE_FILE}:{_line_of(text, match.start())}: `export "
                             f"{match.group(2)}` is not supported; write `export async "
                             "function handle(input, ctx)` (declarations only)")
    if not _EXPORTED_HANDLE.search(text):
        raise InputError(f"{MODULE_FILE}: it must export the handler: `export async function "
                         "handle(input, ctx) { ... }`")
    return _EXPORT.sub(lambda m: " " * len("export") + m.group(1), text)


def check_syntax(module: UserModule) -> None:
    """Parse the module inside a function scope, as the template places it, without running
    it; InputError naming the user's line on a syntax error."""
    import quickjs

    context = quickjs.Context()
    try:
        context.eval(f"(function () {{\n{module.code}\n}});")  # module line n = line n + 1
    except quickjs.JSException as exc:
        message = str(exc)
        first = message.splitlines()[0] if message else "SyntaxError"
        match = re.search(r"<input>:(\d+)", message)
        line = int(match.group(1)) - 1 if match else 0
        where = f"{MODULE_FILE}:{line}" if 1 <= line <= module.lines else MODULE_FILE
        raise InputError(f"{where}: {first}") from None


# ---- stack traces ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleSpan:
    """Where the module sits in a built contract: its line n is dist line `offset + n`."""

    offset: int
    lines: int
    functions: dict[str, int]  # function name -> its line in the module


def module_span(code: str) -> ModuleSpan | None:
    """The user module's position in a built contract, found by its marker comments."""
    start = code.find(START_MARKER)
    end = code.find(END_MARKER, start + 1) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    offset = code.count("\n", 0, start) + 1  # the marker's line; the module starts below it
    body_start = code.find("\n", start) + 1
    body = code[body_start:code.rfind("\n", 0, end)]
    functions: dict[str, int] = {}
    for match in re.finditer(r"^[ \t]*(?:async\s+)?function\s*\*?\s*([A-Za-z_$][\w$]*)", body,
                             re.MULTILINE):
        functions.setdefault(match.group(1), _line_of(body, match.start()))
    return ModuleSpan(offset=offset, lines=body.count("\n") + 1, functions=functions)


def map_trace(text: str, code: str) -> str:
    """`text` (an error, a stack trace, a log line) with the built contract's positions
    (`<input>:LINE[:COL]`) turned into `src/agent.js:LINE` inside the user module and
    `dist/agent.js:LINE` elsewhere. Frames the engine gives without a line (QuickJS names the
    innermost frame only) get the line where that function of the module is defined."""
    span = module_span(code)

    def place(line: int, col: str | None) -> str:
        suffix = f":{col}" if col else ""
        if span is not None and 1 <= line - span.offset <= span.lines:
            return f"{MODULE_FILE}:{line - span.offset}{suffix}"
        return f"dist/agent.js:{line}{suffix}"

    text = _FRAME_WITH_LINE.sub(
        lambda m: f"({place(int(m.group('line')), m.group('col'))})", text)
    text = _BARE_POSITION.sub(lambda m: f"at {place(int(m.group('line')), m.group('col'))}", text)

    def unlined(match: re.Match[str]) -> str:
        name = match.group("name")
        if span is not None and name in span.functions:
            return f"at {name} ({MODULE_FILE}, in {name}() from line {span.functions[name]})"
        return match.group(0)

    return _FRAME_NO_LINE.sub(unlined, text)
