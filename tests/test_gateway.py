"""The local gateway through real HTTP on 127.0.0.1, contracts run by the real QuickJS runtime.

Contracts reach the gateway as a project build (`dist/agent.js`), whose CID is computed by an
independent implementation (aleph-cid), or through a real IPFS node. The echo contract answers
the serialized request it received, so each protocol rule is checked on what the contract saw.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from fixtures.ipfs_node import oracle_cid, reply, standin_http
from kit.local.runtime import Limits

TIMEOUT = 20  # seconds: far above every contract limit below, so a hang fails the test
SHORT = Limits(time_seconds=2.0, memory_bytes=32 * 2**20, fetch_timeout=2.0)

ECHO = """
async function main(raw) {
  const request = JSON.parse(raw);
  console.log("echo", request.method, request.path);
  return JSON.stringify({
    status: 200,
    body: JSON.stringify(request),
    headers: { "content-type": "application/json", "x-echo": "yes" },
  });
}
main.apply(null, globalThis.scriptArgs).then(
  (out) => { globalThis.scriptOutput = out; },
  (err) => { globalThis.scriptOutput = JSON.stringify({ success: false, error: String(err) }); },
);
"""

FAULTS = {
    "throw": 'throw new Error("boom");',
    "unhandled_rejection": 'Promise.reject(new Error("rejected"));',
    "async_rejection": (
        "async function main() { throw new Error('inside main'); }\n"
        "main().then((o) => { globalThis.scriptOutput = o; }, (e) => {"
        " globalThis.scriptOutput = JSON.stringify({ success: false, error: e.message }); });"
    ),
    "infinite_loop": "while (true) {}",
    "never_settles": "new Promise(() => {}).then(() => { globalThis.scriptOutput = '{}'; });",
    "never_settles_with_interval": "setInterval(() => {}, 50);",
    "memory_bomb": (
        "const parts = []; while (true) { parts.push('x'.repeat(1 << 20) + parts.length); }"
    ),
    "not_json": 'globalThis.scriptOutput = "this is not json";',
}


def publish(project: Path, source: str, version: int = 0) -> str:
    """Put `source` at project/dist/agent.js; its CID by the independent oracle."""
    artifact = project / "dist" / "agent.js"
    artifact.parent.mkdir(parents=True, exist_ok=True)
    artifact.write_text(source, encoding="utf-8")
    return oracle_cid(source.encode("utf-8"), version)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return tmp_path / "contracts"


@pytest.fixture
def echo(project: Path, local_gateway_factory):
    """(gateway, cid) with the echo contract as the project build."""
    cid = publish(project, ECHO)
    return local_gateway_factory(project, limits=SHORT), cid


def seen(answer: requests.Response) -> dict:
    assert answer.status_code == 200, answer.text
    return json.loads(answer.text)


def store_secret(url: str, cid: str, data: dict) -> dict:
    answer = requests.post(f"{url}/vaults", json={"cid": cid, "data": data}, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def raw_http(url: str, request: bytes) -> bytes:
    """Send raw bytes and read the answer until the server closes or goes quiet."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ---- the serialized request ------------------------------------------------------------------


def test_queries_are_arrays_with_repeated_keys_and_key_kept(echo):
    gateway, cid = echo
    answer = requests.get(f"{gateway.url}/ipfs/{cid}?a=1&a=2&empty=&key=abc&sp=a+b%20c&u=%C3%A9",
                          timeout=TIMEOUT)
    request = seen(answer)
    assert request["queries"] == {"a": ["1", "2"], "empty": [""], "key": ["abc"],
                                  "sp": ["a b c"], "u": ["é"]}
    assert request["method"] == "GET"
    assert request["path"] == f"/ipfs/{cid}"
    assert "secret" not in request  # an unknown key is silently ignored
    assert answer.headers["x-echo"] == "yes"


def test_header_names_are_lowercased(echo):
    gateway, cid = echo
    request = seen(requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT,
                                headers={"X-Custom-Header": "Mixed Case Value"}))
    assert request["headers"]["x-custom-header"] == "Mixed Case Value"
    assert all(name == name.lower() for name in request["headers"])


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_body_is_passed_for_body_methods(echo, method):
    gateway, cid = echo
    body = '{"raw": "text", "unicode": "✓"}'
    request = seen(requests.request(method, f"{gateway.url}/ipfs/{cid}",
                                    data=body.encode(), timeout=TIMEOUT))
    assert request["method"] == method
    assert request["body"] == body


def test_body_methods_without_a_body_get_an_empty_string(echo):
    gateway, cid = echo
    assert seen(requests.post(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT))["body"] == ""


def test_get_never_carries_a_body(echo):
    gateway, cid = echo
    request = seen(requests.get(f"{gateway.url}/ipfs/{cid}", data=b"ignored", timeout=TIMEOUT))
    assert "body" not in request


def test_full_path_with_sub_path(echo):
    gateway, cid = echo
    request = seen(requests.get(f"{gateway.url}/ipfs/{cid}/sub/path?x=1", timeout=TIMEOUT))
    assert request["path"] == f"/ipfs/{cid}/sub/path"
    assert request["queries"] == {"x": ["1"]}


def test_cidv1_of_the_same_build_is_served(echo, project):
    gateway, _ = echo
    cid_v1 = oracle_cid(ECHO.encode(), 1)
    assert cid_v1.startswith("bafkrei")
    assert seen(requests.get(f"{gateway.url}/ipfs/{cid_v1}", timeout=TIMEOUT))["path"] == \
        f"/ipfs/{cid_v1}"


# ---- secrets -----------------------------------------------------------------------------------


def test_secret_injected_only_with_the_matching_key(echo):
    gateway, cid = echo
    stored = store_secret(gateway.url, cid, {"apiKey": "value-for-echo"})
    with_key = seen(requests.get(f"{gateway.url}/ipfs/{cid}?key={stored['key']}",
                                 timeout=TIMEOUT))
    assert with_key["secret"] == {"apiKey": "value-for-echo"}
    assert with_key["queries"]["key"] == [stored["key"]]
    without = seen(requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT))
    assert "secret" not in without


def test_key_stored_for_another_cid_is_ignored(echo):
    gateway, cid = echo
    other = store_secret(gateway.url, oracle_cid(b"another contract", 0), {"apiKey": "other"})
    request = seen(requests.get(f"{gateway.url}/ipfs/{cid}?key={other['key']}", timeout=TIMEOUT))
    assert "secret" not in request


def test_stale_key_after_redeploy_is_silently_ignored(project, local_gateway_factory):
    gateway = local_gateway_factory(project, limits=SHORT)
    old_cid = publish(project, ECHO)
    old = store_secret(gateway.url, old_cid, {"apiKey": "old"})
    new_cid = publish(project, ECHO + "\n// redeployed\n")
    answer = requests.get(f"{gateway.url}/ipfs/{new_cid}?key={old['key']}", timeout=TIMEOUT)
    assert "secret" not in seen(answer)


def test_vault_read_back_and_refusals(echo):
    gateway, cid = echo
    stored = store_secret(gateway.url, cid, {"apiKey": "v1", "other": "v2"})
    assert len(stored["key"]) == 32 and len(stored["token"]) == 64
    int(stored["key"], 16), int(stored["token"], 16)  # hex
    read = requests.get(f"{gateway.url}/vaults/{stored['key']}/{stored['token']}",
                        timeout=TIMEOUT)
    assert read.json() == {"data": {"apiKey": "v1", "other": "v2"}, "succeed": True}
    wrong_token = requests.get(f"{gateway.url}/vaults/{stored['key']}/{'0' * 64}",
                               timeout=TIMEOUT)
    assert wrong_token.status_code == 403
    assert "v1" not in wrong_token.text and "token does not match" in wrong_token.text
    unknown = requests.get(f"{gateway.url}/vaults/{'0' * 32}/{stored['token']}", timeout=TIMEOUT)
    assert unknown.status_code == 404
    assert unknown.json()["succeed"] is False


@pytest.mark.parametrize("body, message", [
    (b"{not json", "send {"),
    (b"[1, 2]", "send {"),
    (b'{"data": {"a": "b"}}', "'cid' must be a valid CID"),
    (b'{"cid": "QmNotACid", "data": {"a": "b"}}', "'cid' must be a valid CID"),
    (b'{"cid": "CID", "data": "not an object"}', "'data' must be a JSON object"),
])
def test_bad_vault_requests_are_400_and_leave_the_vault_intact(echo, body, message):
    gateway, cid = echo
    stored = store_secret(gateway.url, cid, {"apiKey": "kept"})
    before = gateway.vault.path.read_bytes()
    answer = requests.post(f"{gateway.url}/vaults", data=body.replace(b"CID", cid.encode()),
                           headers={"content-type": "application/json"}, timeout=TIMEOUT)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert gateway.vault.path.read_bytes() == before
    read = requests.get(f"{gateway.url}/vaults/{stored['key']}/{stored['token']}",
                        timeout=TIMEOUT)
    assert read.json()["data"] == {"apiKey": "kept"}


def test_vault_file_is_private_and_survives_a_restart(echo, project, local_gateway_factory):
    gateway, cid = echo
    stored = store_secret(gateway.url, cid, {"apiKey": "persisted"})
    assert stat.S_IMODE(os.stat(gateway.vault.path).st_mode) == 0o600
    gateway.stop()
    again = local_gateway_factory(project, vault_path=gateway.vault.path, limits=SHORT)
    request = seen(requests.get(f"{again.url}/ipfs/{cid}?key={stored['key']}", timeout=TIMEOUT))
    assert request["secret"] == {"apiKey": "persisted"}


# ---- logs --------------------------------------------------------------------------------------


def test_logs_show_full_urls_and_console_lines_but_never_secrets(echo):
    gateway, cid = echo
    stored = store_secret(gateway.url, cid, {"apiKey": "never-in-logs"})
    target = f"/ipfs/{cid}/sub?q=1&key={stored['key']}"
    seen(requests.post(f"{gateway.url}{target}", data=b"body-never-in-logs", timeout=TIMEOUT))
    text = requests.get(f"{gateway.url}/logs/all/ipfs/{cid}", timeout=TIMEOUT).text
    assert f"[REPORT] START Request: POST {target}" in text
    assert f"[INFO] echo POST /ipfs/{cid}/sub" in text
    assert "[REPORT] END Request: Duration:" in text
    assert "never-in-logs" not in text
    records = requests.get(f"{gateway.url}/logs/all/ipfs/{cid}?format=json",
                           timeout=TIMEOUT).json()
    assert records[0]["message"].startswith("END Request")  # newest first
    assert {r["script_id"] for r in records} == {f"ipfs/{cid}"}
    assert len({r["request_id"] for r in records}) == 1


def test_logs_record_contract_errors(project, local_gateway_factory):
    cid = publish(project, FAULTS["throw"])
    gateway = local_gateway_factory(project, limits=SHORT)
    assert requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT).status_code == 500
    text = requests.get(f"{gateway.url}/logs/all/ipfs/{cid}", timeout=TIMEOUT).text
    assert "[ERROR]" in text and "boom" in text


# ---- faults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_contract_faults_are_500_and_the_gateway_keeps_serving(project, local_gateway_factory,
                                                               name):
    echo_cid = publish(project, ECHO)
    gateway = local_gateway_factory(project, limits=SHORT)
    fault_cid = publish(project, FAULTS[name])
    answer = requests.get(f"{gateway.url}/ipfs/{fault_cid}", timeout=TIMEOUT)
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert "error" in answer.json()
    publish(project, ECHO)
    assert seen(requests.get(f"{gateway.url}/ipfs/{echo_cid}", timeout=TIMEOUT))["method"] == "GET"


def test_bytes_that_do_not_hash_to_the_cid_are_refused(project, local_gateway_factory):
    echo_cid = publish(project, ECHO)
    claimed = oracle_cid(b"the code the caller expects", 0)

    def tampering_node(request) -> None:
        # a stand-in IPFS RPC API answering `cat` with other bytes than the CID names
        reply(request, 200, b'globalThis.scriptOutput = "tampered";')

    with standin_http(tampering_node) as api:
        gateway = local_gateway_factory(project, ipfs_api=api, limits=SHORT)
        answer = requests.get(f"{gateway.url}/ipfs/{claimed}", timeout=TIMEOUT)
        assert answer.status_code == 502
        error = answer.json()["error"]
        assert error["code"] == "cid_mismatch"
        assert "do not hash to that CID" in error["message"]
    # the node is gone: the project build still serves
    assert seen(requests.get(f"{gateway.url}/ipfs/{echo_cid}", timeout=TIMEOUT))["method"] == "GET"


def test_code_from_a_real_ipfs_node(ipfs_node, local_gateway_factory):
    source = ECHO + "\n// served from IPFS\n"
    cid = ipfs_node.client.add_bytes(source.encode(), cid_version=0)
    assert cid == oracle_cid(source.encode(), 0)
    gateway = local_gateway_factory(None, ipfs_api=ipfs_node.api, limits=SHORT)
    assert seen(requests.get(f"{gateway.url}/ipfs/{cid}/x", timeout=TIMEOUT))["path"] == \
        f"/ipfs/{cid}/x"


# ---- malformed requests ------------------------------------------------------------------------


def test_bad_and_unknown_cids(echo):
    gateway, _ = echo
    bad = requests.get(f"{gateway.url}/ipfs/not-a-cid", timeout=TIMEOUT)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_cid"
    unknown = requests.get(f"{gateway.url}/ipfs/{oracle_cid(b'nobody has this', 1)}",
                           timeout=TIMEOUT)
    assert unknown.status_code == 404 and "kit build" in unknown.json()["error"]["message"]


def test_oversize_body_is_413(echo):
    gateway, cid = echo
    answer = raw_http(gateway.url, (
        f"POST /ipfs/{cid} HTTP/1.1\r\nHost: x\r\nContent-Length: {2 * 2**20}\r\n\r\n"
    ).encode() + b"x" * 1000)
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"body_too_large" in answer
    assert seen(requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT))["method"] == "GET"


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /vaults HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n", b"400"),
    (b"POST /vaults HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", b"400"),
    (b"POST /vaults HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
    (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
    (b"GET /ipfs/ HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"GET /ipfs/%ZZ%00 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
    (b"DELETE /ipfs/QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH HTTP/1.1\r\nHost: x\r\n\r\n",
     b"405"),
    (b"\x00\x01garbage\r\n\r\n", b"400"),
])
def test_malformed_requests_get_4xx_and_the_gateway_keeps_serving(echo, request_bytes, status):
    gateway, cid = echo
    answer = raw_http(gateway.url, request_bytes)
    assert answer.split(b" ")[1] == status, answer[:200]
    assert seen(requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT))["method"] == "GET"


# ---- concurrency -------------------------------------------------------------------------------


def test_parallel_requests_complete_under_the_bound(project, local_gateway_factory):
    cid = publish(project, ECHO)
    gateway = local_gateway_factory(project, limits=SHORT, max_concurrency=4)
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(
            lambda i: requests.get(f"{gateway.url}/ipfs/{cid}?i={i}", timeout=TIMEOUT),
            range(16)))
    assert sorted(int(seen(a)["queries"]["i"][0]) for a in answers) == list(range(16))


def test_requests_beyond_the_bound_get_503(project, local_gateway_factory):
    slow = ("new Promise((r) => setTimeout(r, 1500)).then(() => {"
            " globalThis.scriptOutput = JSON.stringify({ body: 'done' }); });")
    cid = publish(project, slow)
    gateway = local_gateway_factory(project, limits=SHORT, max_concurrency=1, queue_timeout=0.2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        answers = list(pool.map(
            lambda _: requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT), range(2)))
    assert sorted(a.status_code for a in answers) == [200, 503]
    busy = next(a for a in answers if a.status_code == 503)
    assert busy.json()["error"]["code"] == "busy"


# ---- hardening (issue 9) -----------------------------------------------------------------------


def test_conflicting_content_lengths_are_400_and_close_the_connection(echo):
    """RFC 9112 6.3: differing Content-Length values make the framing ambiguous (a request
    smuggling vector): refuse, and read nothing after them as another request."""
    gateway, cid = echo
    smuggled = f"GET /ipfs/{cid}?smuggled=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    answer = raw_http(gateway.url, (
        b"POST /vaults HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Content-Length: %d\r\n\r\n" % len(smuggled)) + smuggled)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"invalid_content_length" in answer
    assert answer.count(b"HTTP/1.1 ") == 1  # one answer, then the connection was closed
    logs = requests.get(f"{gateway.url}/logs/all/ipfs/{cid}", timeout=TIMEOUT).text
    assert "smuggled" not in logs
    assert seen(requests.get(f"{gateway.url}/ipfs/{cid}", timeout=TIMEOUT))["method"] == "GET"


def test_repeated_identical_content_length_is_accepted(echo):
    gateway, _ = echo  # RFC 9112 6.3 lets a recipient accept identical repeats
    body = b'{"cid": "not-a-cid", "data": {}}'
    answer = raw_http(gateway.url, (
        b"POST /vaults HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n"
        b"Content-Length: %d\r\n\r\n" % (len(body), len(body))) + body)
    assert answer.startswith(b"HTTP/1.1 400") and b"invalid_vault_request" in answer


def test_deeply_nested_json_to_vaults_is_400(echo):
    gateway, cid = echo
    vault = gateway.vault.path
    store_secret(gateway.url, cid, {"apiKey": "first"})
    before = vault.read_bytes()
    deep = "[" * 100_000 + "]" * 100_000
    answer = requests.post(f"{gateway.url}/vaults", data=deep, timeout=TIMEOUT)
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "invalid_json"
    nested: object = "v"
    for _ in range(40):  # past the vault's 32 levels, within kit.jsonsafe's 64
        nested = {"k": nested}
    answer = requests.post(f"{gateway.url}/vaults", json={"cid": cid, "data": nested},
                           timeout=TIMEOUT)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_vault_request"
    assert "nested deeper than" in answer.json()["error"]["message"]
    assert vault.read_bytes() == before


CONTRACT_OUTPUTS = {
    "interim status": ("scriptOutput = JSON.stringify({status: 101, body: 'x'});",
                       500, "invalid_output"),
    "CRLF in a header": ("scriptOutput = JSON.stringify({body: 'x', headers: "
                         "{'x-a': '1\\r\\nSet-Cookie: stolen=1'}});", 500, "invalid_output"),
    "header outside latin-1": ("scriptOutput = JSON.stringify({body: 'x', headers: "
                               "{'x-a': '\\u20ac'}});", 500, "invalid_output"),
    "lone surrogate in the body": ("scriptOutput = JSON.stringify({body: 'a\\ud800'});",
                                   500, "invalid_output"),
    "replaced JSON": ("JSON.stringify = () => undefined; JSON.parse = () => null; "
                      "scriptOutput = '{\"body\": \"answered\"}';", 200, None),
    "looping output getter": ("Object.defineProperty(globalThis, 'scriptOutput', "
                              "{get() { for (;;) {} }}); setInterval(() => {}, 5);",
                              500, "timeout"),
}


@pytest.mark.parametrize("name", sorted(CONTRACT_OUTPUTS))
def test_contract_outputs_the_gateway_cannot_write_are_clean_answers(project,
                                                                    local_gateway_factory, name):
    code, status, error = CONTRACT_OUTPUTS[name]
    cid = publish(project, code)
    gateway = local_gateway_factory(project, limits=Limits(time_seconds=1.0))
    answer = raw_http(gateway.url, f"GET /ipfs/{cid} HTTP/1.1\r\nHost: x\r\n"
                                   "Connection: close\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 %d" % status), answer[:300]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"stolen" not in answer  # neither written as a header nor echoed
    if error is None:
        assert body == b"answered"
    else:
        assert json.loads(body)["error"]["code"] == error


def test_wall_clock_limit_per_request_under_concurrent_load(project, local_gateway_factory):
    """Three busy requests burn process CPU time beside one that waits 700 ms on a timer: with
    a 1 s limit per request each busy one ends at its own 1 s and the waiting one answers."""
    cid = publish(project, """
    if (JSON.parse(scriptArgs[0]).queries.wait) {
      setTimeout(() => { globalThis.scriptOutput = JSON.stringify({ body: "waited" }); }, 700);
    } else {
      while (true) {}
    }
    """)
    gateway = local_gateway_factory(project, limits=Limits(time_seconds=1.0), max_concurrency=4)

    def call(query: str) -> tuple[int, bytes, float]:
        started = time.monotonic()
        answer = requests.get(f"{gateway.url}/ipfs/{cid}?{query}", timeout=TIMEOUT)
        return answer.status_code, answer.content, time.monotonic() - started

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(call, ["busy=1"] * 3 + ["wait=1"]))
    for status, body, elapsed in results[:3]:
        assert status == 500 and json.loads(body)["error"]["code"] == "timeout"
        assert 0.95 <= elapsed < 1.0 + 1.0
    assert results[3][:2] == (200, b"waited")
