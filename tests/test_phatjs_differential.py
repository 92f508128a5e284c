"""Differential test: the kit's local runtime against Phala's own QuickJS runner, `phatjs`.

The oracle is `phat-fn run --experimentalAsync SCRIPT -a REQUEST` from the npm package
`@phala/fn` 0.2.22 (pinned in scripts/phala-fn/, installed by scripts/bootstrap.sh): Phala's
QuickJS build compiled to WebAssembly, which runs a gen-1 contract the way the worker does
(`scriptArgs[0]` in, `scriptOutput` read once nothing is pending) and prints `{"output": ...}`.
Runs go through tests/fixtures/phatjs_run.cjs, which makes the same calls without the CLI's
1 s start-up; a test below checks that it prints what the CLI prints.
Both runtimes get the same serialized requests; their answers (status, headers, body), what the
stand-in LLM on 127.0.0.1 received from each, and their timing on a slow provider must agree.

Findings about phatjs 0.10.4 (the build inside @phala/fn 0.2.22), checked by the tests below:
- It reaches a loopback server: its `fetch` is the host's (Node's) fetch.
- An aborted `fetch` rejects, but the request stays in flight and the run waits for it; only
  `process.exit()` ends the run early, keeping `scriptOutput` (WapoJS: `Wapo.exit` closes every
  resource, phat-quickjs WapoJS/src/host_functions.rs; its polyfill-fetch.js never reads the
  signal at all). The template therefore ends the worker once its answer is set.
- `Date.now()` is always 0 there, and it has no `Wapo` global (its host object is `Sidevm`,
  without deriveSecret), while the worker has one: the template, which signs its answers with a
  key from `Wapo.deriveSecret`, answers 500 `signing_unavailable` in bare phatjs. For the
  template the phatjs side therefore gets a labelled stand-in `Wapo.deriveSecret` prepended,
  giving for each derivation path the bytes the local runtime derives for the same worker key
  and code, so that both runtimes must produce the very same signed answers.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.phatjs import run_phat_fn, run_phat_fn_cli
from fixtures.projects import gen1_request
from fixtures.servers import MOCK_LLM_KEY

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 40  # seconds, per phatjs run (start-up is about 0.2 s, 1.2 s for the CLI)
MODELS = ["model-a", "model-b"]
SYSTEM_PROMPT = "Answer briefly."
MAX_PROMPT = 40
SECRET = {"llmKey": MOCK_LLM_KEY}
WORKER_KEY = bytes(range(32))


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: str
    seconds: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def gateway_mapping(output: Any, seconds: float) -> Answer:
    """The gateway's mapping of scriptOutput (REFERENCE section 1), restated independently."""
    if output is None:
        return Answer(500, {}, "", seconds)
    data = json.loads(output) if output else {}
    if data.get("success") is False:
        return Answer(500, {}, str(data.get("error")), seconds)
    return Answer(data.get("status", 200), data.get("headers", {}), data.get("body", ""), seconds)


def run_phatjs(script: Path, request: dict[str, Any] | str) -> Answer:
    argument = request if isinstance(request, str) else json.dumps(request)
    started = time.monotonic()
    output, _ = run_phat_fn(script, argument, timeout=RUN_TIMEOUT)
    return gateway_mapping(output, time.monotonic() - started)


def run_kit(script: Path, request: dict[str, Any] | str) -> Answer:
    from kit.local.runtime import invoke

    parsed = json.loads(request) if isinstance(request, str) else request
    started = time.monotonic()
    answer = invoke(script.read_text(encoding="utf-8"), parsed, worker_key=WORKER_KEY)
    seconds = time.monotonic() - started
    if answer.status == 500 and answer.error and answer.error.startswith("contract_error"):
        return Answer(500, {}, json.loads(answer.body)["error"], seconds)
    return Answer(answer.status, answer.headers, answer.body, seconds)


@dataclass(frozen=True)
class Contract:
    kit: Path  # the contract as deployed
    phala: Path  # the same, behind a stand-in Wapo.deriveSecret where it needs one


def both(contract: Contract | Path, request: dict[str, Any] | str) -> tuple[Answer, Answer]:
    if isinstance(contract, Path):
        contract = Contract(contract, contract)
    return run_kit(contract.kit, request), run_phatjs(contract.phala, request)


STAND_IN_WAPO = """// STAND-IN (test only): phatjs has no Wapo; the worker derives secrets,
// and so does this, from a table of the local runtime's derivations for this code and key.
globalThis.Wapo = { deriveSecret(salt) {
  const hex = %s[String(salt)];
  if (hex === undefined) throw new Error("stand-in Wapo.deriveSecret: unknown path " + salt);
  return new Uint8Array(hex.match(/../g).map((pair) => parseInt(pair, 16)));
} };
"""


def with_stand_in_wapo(contract: Path) -> Contract:
    from kit.local.runtime import derive_secret

    code = contract.read_text(encoding="utf-8")
    paths = re.findall(r'^const \w+_PATH = "([^"]+)";', code, re.MULTILINE)
    table = {path: derive_secret(WORKER_KEY, code, path.encode()).hex() for path in paths}
    phala = contract.with_name("agent.phatjs.js")
    phala.write_text(STAND_IN_WAPO % json.dumps(table) + code, encoding="utf-8")
    return Contract(contract, phala)


def same_answer(kit: Answer, phala: Answer) -> Answer:
    assert (kit.status, kit.headers, kit.body) == (phala.status, phala.headers, phala.body)
    return kit


# ---- the kit's contract template on the same requests -------------------------------------


@pytest.fixture
def template(project_factory, mock_llm) -> Contract:
    project = project_factory(
        base_url=mock_llm.base_url, models=MODELS, key_secret="llmKey",
        system_prompt=SYSTEM_PROMPT, timeout_seconds=2, max_prompt_chars=MAX_PROMPT)
    return with_stand_in_wapo(project / "dist" / "agent.js")


def test_bare_phatjs_has_no_wapo_so_the_template_cannot_sign(template: Contract) -> None:
    answer = run_phatjs(template.kit, post({"prompt": "hi"}))
    assert answer.status == 500 and answer.json["error"]["code"] == "signing_unavailable"


def stand_in_answer(prompt: str) -> str:
    """The stand-in's documented rule (kit/local/mock_llm.py docstring), restated."""
    return "stand-in answer: " + hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def post(body: Any, secret: dict[str, str] | None = SECRET) -> dict[str, Any]:
    raw = body if isinstance(body, str) else json.dumps(body)
    return gen1_request("POST", body=raw, secret=secret)


def get(subpath: str = "", secret: dict[str, str] | None = SECRET, **queries: str):
    return gen1_request("GET", subpath, queries={k: [v] for k, v in queries.items()},
                        secret=secret)


# (name, request, expected status, expected error code or None)
REQUESTS = [
    ("info", get("/info"), 200, None),
    ("info-post", gen1_request("POST", "/info", body="{}"), 405, "method_not_allowed"),
    ("unknown-route", get("/nope"), 404, "not_found"),
    ("put", gen1_request("PUT", body="{}", secret=SECRET), 405, "method_not_allowed"),
    ("get-prompt", get(chatQuery="hello world"), 200, None),
    ("get-model-b", get(chatQuery="hi", openAiModel="model-b"), 200, None),
    ("allow-list", get(chatQuery="hi", openAiModel="gpt-evil"), 403, "model_not_allowed"),
    ("post-prompt", post({"prompt": "what is 2+2?", "temperature": 0.5}), 200, None),
    ("post-unicode", post({"prompt": "héllo wörld ✓ 𝄞"}), 200, None),
    ("bad-json", post("{not json"), 400, "invalid_json"),
    ("json-array", post("[1, 2]"), 400, "invalid_json"),
    ("missing-prompt", post({}), 400, "missing_prompt"),
    ("too-long", post({"prompt": "x" * (MAX_PROMPT + 1)}), 400, "prompt_too_long"),
    ("bad-max-tokens", post({"prompt": "hi", "max_tokens": 1.5}), 400, "invalid_max_tokens"),
    ("key-in-body", post({"prompt": "hi", "api_key": "sk-x"}), 400, "api_key_not_accepted"),
    ("no-secret", post({"prompt": "hi"}, secret=None), 401, "missing_api_key"),
]


def test_template_answers_the_same_in_both_runtimes(template: Contract, mock_llm) -> None:
    for name, request, status, code in REQUESTS:
        before = len(mock_llm.requests)
        kit, phala = both(template, request)
        answer = same_answer(kit, phala)
        assert answer.status == status, name
        assert answer.headers == {"content-type": "application/json"}, name
        if code is not None:
            assert answer.json["error"]["code"] == code, name
        sent = mock_llm.requests[before:]
        if status == 200 and name != "info":
            prompt = request["queries"].get("chatQuery", [None])[0] or json.loads(
                request["body"])["prompt"]
            assert answer.json["message"] == stand_in_answer(prompt), name
            assert len(sent) == 2, name  # one provider call from each runtime
            kit_call, phala_call = sent
            assert kit_call.json == phala_call.json, name
            assert kit_call.path == phala_call.path == "/v1/chat/completions"
            for header in ("authorization", "content-type"):
                assert kit_call.headers.get(header) == phala_call.headers.get(header), header
        else:
            assert sent == [], name


PROVIDER_FAULTS = [
    # (fault passed to the stand-in, expected code): statuses are the template's; both runtimes
    # must give the same one
    ({"status": 500}, None),
    ({"status": 429}, None),
    ({"status": 401}, None),
    ({"status": 200, "body": "not json at all"}, "provider_malformed"),
]


@pytest.mark.parametrize("fault,code", PROVIDER_FAULTS, ids=["500", "429", "401", "malformed"])
def test_provider_errors_map_the_same(template: Contract, mock_llm, fault, code) -> None:
    request = post({"prompt": "hi"})
    mock_llm.fail_next(**fault)
    kit = run_kit(template.kit, request)
    mock_llm.fail_next(**fault)
    phala = run_phatjs(template.phala, request)
    answer = same_answer(kit, phala)
    assert 400 <= answer.status < 600 and answer.status != 500
    if code is not None:
        assert answer.json["error"]["code"] == code
    assert MOCK_LLM_KEY not in answer.body


def phatjs_startup(tmp_path: Path) -> float:
    """Seconds phat-fn needs for a script with nothing pending (node + wasm start-up)."""
    empty = tmp_path / "startup.js"
    empty.write_text('scriptOutput = "";', encoding="utf-8")
    return min(run_phatjs(empty, "{}").seconds for _ in range(2))


def test_slow_provider_times_out_at_the_template_timeout_in_both(template: Contract,
                                                                 mock_llm) -> None:
    """The issue's case: timeout_seconds = 2, the provider takes 8 s. Both answer 504 after
    about 2 s, not after the 8 s the abandoned request takes. phatjs' own time is measured
    against the same request answered at once (start-up, compiling the crypto, signing)."""
    request = post({"prompt": "slow"})
    baseline = run_phatjs(template.phala, request)
    assert baseline.status == 200
    mock_llm.fail_next(None, delay=8)
    kit = run_kit(template.kit, request)
    mock_llm.fail_next(None, delay=8)
    phala = run_phatjs(template.phala, request)
    answer = same_answer(kit, phala)
    assert answer.status == 504 and answer.json["error"]["code"] == "provider_timeout"
    assert 1.9 <= kit.seconds < 3.5, kit.seconds
    assert phala.seconds - baseline.seconds < 4.0, (phala.seconds, baseline.seconds)


# ---- other gen-1 contracts ---------------------------------------------------------------

ECHO = r"""
const request = JSON.parse(scriptArgs[0]);
const names = ["fetch", "setTimeout", "clearTimeout", "setInterval", "clearInterval",
  "TextEncoder", "TextDecoder", "URL", "URLSearchParams", "AbortController", "Headers",
  "Response", "console", "queueMicrotask", "process", "print", "crypto", "require", "Buffer",
  "WebAssembly", "Atomics", "__date_clock", "clearImmediate"];
const kinds = Object.fromEntries(names.map((n) => [n, typeof globalThis[n]]));
const bytes = new TextEncoder().encode("héllo ✓ 𝄞");
const url = new URL("https://example.org:443/a/./b/../c?x=1&y=%20#frag");
scriptOutput = JSON.stringify({status: 201, headers: {"x-kind": "echo"}, body: JSON.stringify({
  request, kinds, bytes: Array.from(bytes), back: new TextDecoder().decode(bytes),
  url: [url.href, url.host, url.pathname, url.search, url.searchParams.get("y")],
  processKeys: ["env", "exit", "argv"].map((k) => typeof process[k]),
})});
"""

TIMERS = r"""
// The answer is written once both the 20 ms timeout and the third interval tick have run, in
// whichever order a loaded machine runs them: no fixed deadline to race against.
const order = [];
let ticks = 0;
function report() {
  if (ticks === 3 && order.includes("timeout-20")) {
    scriptOutput = JSON.stringify({status: 200, body: JSON.stringify({order, ticks})});
  }
}
setTimeout(() => { order.push("timeout-20"); report(); }, 20);
setTimeout(() => order.push("timeout-0"), 0);
Promise.resolve().then(() => order.push("microtask"));
queueMicrotask(() => order.push("queued"));
const id = setTimeout(() => order.push("cleared"), 5);
clearTimeout(id);
const every = setInterval(() => {
  ticks += 1;
  if (ticks === 3) { clearInterval(every); report(); }
}, 5);
order.push("sync");
"""

REJECTS = r"""
async function main() { await null; throw new Error("contract failed on purpose"); }
main().then((o) => { scriptOutput = o; },
  (e) => { scriptOutput = JSON.stringify({success: false, error: e.message}); });
"""

FETCHES = r"""
const base = JSON.parse(scriptArgs[0]).base;
(async () => {
  const r = await fetch(base + "/models");  // the stand-in answers GET with a 404 error shape
  const text = await r.text();
  const posted = await fetch(base + "/chat/completions", {method: "POST",
    headers: {"content-type": "application/json", authorization: "Bearer wrong-key"},
    body: JSON.stringify({model: "m", messages: [{role: "user", content: "x"}]})});
  const error = await posted.json();
  let unreachable;
  try { await fetch("http://127.0.0.1:9/"); unreachable = "answered"; }
  catch (e) { unreachable = "rejected"; }
  scriptOutput = JSON.stringify({status: 200, body: JSON.stringify({
    status: r.status, ok: r.ok, type: r.headers.get("content-type"), length: text.length,
    posted: posted.status, errorKeys: Object.keys(error), unreachable})});
})();
"""

ABORTED = r"""
const base = JSON.parse(scriptArgs[0]).base;
const controller = new AbortController();
setTimeout(() => controller.abort(), 300);
fetch(base + "/chat/completions", {method: "POST", body: "{}", signal: controller.signal})
  .then(() => { scriptOutput = JSON.stringify({status: 200, body: "answered"}); },
        (e) => { scriptOutput = JSON.stringify({status: 200, body: "rejected " + e.name}); });
"""

EXITS = r"""
const base = JSON.parse(scriptArgs[0]).base;
fetch(base + "/chat/completions", {method: "POST", body: "{}"});
setTimeout(() => {
  scriptOutput = JSON.stringify({status: 202, body: "left early"});
  process.exit();
}, 300);
"""


def script(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / f"{name}.js"
    path.write_text(source, encoding="utf-8")
    return path


def test_plain_contracts_agree(tmp_path: Path, mock_llm) -> None:
    request = gen1_request("POST", "/sub/path", queries={"a": ["1", "2"], "key": ["k"]},
                           headers={"x-test": "yes"}, body="raw ✓ body", secret={"s": "v"})
    kit, phala = both(script(tmp_path, "echo", ECHO), request)
    assert (kit.status, kit.headers) == (phala.status, phala.headers) == (201, {"x-kind": "echo"})
    seen, oracle = kit.json, phala.json
    # Known difference: phatjs 0.10.4's TextDecoder drops the top bits of a 4-byte UTF-8
    # sequence (U+1D11E comes back as U+D11E); the encoded bytes agree, and the kit decodes
    # as WHATWG requires.
    assert seen.pop("back") == "héllo ✓ 𝄞"
    assert oracle.pop("back") in ("héllo ✓ 𝄞", "héllo ✓ \ud11e")
    assert seen == oracle
    assert seen["request"] == request
    assert bytes(seen["bytes"]) == "héllo ✓ 𝄞".encode()
    assert seen["url"] == ["https://example.org/a/c?x=1&y=%20#frag", "example.org", "/a/c",
                           "?x=1&y=%20", " "]
    for name in ("crypto", "require", "Buffer", "WebAssembly", "Atomics", "__date_clock",
                 "clearImmediate"):
        assert seen["kinds"][name] == "undefined", name  # absent in both (see globals test)
    assert seen["processKeys"] == ["object", "function", "object"]

    timers = same_answer(*both(script(tmp_path, "timers", TIMERS), "{}"))
    assert timers.json == {"order": ["sync", "microtask", "queued", "timeout-0", "timeout-20"],
                           "ticks": 3}

    rejected = same_answer(*both(script(tmp_path, "rejects", REJECTS), "{}"))
    assert (rejected.status, rejected.body) == (500, "contract failed on purpose")

    base = {"base": mock_llm.base_url}
    fetched = same_answer(*both(script(tmp_path, "fetches", FETCHES), base))
    assert fetched.json == {"status": 404, "ok": False, "type": "application/json",
                            "length": fetched.json["length"], "posted": 401,
                            "errorKeys": ["error"], "unreachable": "rejected"}


PROVIDER_DELAY = 3.0  # seconds: well above a run's start-up and the exit case's bound


def test_abort_does_not_end_the_run_but_exit_does(tmp_path: Path, mock_llm) -> None:
    """An aborted fetch rejects, yet the run lasts until the provider answers (3 s here); a
    contract that calls process.exit() after setting its output ends at once, in both."""
    startup = phatjs_startup(tmp_path)
    base = {"base": mock_llm.base_url}
    aborted = script(tmp_path, "aborted", ABORTED)
    mock_llm.fail_next(None, delay=PROVIDER_DELAY)
    kit = run_kit(aborted, base)
    mock_llm.fail_next(None, delay=PROVIDER_DELAY)
    phala = run_phatjs(aborted, base)
    assert same_answer(kit, phala).body == "rejected AbortError"
    assert min(kit.seconds, phala.seconds) >= PROVIDER_DELAY - 0.1, (kit.seconds, phala.seconds)

    exits = script(tmp_path, "exits", EXITS)
    mock_llm.fail_next(None, delay=PROVIDER_DELAY)
    kit = run_kit(exits, base)
    mock_llm.fail_next(None, delay=PROVIDER_DELAY)
    phala = run_phatjs(exits, base)
    assert (same_answer(kit, phala).status, kit.body) == (202, "left early")
    assert kit.seconds < 1.5 and phala.seconds < startup + 1.5, (kit.seconds, phala.seconds)


LATE_OUTPUT = """
setTimeout(() => Promise.resolve(scriptArgs[0]).then((arg) => {
  scriptOutput = JSON.stringify([arg, typeof Wapo, typeof fetch, typeof process]);
}), 30);
"""


def test_the_direct_runner_prints_what_phat_fn_run_prints(tmp_path: Path, template: Contract,
                                                         mock_llm) -> None:
    """run_phat_fn (tests/fixtures/phatjs_run.cjs) skips only the CLI's start-up: for an output
    set after a timer and a promise, and for the template's signed answer, it gives exactly
    what `phat-fn run --experimentalAsync` gives."""
    late = script(tmp_path, "late", LATE_OUTPUT)
    for contract, request in ((late, "argument ✓"),
                              (template.phala, json.dumps(post({"prompt": "hi"})))):
        direct, _ = run_phat_fn(contract, request, timeout=RUN_TIMEOUT)
        cli, _ = run_phat_fn_cli(contract, request, timeout=RUN_TIMEOUT)
        assert direct == cli and direct is not None
    assert json.loads(direct)["status"] == 200
    assert len(mock_llm.requests) == 2


# ---- the globals a contract sees ----------------------------------------------------------

LIST_GLOBALS = "scriptOutput = JSON.stringify({status: 200, body: " \
               "JSON.stringify(Object.getOwnPropertyNames(globalThis).sort())});"

# What the real worker's boot code defines (phat-quickjs WapoJS/bootcode/js/src/wapo.js,
# polyfill-*.js, index.ts; host objects from WapoJS/src/host_functions.rs), restated: used to
# accept globals that the older phatjs build lacks but the worker provides.
WAPOJS_GLOBALS = {
    "Wapo", "setTimeout", "setInterval", "clearTimeout", "clearInterval", "setImmediate",
    "console", "print", "btoa", "atob", "global", "window", "SCALE", "process", "performance",
    "localStorage", "scriptLogs", "Event", "EventTarget", "DOMException", "TextEncoder",
    "TextDecoder", "fetch", "Headers", "FormData", "Request", "Response", "URL",
    "URLSearchParams", "AbortController", "AbortSignal", "Blob", "WebSocket", "ReadableStream",
    "scriptArgs",
}
# Engine built-ins of the newer QuickJS in phatjs that the kit's older engine lacks (not
# globals the kit adds, so never a reason for a contract to fail in production).
ENGINE_ONLY_IN_PHATJS = {"WeakRef", "FinalizationRegistry"}


def test_every_global_of_the_kit_exists_in_the_real_runtime(tmp_path: Path) -> None:
    lister = script(tmp_path, "globals", LIST_GLOBALS)
    kit = set(json.loads(run_kit(lister, "{}").body))
    phala = set(json.loads(run_phatjs(lister, "{}").body))
    extra = kit - phala - WAPOJS_GLOBALS
    assert extra == set(), f"the kit offers globals Phala's runtimes lack: {sorted(extra)}"
    assert not {name for name in kit if name.startswith("__")}, "internals leak"
    assert "crypto" not in kit and "crypto" not in phala
    # and what contracts commonly need is present in both
    for name in ("fetch", "setTimeout", "TextEncoder", "URL", "AbortController", "process"):
        assert name in kit and name in phala, name
    assert phala - kit - ENGINE_ONLY_IN_PHATJS, "sanity: phatjs offers extras (Blob, ...)"
