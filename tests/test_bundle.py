"""The user module (kit.contract.bundle): the documented subset, the build, and stack traces that name
src/agent.js lines, through the real runtime and `kit run`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest

from fixtures.ipfs_node import run_cli
from kit.contract.bundle import END_MARKER, START_MARKER, map_trace, module_span
from kit.errors import InputError
from kit.contract.project import build_project
from kit.local.runtime import invoke

THROWING_MODULE = """\
// a module whose handler fails three calls deep
export async function handle(input, ctx) {
  return helper(input);
}

function helper(input) {
  const shouted = input.prompt.toUpperCase();
  return inner(shouted);
}

function inner(text) {
  throw new RangeError("cannot handle " + text);
}
"""


def _post(prompt: str) -> dict[str, Any]:
    return {"method": "POST", "path": "/ipfs/QmTestContract", "queries": {}, "headers": {},
            "body": json.dumps({"prompt": prompt, "api_key": "test-provider-key"})}


@pytest.fixture
def project(project_factory: Callable[..., Path]) -> Path:
    return project_factory(accept_key_in_body=True)


def _write(project: Path, text: str) -> None:
    (project / "src" / "agent.js").write_text(text, encoding="utf-8")


@pytest.mark.parametrize("text,message", [
    ('import { x } from "./lib.js";\nexport async function handle() {}\n',
     r"src/agent\.js:1: `import` is not supported"),
    ("export async function handle() {\n  const m = await import('x');\n}\n",
     r"src/agent\.js:2: `import` is not supported"),
    ("export default async function handle() {}\n", r"src/agent\.js:1: `export default`"),
    ("async function handle() {}\nexport { handle };\n", r"src/agent\.js:2: `export \{`"),
    ("export async function answer() {}\n", r"it must export the handler"),
    ("export async function handle(input, ctx) {\n  return 1 +;\n}\n",
     r"src/agent\.js:2: SyntaxError"),
])
def test_modules_outside_the_subset_are_refused_with_their_line(project: Path, text: str,
                                                                  message: str) -> None:
    built = (project / "dist" / "agent.js").read_bytes()
    _write(project, text)
    with pytest.raises(InputError, match=message):
        build_project(project)
    assert (project / "dist" / "agent.js").read_bytes() == built  # the last build stays


def test_the_module_is_placed_line_for_line_and_the_build_is_deterministic(project: Path) -> None:
    _write(project, THROWING_MODULE)
    first = build_project(project)
    code = first.path.read_text(encoding="utf-8")
    assert build_project(project).cid == first.cid
    span = module_span(code)
    assert span is not None
    lines = code.split("\n")
    assert START_MARKER in lines[span.offset - 1] and END_MARKER in lines[span.offset +
                                                                          span.lines]
    for number, text in enumerate(THROWING_MODULE.split("\n"), start=1):
        expected = text.replace("export ", "       ", 1) if text.startswith("export ") else text
        assert lines[span.offset + number - 1] == expected
    assert span.functions == {"handle": 2, "helper": 6, "inner": 11}


def test_a_failing_handler_answers_500_and_its_trace_names_the_module_lines(
    project: Path,
) -> None:
    _write(project, THROWING_MODULE)
    code = build_project(project).path.read_text(encoding="utf-8")
    answer = invoke(code, _post("hi"))
    assert answer.status == 500
    assert json.loads(answer.body)["error"] == {
        "code": "handler_error",
        "message": "the agent's handler failed: RangeError: cannot handle HI"}
    trace = "\n".join(map_trace(line, code) for line in answer.logs)
    # the lines of THROWING_MODULE above, counted by hand
    assert "at inner (src/agent.js:12)" in trace or "at inner (src/agent.js, in inner()" in trace
    assert "at helper (src/agent.js:8)" in trace
    assert "at handle (src/agent.js:3)" in trace
    assert "dist/agent.js:" in trace  # the template's own frames keep the bundled file


def test_kit_run_prints_the_mapped_trace(project: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    _write(project, THROWING_MODULE)
    assert run_cli(capsys, "build", "-C", str(project))[0] == 0
    code, out, _ = run_cli(capsys, "run", "-C", str(project), "--method", "POST", "--body",
                           json.dumps({"prompt": "hi", "api_key": "test-provider-key"}))
    assert code == 0  # the contract answered (a 500 is its answer, not a runtime fault)
    assert "status: 500" in out and "at helper (src/agent.js:8)" in out


def test_a_top_level_failure_of_the_module_is_a_handler_error(project: Path) -> None:
    _write(project, "const table = null;\nconst size = table.length;\n"
                    "export async function handle() { return 'x'; }\n")
    code = build_project(project).path.read_text(encoding="utf-8")
    answer = invoke(code, _post("hi"))
    assert answer.status == 500
    assert json.loads(answer.body)["error"]["code"] == "handler_error"


def test_traces_outside_any_module_are_left_alone() -> None:
    assert map_trace("at f (<input>:12)", "no markers here") == "at f (dist/agent.js:12)"
    assert map_trace("plain text", "") == "plain text"


def test_kit_dev_gets_the_failed_invocation_to_print_its_mapped_trace(
    project: Path, local_gateway_factory: Any
) -> None:
    import urllib.error
    import urllib.request

    _write(project, THROWING_MODULE)
    cid = build_project(project).cid
    failures: list[tuple[str, str, list[str], str | None]] = []
    gateway = local_gateway_factory(project, on_invocation=lambda *args: failures.append(args))
    request = urllib.request.Request(f"{gateway.url}/ipfs/{cid}", method="POST", data=json.dumps(
        {"prompt": "hi", "api_key": "test-provider-key"}).encode())
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=10)
    assert failed.value.code == 500
    [(failed_cid, code, logs, _)] = failures
    assert failed_cid == cid
    assert "at helper (src/agent.js:8)" in "\n".join(map_trace(line, code) for line in logs)
