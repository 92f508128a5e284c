"""The local runtime: gen-1 protocol, output mapping, fetch/timers, faults, concurrency, `kit run`.

Real QuickJS, real HTTP servers on 127.0.0.1. Expected values come from the protocol text in
REFERENCE section 1 and from what the stub servers recorded, never from the runtime itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import aleph_cid
import pytest

from kit.errors import InputError
from kit.local.runtime import Invocation, Limits, invoke, make_request

KEY = bytes(range(32))
GEN1_WRAPPER = """
main.apply(null, globalThis.scriptArgs).then(
  (output) => { globalThis.scriptOutput = output; },
  (error) => {
    globalThis.scriptOutput = JSON.stringify({ success: false, error: String(error) });
  },
);
"""


def run(code: str, request: dict[str, Any] | None = None, **limits: Any) -> Invocation:
    return invoke(code, request or make_request("GET", "/ipfs/test"),
                  limits=Limits(**limits), worker_key=KEY)


def body_json(answer: Invocation) -> Any:
    return json.loads(answer.body)


# ---- a tiny HTTP stub on 127.0.0.1 ---------------------------------------------------------


@dataclass
class Stub:
    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    stub: Stub
    stop: threading.Event

    def log_message(self, *args: Any) -> None:
        pass

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        entry = {"method": self.command, "path": self.path,
                 "headers": {k.lower(): v for k, v in self.headers.items()}, "body": raw}
        self.stub.requests.append(entry)
        return entry

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _answer(self) -> None:
        entry = self._record()
        parts = urlsplit(self.path)
        if parts.path == "/slow":
            self.stop.wait(int(parse_qs(parts.query)["ms"][0]) / 1000)
            self._send(200, b"late", {"Content-Type": "text/plain"})
        elif parts.path == "/bytes":
            self._send(200, bytes([0xFF, 0x00, 0x80, 0x41]),
                       {"Content-Type": "application/octet-stream"})
        elif parts.path == "/v1/chat/completions":
            self._openai(entry)
        else:
            echo = {"method": entry["method"], "path": entry["path"],
                    "body": entry["body"].decode("utf-8", "replace")}
            self._send(201, json.dumps(echo).encode(), {"Content-Type": "application/json",
                                                        "X-Stub": "yes"})

    def _openai(self, entry: dict[str, Any]) -> None:
        if entry["headers"].get("authorization") != "Bearer test-key-123":
            self._send(401, b'{"error": {"message": "Incorrect API key"}}',
                       {"Content-Type": "application/json"})
            return
        prompt = json.loads(entry["body"])["messages"][-1]["content"]
        answer = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": f"echo: {prompt}"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
        self._send(200, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    do_GET = do_POST = do_PUT = do_PATCH = _answer


@pytest.fixture
def stub() -> Iterator[Stub]:
    stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    record = Stub(url=f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = type("Handler", (_Handler,), {"stub": record, "stop": stop})
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield record
    stop.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


# ---- the serialized request ----------------------------------------------------------------


def test_make_request_follows_the_gen1_shape() -> None:
    request = make_request(
        "post", "/ipfs/Qm/sub/path", [("key", "k1"), ("q", "a"), ("q", "b")],
        [("X-Api", "1"), ("Accept", "a"), ("accept", "b")], '{"x": 1}', {"apiKey": "s"},
    )
    assert request == {
        "method": "POST", "path": "/ipfs/Qm/sub/path",
        "queries": {"key": ["k1"], "q": ["a", "b"]},
        "headers": {"x-api": "1", "accept": "a, b"},
        "body": '{"x": 1}', "secret": {"apiKey": "s"},
    }


def test_make_request_sends_a_body_only_for_post_patch_put() -> None:
    assert "body" not in make_request("GET", "/ipfs/x", body="ignored")
    assert make_request("PUT", "/ipfs/x")["body"] == ""
    assert make_request("PATCH", "/ipfs/x", body=b"\xffok")["body"] == "\ufffdok"
    assert "secret" not in make_request("GET", "/ipfs/x")


@pytest.mark.parametrize("method, path, fragment", [
    ("DELETE", "/ipfs/x", "use one of GET, POST, PATCH, PUT"),
    ("GET", "ipfs/x", "must start with '/'"),
])
def test_make_request_rejects_what_the_protocol_cannot_carry(method: str, path: str,
                                                             fragment: str) -> None:
    with pytest.raises(InputError, match=fragment):
        make_request(method, path)


def test_script_args_hold_exactly_the_serialized_request() -> None:
    request = make_request("POST", "/ipfs/x/y", [("a", "1"), ("a", "2")], {"X-H": "v"}, "ü\u2028",
                           {"k": "v"})
    answer = run("scriptOutput = JSON.stringify({body: JSON.stringify({n: scriptArgs.length, "
                 "arg: scriptArgs[0]})})", request)
    got = body_json(answer)
    assert got["n"] == 1
    assert json.loads(got["arg"]) == request


# ---- output mapping (REFERENCE section 1) --------------------------------------------------


@pytest.mark.parametrize("output, status, body, headers", [
    ('{"status": 201, "body": "made", "headers": {"x-a": "b"}}', 201, "made", {"x-a": "b"}),
    ("{}", 200, "", {}),
    ('{"body": "only body"}', 200, "only body", {}),
    ("", 200, "", {}),
])
def test_output_mapping_defaults(output: str, status: int, body: str,
                                 headers: dict[str, str]) -> None:
    answer = run(f"scriptOutput = {json.dumps(output)};")
    got = (answer.status, answer.body, answer.headers, answer.error)
    assert got == (status, body, headers, None)


def test_success_false_becomes_500_with_the_contracts_error() -> None:
    output = '{"success": false, "error": "provider said no"}'
    answer = run(f"scriptOutput = {json.dumps(output)};")
    assert answer.status == 500
    assert json.loads(answer.body) == {"success": False, "error": "provider said no"}
    assert "provider said no" in answer.error


@pytest.mark.parametrize("js_output, fragment", [
    ("'not json'", "is not JSON"),
    ("'[1, 2]'", "must be a JSON object"),
    ("'42'", "must be a JSON object"),
    ("({status: 200})", "is not JSON"),
    ("JSON.stringify({status: '200'})", "status must be an integer"),
    ("JSON.stringify({status: true})", "status must be an integer"),
    ("JSON.stringify({status: 99})", "status must be an integer"),
    ("JSON.stringify({body: 5})", "body must be a string"),
    ("JSON.stringify({headers: {a: 1}})", "headers must be an object of string values"),
    ("JSON.stringify({headers: []})", "headers must be an object of string values"),
])
def test_wrong_output_is_a_500_invalid_output(js_output: str, fragment: str) -> None:
    answer = run(f"scriptOutput = {js_output};")
    assert answer.status == 500
    assert answer.headers == {"content-type": "application/json"}
    error = body_json(answer)["error"]
    assert error["code"] == "invalid_output" and fragment in error["message"]
    assert answer.error.startswith("invalid_output")


def test_uint8array_output_is_read_as_utf8() -> None:
    answer = run("scriptOutput = new TextEncoder().encode(JSON.stringify({body: 'bytes ✓'}));")
    assert (answer.status, answer.body) == (200, "bytes ✓")


def test_last_expression_is_the_output_when_scriptoutput_is_unset() -> None:
    answer = run("JSON.stringify({status: 202, body: 'sync'})")
    assert (answer.status, answer.body) == (202, "sync")


# ---- async main, fetch, timers ---------------------------------------------------------------


def test_async_main_fetches_from_a_local_server(stub: Stub) -> None:
    code = f"""
    async function main(raw) {{
      const res = await fetch("{stub.url}/echo?x=1", {{
        method: "POST", headers: {{"X-Test": "t1", "Content-Type": "application/json"}},
        body: JSON.stringify({{hello: "wörld"}}),
      }});
      const data = await res.json();
      return JSON.stringify({{status: 200, body: JSON.stringify({{
        status: res.status, ok: res.ok, stub: res.headers.get("x-stub"),
        has: res.headers.has("X-STUB"), type: res.headers.get("Content-Type"), data }})}});
    }}
    """ + GEN1_WRAPPER
    answer = run(code)
    assert answer.error is None, answer.logs
    got = body_json(answer)
    assert got["status"] == 201 and got["ok"] is True
    assert got["stub"] == "yes" and got["has"] is True and got["type"] == "application/json"
    assert got["data"] == {"method": "POST", "path": "/echo?x=1", "body": '{"hello":"wörld"}'}
    (received,) = stub.requests
    assert received["headers"]["x-test"] == "t1"
    assert json.loads(received["body"]) == {"hello": "wörld"}


def test_fetch_bytes_and_text_of_a_binary_answer(stub: Stub) -> None:
    code = f"""
    fetch("{stub.url}/bytes").then(r => r.arrayBuffer()).then(buf => {{
      scriptOutput = JSON.stringify({{body: JSON.stringify(Array.from(new Uint8Array(buf)))}});
    }});
    """
    assert json.loads(run(code).body) == [0xFF, 0x00, 0x80, 0x41]


def test_fetch_times_out_with_a_type_error(stub: Stub) -> None:
    code = f"""
    fetch("{stub.url}/slow?ms=4000").then(
      () => {{ scriptOutput = JSON.stringify({{body: "answered"}}); }},
      (e) => {{ scriptOutput = JSON.stringify({{body: e.name + ": " + e.message}}); }});
    """
    answer = run(code, fetch_timeout=0.5)
    assert answer.body.startswith("TypeError: fetch failed: no answer within 0.5 s")
    assert answer.duration_ms < 3500


def test_abort_controller_rejects_a_pending_fetch(stub: Stub) -> None:
    code = f"""
    const results = [];
    const ctrl = new AbortController();
    const pending = fetch("{stub.url}/slow?ms=4000", {{signal: ctrl.signal}})
      .catch(e => results.push(["pending", e.name, ctrl.signal.aborted]));
    setTimeout(() => ctrl.abort(), 50);
    const early = fetch("{stub.url}/echo", {{signal: AbortSignal.abort()}})
      .catch(e => results.push(["early", e.name]));
    const custom = new AbortController();
    custom.abort(new Error("mine"));
    const reasoned = fetch("{stub.url}/echo", {{signal: custom.signal}})
      .catch(e => results.push(["reason", e.message]));
    Promise.all([pending, early, reasoned]).then(() => {{
      scriptOutput = JSON.stringify({{body: JSON.stringify(results)}});
    }});
    """
    answer = run(code)
    assert sorted(json.loads(answer.body)) == [["early", "AbortError"],
                                               ["pending", "AbortError", True],
                                               ["reason", "mine"]]
    # the aborted request still runs to its end, as in Phala's runtime (phatjs waits for it;
    # tests/test_phatjs_differential.py): the run lasts the 4 s the stub takes
    assert answer.duration_ms >= 3900
    assert all(r["path"] != "/echo" for r in stub.requests)


def test_fetch_failures_reject_with_type_errors(stub: Stub) -> None:
    closed = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    closed_port = closed.server_address[1]
    closed.server_close()
    code = f"""
    const attempts = [
      fetch("ftp://127.0.0.1/file"),
      fetch("http://127.0.0.1:{closed_port}/"),
      fetch("{stub.url}/echo", {{headers: {{"X-Bad": "line\\nbreak"}}}}),
      fetch("not a url"),
    ];
    Promise.allSettled(attempts).then(results => {{
      scriptOutput = JSON.stringify({{body: JSON.stringify(results.map(r => [r.status,
        r.reason && r.reason.name, r.reason && r.reason.message]))}});
    }});
    """
    results = json.loads(run(code).body)
    assert [r[:2] for r in results] == [["rejected", "TypeError"]] * 4
    assert "http and https URLs only" in results[0][2]
    assert results[1][2] == "fetch failed: ConnectionError"
    assert results[2][2].startswith("fetch failed")
    assert "Invalid URL" in results[3][2]


def test_timers_and_microtasks_run_in_order() -> None:
    code = """
    const seen = [];
    setTimeout(() => seen.push("t30"), 30);
    setTimeout(() => seen.push("t0a"), 0);
    setTimeout((a, b) => seen.push("t10:" + a + b), 10, "x", "y");
    setTimeout(() => seen.push("t0b"), 0);
    const cancelled = setTimeout(() => seen.push("never"), 5);
    clearTimeout(cancelled);
    let ticks = 0;
    const iv = setInterval(() => {
      seen.push("iv" + (++ticks));
      if (ticks === 3) clearInterval(iv);
    }, 1);
    Promise.resolve().then(() => seen.push("micro"));
    queueMicrotask(() => seen.push("micro2"));
    seen.push("sync");
    setTimeout(() => { scriptOutput = JSON.stringify({body: JSON.stringify(seen)}); }, 60);
    """
    seen = json.loads(run(code).body)
    assert seen[:4] == ["sync", "micro", "micro2", "t0a"]
    assert [s for s in seen if s.startswith("t")] == ["t0a", "t0b", "t10:xy", "t30"]
    assert [s for s in seen if s.startswith("iv")] == ["iv1", "iv2", "iv3"]
    assert "never" not in seen


def test_console_is_captured_and_bounded() -> None:
    code = """
    console.log("a", 1, {b: [2]}); console.info("i"); console.warn("w");
    console.error(new Error("e"));
    console.info(null, undefined, 3n);
    for (let i = 0; i < 1500; i++) console.log("line", i);
    scriptOutput = "";
    """
    logs = run(code).logs
    assert logs[:3] == ['[log] a 1 {"b":[2]}', "[info] i", "[warn] w"]
    assert logs[3].startswith("[error] Error: e")
    assert logs[4] == "[info] null undefined 3n"
    assert len(logs) == 1001 and "log limit of 1000 entries" in logs[-1]


def test_console_has_no_debug_as_in_phalas_runtime() -> None:
    # WapoJS's console and phatjs (@phala/fn 0.2.22) offer log, info, warn and error only: a
    # contract calling console.debug must fail here as it would in production.
    answer = run("console.debug('x'); scriptOutput = '';")
    assert answer.status == 500 and "TypeError: not a function" in answer.body


# ---- faults --------------------------------------------------------------------------------

FAULTS = {
    "throw": ("throw new Error('boom')", "uncaught_exception"),
    "throw null": ("throw null", "uncaught_exception"),
    "unhandled rejection": ("(async () => { throw new Error('rejected'); })()", "no_output"),
    "gen1 rejection": ("async function main() { throw new Error('inside main'); }" + GEN1_WRAPPER,
                       "contract_error"),
    "sync infinite loop": ("for (;;) {}", "timeout"),
    "loop in a timer": ("setTimeout(() => { for (;;) {} }, 1)", "timeout"),
    "loop in a promise job": ("Promise.resolve().then(() => { for (;;) {} })", "timeout"),
    "never settling promise": ("new Promise(() => {}).then(() => { scriptOutput = '{}'; })",
                               "no_output"),
    "interval that never ends": ("setInterval(() => {}, 5)", "timeout"),
    "memory bomb": ("const hog = []; for (;;) hog.push(new Array(100000).fill(1.5));",
                    "memory_limit"),
    "string bomb": ("let s = 'x'; for (;;) s += s;", "memory_limit"),
    "object bomb": ("const objs = []; for (;;) objs.push({a: [1, 2, 3]});", "memory_limit"),
    "deep recursion": ("function down(n) { return down(n + 1) + 1; } down(0);", "stack_overflow"),
    "non-JSON output": ("scriptOutput = 'oops'", "invalid_output"),
    "syntax error": ("function (", "uncaught_exception"),
}


@pytest.mark.parametrize("name", FAULTS)
def test_every_fault_is_a_500_json_answer_within_the_limit(name: str) -> None:
    code, expected = FAULTS[name]
    answer = run(code, time_seconds=2, memory_bytes=32 * 2**20)
    assert answer.status == 500
    assert answer.headers == {"content-type": "application/json"}
    if expected == "contract_error":
        assert body_json(answer) == {"success": False, "error": "Error: inside main"}
    else:
        assert body_json(answer)["error"]["code"] == expected
    assert answer.error.startswith(expected)
    assert answer.duration_ms < 2000 + 1500
    # the process survived and serves the next invocation normally
    assert run("scriptOutput = JSON.stringify({body: 'fine'})").body == "fine"


def test_uncaught_exception_is_logged_with_its_stack() -> None:
    answer = run("function f() { throw new TypeError('bad arg'); }\nf();")
    assert body_json(answer)["error"]["message"] == "TypeError: bad arg"
    assert answer.logs[0].startswith("[error] Uncaught TypeError: bad arg")


def test_output_set_before_the_time_limit_wins() -> None:
    answer = run("scriptOutput = JSON.stringify({body: 'done'}); setInterval(() => {}, 5);",
                 time_seconds=1)
    assert (answer.status, answer.body) == (200, "done")
    assert "time limit reached after scriptOutput was set" in answer.logs[-1]


def test_faults_do_not_crash_the_host_process() -> None:
    """The fault battery in a child process: a segfault would show as a negative exit code."""
    script = textwrap.dedent(f"""
        from kit.local.runtime import Limits, invoke, make_request
        codes = {[code for code, _ in FAULTS.values()]!r}
        for code in codes:
            answer = invoke(code, make_request("GET", "/ipfs/x"),
                            limits=Limits(time_seconds=1, memory_bytes=16 * 2**20),
                            worker_key=bytes(32))
            assert answer.status == 500, (code, answer)
        print("survived", len(codes))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"survived {len(FAULTS)}"


def test_parallel_invocations_from_8_threads() -> None:
    good = ("scriptOutput = JSON.stringify({body: JSON.parse(scriptArgs[0]).queries.n[0] + ':' + "
            "Array.from(Wapo.hash('sha256', 'x')).length})")

    def one(i: int) -> tuple[int, Invocation]:
        code = "for (;;) {}" if i % 4 == 0 else good
        request = make_request("GET", "/ipfs/x", [("n", str(i))])
        return i, invoke(code, request, limits=Limits(time_seconds=2), worker_key=KEY)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(one, range(24)))
    for i, answer in results:
        if i % 4 == 0:
            assert body_json(answer)["error"]["code"] == "timeout"
        else:
            assert (answer.status, answer.body) == (200, f"{i}:32")


# ---- a contract in the shape of Phala's published gen-1 OpenAI template -------------------

PHALA_SHAPED = """
class Request {
  constructor(raw) {
    this.body = raw.body; this.queries = raw.queries; this.headers = raw.headers;
    this.method = raw.method; this.path = raw.path; this.secret = raw.secret;
  }
  async json() { return JSON.parse(this.body); }
}
class Response {
  constructor(body, options) {
    this.status = (options && options.status) || 200;
    this.body = body;
    this.headers = Object.assign({"Content-Type": "application/json",
                                  "Access-Control-Allow-Origin": "*"}, options && options.headers);
  }
}
async function route(config, request) {
  const raw = JSON.parse(request);
  const req = new Request(raw);
  let response;
  if (raw.method === "GET" && config.GET) response = await config.GET(req);
  else if (raw.method === "POST" && config.POST) response = await config.POST(req);
  else { response = new Response("Not Found"); response.status = 404; }
  return JSON.stringify(response);
}
async function ask(req, query, model) {
  const apiKey = req.secret && req.secret.openaiApiKey;
  const res = await fetch("__BASE__/v1/chat/completions", {
    method: "POST",
    headers: {"Authorization": `Bearer ${apiKey}`, "Content-Type": "application/json"},
    body: JSON.stringify({model, messages: [{role: "user", content: query}]}),
  });
  const completion = await res.json();
  if (!res.ok) {
    return new Response(JSON.stringify({error: completion.error.message}), {status: res.status});
  }
  return new Response(JSON.stringify({message: completion.choices[0].message.content, model}));
}
async function GET(req) {
  const model = req.queries.openAiModel ? req.queries.openAiModel[0] : "gpt-4o";
  return ask(req, req.queries.chatQuery[0], model);
}
async function POST(req) {
  const payload = await req.json();
  return ask(req, payload.chatQuery, payload.openAiModel || "gpt-4o");
}
async function main(request) { return await route({GET, POST}, request); }
main.apply(null, globalThis.scriptArgs).then(result => globalThis.scriptOutput = result);
"""


def test_phala_shaped_openai_contract_runs_unmodified(stub: Stub) -> None:
    code = PHALA_SHAPED.replace("__BASE__", stub.url)
    secret = {"openaiApiKey": "test-key-123"}
    get = invoke(code, make_request("GET", "/ipfs/Qm", [("chatQuery", "hi there"),
                                                        ("openAiModel", "gpt-4o-mini"),
                                                        ("key", "vaultkey")], secret=secret),
                 worker_key=KEY)
    assert get.status == 200, get
    assert get.headers == {"Content-Type": "application/json", "Access-Control-Allow-Origin": "*"}
    assert json.loads(get.body) == {"message": "echo: hi there", "model": "gpt-4o-mini"}
    sent = json.loads(stub.requests[-1]["body"])
    assert sent == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}]}

    post = invoke(code, make_request("POST", "/ipfs/Qm", body=json.dumps({"chatQuery": "post q"}),
                                     secret=secret), worker_key=KEY)
    assert json.loads(post.body) == {"message": "echo: post q", "model": "gpt-4o"}

    no_key = invoke(code, make_request("GET", "/ipfs/Qm", [("chatQuery", "x")]), worker_key=KEY)
    assert no_key.status == 401 and json.loads(no_key.body) == {"error": "Incorrect API key"}

    put = invoke(code, make_request("PUT", "/ipfs/Qm"), worker_key=KEY)
    assert (put.status, put.body) == (404, "Not Found")


# ---- kit run -------------------------------------------------------------------------------

ECHO_CONTRACT = """
async function main(raw) {
  const req = JSON.parse(raw);
  console.log("secret is", req.secret ? req.secret.apiKey : "none");
  if (req.queries.fail) throw new Error("asked to fail");
  return JSON.stringify({status: 200, headers: {"content-type": "application/json"},
    body: JSON.stringify({method: req.method, path: req.path, queries: req.queries,
      headers: req.headers, body: req.body, secretKeys: Object.keys(req.secret || {})})});
}
""" + GEN1_WRAPPER


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "agent.toml").write_text('[agent]\nname = "echo-agent"\n')
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / "agent.js").write_text(ECHO_CONTRACT)
    return tmp_path


def kit_run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_DATA_HOME=str(project / "data-home"))
    return subprocess.run([sys.executable, "-m", "kit", "run", "-C", str(project), *args],
                          capture_output=True, text=True, timeout=60, env=env, check=False)


def test_kit_run_builds_the_request_and_hides_secrets(project: Path) -> None:
    done = kit_run(project, "--method", "post", "--query", "q=1", "--query", "q=2",
                   "--header", "X-Mixed-Case=v", "--body", '{"x": 1}',
                   "--secret", "apiKey=test-very-secret", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    echoed = json.loads(result["body"])
    expected_cid = aleph_cid.compute_cid((project / "dist" / "agent.js").read_bytes())
    assert echoed == {"method": "POST", "path": f"/ipfs/{expected_cid}",
                      "queries": {"q": ["1", "2"]}, "headers": {"x-mixed-case": "v"},
                      "body": '{"x": 1}', "secretKeys": ["apiKey"]}
    assert result["logs"] == ["[log] secret is ***"]
    assert "test-very-secret" not in done.stdout + done.stderr
    key_file = project / "data-home" / "agent-contract-kit" / "worker.key"
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_kit_run_human_output_and_failure_exit(project: Path) -> None:
    ok = kit_run(project, "--path", "/ipfs/custom/sub")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("status: 200\nheaders:\n  content-type: application/json\nbody:\n")
    assert '"path":"/ipfs/custom/sub"' in ok.stdout
    failed = kit_run(project, "--query", "fail=1")
    assert failed.returncode == 1
    assert "status: 500" in failed.stdout
    assert "error: the contract failed: contract_error: Error: asked to fail" in failed.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--query", "novalue"], "--query #1 must look like NAME=VALUE"),
    (["--secret", "apiKey=ok", "--secret", "hunter2-no-equals"], "--secret #2 must look like"),
    (["--body", "{}"], "--body is only sent with POST, PATCH, PUT"),
    (["--method", "DELETE"], "method 'DELETE' is not part of the gen-1 protocol"),
])
def test_kit_run_rejects_bad_input(project: Path, args: list[str], fragment: str) -> None:
    before = (project / "dist" / "agent.js").read_bytes()
    done = kit_run(project, *args)
    assert done.returncode == 2
    assert fragment in done.stderr
    assert "hunter2" not in done.stderr  # a mistyped secret is never echoed
    assert done.stdout == ""
    assert (project / "dist" / "agent.js").read_bytes() == before


def test_kit_run_without_a_build_says_to_build(project: Path) -> None:
    (project / "dist" / "agent.js").unlink()
    done = kit_run(project)
    assert done.returncode == 2
    assert "run `kit build" in done.stderr


# ---- hardening (issue 9): the host never depends on what the contract can change ----------

REPLACED_GLOBALS = """
JSON.stringify = () => { throw new Error("replaced stringify"); };
JSON.parse = () => ({ kind: "forged" });
globalThis.String = () => "forged";
globalThis.Uint8Array = function () {};
console.log("still logged");
setTimeout(() => {
  scriptOutput = '{"status": 201, "body": "answered", "headers": {"x-after": "yes"}}';
}, 1);
"""


def test_contract_replacing_json_and_other_globals_still_gets_its_answer() -> None:
    answer = run(REPLACED_GLOBALS, time_seconds=5)
    assert (answer.status, answer.body, answer.headers) == (201, "answered", {"x-after": "yes"})
    assert answer.logs == ["[log] still logged"]


def test_replaced_json_with_a_non_string_output_is_a_clean_invalid_output() -> None:
    answer = run("JSON.stringify = () => 42; JSON.parse = () => null; scriptOutput = {a: 1};")
    assert answer.status == 500
    assert body_json(answer)["error"]["code"] == "invalid_output"


def test_kit_run_with_replaced_json_answers_without_a_traceback(project: Path) -> None:
    (project / "dist" / "agent.js").write_text(REPLACED_GLOBALS)
    done = kit_run(project, "--json")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(done.stdout)["body"] == "answered"


LOOPING_GETTER = ("Object.defineProperty(globalThis, 'scriptOutput', "
                  "{ get() { for (;;) {} }, configurable: true });")


@pytest.mark.parametrize("extra", ["", "setInterval(() => {}, 5);"])
def test_a_looping_output_getter_is_stopped_at_the_time_limit(extra: str) -> None:
    answer = run(LOOPING_GETTER + extra, time_seconds=1)
    assert body_json(answer)["error"]["code"] == "timeout"
    assert answer.duration_ms < 1000 + 700


@pytest.mark.parametrize("status", [100, 101, 103, 199])
def test_interim_statuses_are_refused_as_final_answers(status: int) -> None:
    # RFC 9110 15.2: 1xx are interim responses, never the final answer to a request
    answer = run(f"scriptOutput = JSON.stringify({{status: {status}, body: 'x'}})")
    assert answer.status == 500
    assert body_json(answer)["error"]["code"] == "invalid_output"
    assert "200-599" in body_json(answer)["error"]["message"]
    assert run("scriptOutput = JSON.stringify({status: 200, body: 'x'})").status == 200


# RFC 9110 5.6.2 (token) and 5.5 (field values: VCHAR, obs-text, SP, HTAB)
BAD_HEADERS = {
    "CRLF in a value": ("x-a", "1\r\nSet-Cookie: stolen=1"),
    "LF in a value": ("x-a", "1\nx-b: 2"),
    "CR in a value": ("x-a", "1\r"),
    "NUL in a value": ("x-a", "a\u0000b"),
    "other control in a value": ("x-a", "a\u0007b"),
    "outside latin-1": ("x-a", "price \u20ac"),
    "lone surrogate": ("x-a", "\udc00"),
    "CRLF in a name": ("x-a\r\nx-b", "1"),
    "space in a name": ("x a", "1"),
    "colon in a name": ("x:a", "1"),
    "empty name": ("", "1"),
    "non-ASCII name": ("x-\u00e9", "1"),
}


@pytest.mark.parametrize("case", BAD_HEADERS)
def test_headers_that_cannot_be_written_are_refused(case: str) -> None:
    name, value = BAD_HEADERS[case]
    output = json.dumps({"status": 200, "body": "x", "headers": {name: value}})
    answer = run(f"scriptOutput = {json.dumps(output)};")
    assert answer.status == 500
    assert answer.headers == {"content-type": "application/json"}
    assert body_json(answer)["error"]["code"] == "invalid_output"


def test_latin1_header_values_and_token_names_pass() -> None:
    headers = {"x-caf\u00e9": "no"}  # a non-token name
    good = {"X-Custom_1.v~": "caf\u00e9\tok !#", "content-type": "text/plain"}
    answer = run(f"scriptOutput = {json.dumps(json.dumps({'body': 'x', 'headers': good}))};")
    assert (answer.status, answer.headers) == (200, good)
    assert run(f"scriptOutput = {json.dumps(json.dumps({'headers': headers}))};").status == 500


@pytest.mark.parametrize("code", [
    r"scriptOutput = JSON.stringify({body: 'a\ud800b'});",  # escaped by JSON.stringify
    r"scriptOutput = '{\"body\": \"' + 'a\ud800' + '\"}';",  # a raw lone surrogate
    r"'a\udfff';",  # the completion value as the output
])
def test_lone_surrogates_in_the_output_are_a_clean_invalid_output(code: str) -> None:
    answer = run(code)
    assert answer.status == 500
    assert body_json(answer)["error"]["code"] == "invalid_output"
    assert "surrogate" in body_json(answer)["error"]["message"]
    answer.body.encode("utf-8")  # what the gateway writes


def test_lone_surrogates_in_logs_and_contract_errors_become_replacement_characters() -> None:
    answer = run(r"console.log('a\ud800b'); "
                 r"scriptOutput = JSON.stringify({success: false, error: 'bad\udc00'});")
    assert answer.logs == ["[log] a\ufffdb"]
    assert answer.error == "contract_error: bad\ufffd"
    assert answer.body.encode("utf-8")


# ---- the time limit is wall-clock time, per invocation ----------------------------------------

WAITS_1200_MS = ("setTimeout(() => { scriptOutput = JSON.stringify({body: 'waited'}); }, 1200);")


def test_wall_clock_limit_under_concurrent_busy_invocations() -> None:
    """Busy loops in four threads burn about two cores of process CPU time: a CPU-time limit
    stops them early and cuts the waiting invocations short; each must get its own wall time."""
    def one(i: int) -> Invocation:
        if i < 4:
            return run("for (;;) {}", time_seconds=1.5)
        return run(WAITS_1200_MS, time_seconds=2)

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(one, range(6)))
    for answer in answers[:4]:
        assert body_json(answer)["error"]["code"] == "timeout"
        assert 1450 <= answer.duration_ms < 1500 + 1000
    for answer in answers[4:]:
        assert (answer.status, answer.body) == (200, "waited")


STARVED_CHILD = """
import json, os, sys, time
os.sched_setaffinity(0, {cpu})
from kit.local.runtime import Limits, invoke, make_request
started = time.monotonic()
answer = invoke("while (true) {{}}", make_request("GET", "/ipfs/x"),
                limits=Limits(time_seconds=1), worker_key=bytes(32))
print(json.dumps([answer.status, answer.body, time.monotonic() - started]))
"""
HOG = "import os, time\nos.sched_setaffinity(0, {cpu})\nend = time.time() + 20\nwhile time.time() < end: pass\n"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_wall_clock_limit_when_the_process_gets_a_third_of_a_core() -> None:
    """Two CPU hogs share the child's only core: its process CPU clock runs at about a third of
    wall time, so a CPU-time limit of 1 s would end near 3 s of wall time."""
    cpu = {min(os.sched_getaffinity(0))}
    hogs = [subprocess.Popen([sys.executable, "-c", HOG.format(cpu=cpu)]) for _ in range(2)]
    try:
        done = subprocess.run([sys.executable, "-c", STARVED_CHILD.format(cpu=cpu)],
                              capture_output=True, text=True, timeout=30, check=False)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    status, body, wall = json.loads(done.stdout)
    assert status == 500 and json.loads(body)["error"]["code"] == "timeout"
    assert wall < 1.0 + 0.8


# ---- a fetch is bounded as a whole: connect, headers and body --------------------------------

class _Dripper(BaseHTTPRequestHandler):
    """Sends its answer one byte every 100 ms: in the headers, or in the body."""

    stop: threading.Event

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        body = b"x" * 60
        head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body))
        dripped = head if self.path == "/headers" else body
        if self.path != "/headers":
            self.wfile.write(head)
            self.wfile.flush()
        try:
            for i in range(len(dripped)):
                if self.stop.wait(0.1):
                    return
                self.wfile.write(dripped[i:i + 1])
                self.wfile.flush()
            if self.path == "/headers":
                self.wfile.write(body)
        except OSError:
            return


@pytest.fixture
def dripper() -> Iterator[str]:
    stop = threading.Event()
    server = ThreadingHTTPServer(("127.0.0.1", 0), type("D", (_Dripper,), {"stop": stop}))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    stop.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.parametrize("where", ["/body", "/headers"])
def test_a_dripping_server_ends_in_the_fetch_timeout_error(dripper: str, where: str) -> None:
    code = f"""
    fetch("{dripper}{where}").then((r) => r.text()).then(
      (text) => {{ scriptOutput = JSON.stringify({{body: "got " + text.length}}); }},
      (e) => {{ scriptOutput = JSON.stringify({{status: 504, body: e.name + ": " + e.message}}); }});
    """
    answer = run(code, time_seconds=4, fetch_timeout=1)
    assert (answer.status, answer.body) == (504, "TypeError: fetch failed: no answer within 1.0 s")
    assert answer.duration_ms < 1000 + 800


def test_a_binding_without_the_expected_limit_word_fails_closed(monkeypatch) -> None:
    """If the binding's interrupt data cannot be found (another version or platform), the
    runtime refuses to run rather than run without a time limit."""
    import kit.local.runtime as runtime
    from kit.errors import ExternalError

    monkeypatch.setattr(runtime, "_limit_offset", None)
    monkeypatch.setattr(runtime, "_CLOCKS_PER_SEC", 1000)  # the probe then matches no field
    with pytest.raises(ExternalError, match="install the quickjs version pinned"):
        run("scriptOutput = ''")
