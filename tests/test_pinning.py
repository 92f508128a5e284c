"""Remote pinning backends against local stand-ins that speak the documented shapes.

The stand-ins (not the real services) implement the IPFS Pinning Service API (`POST /pins`,
`GET /pins/{requestid}`, `GET /pins?cid=`, `DELETE /pins/{requestid}`) and Pinata's upload
(`POST /pinning/pinFileToIPFS`, `GET /data/pinList`, `DELETE /pinning/unpin/{cid}`), check the
bearer token, and can be told to fail. The bytes still go to the real session IPFS node where
the deploy adds them, and CIDs are checked against aleph-cid.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from fixtures.ipfs_node import RunningNode, oracle_cid, reply, run_cli, snapshot, standin_http
from kit.errors import InputError, PinningError

TOKEN = "s3cr3t-token-value"
OTHER_CID = "Qmf412jQZiuVUtdgnB36FXFX7xg5V6KEbSJ4dpQuhkLyfD"  # "hello world": not our bytes


@dataclass
class StandIn:
    """Shared state of a stand-in service: what it saw, and how it should misbehave."""

    seen: list[tuple[str, str, bytes]] = field(default_factory=list)
    fail_status: int | None = None
    fail_times: int = 0
    retry_after: str | None = None
    report_cid: str | None = None  # answer this CID instead of the one pinned
    duplicate: bool = False
    pins: dict[str, dict] = field(default_factory=dict)
    delegates: list[str] = field(default_factory=list)  # answered in every pin status
    stuck: bool = False  # stay "queued" (a service that cannot fetch the content)

    def paths(self, method: str) -> list[str]:
        return [path for seen_method, path, _ in self.seen if seen_method == method]

    def refuse(self, request: BaseHTTPRequestHandler) -> bool:
        """Answer 401 for a wrong token, or the configured failure; True if it answered."""
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            reply(request, 401, b'{"error": {"reason": "UNAUTHORIZED"}}')
            return True
        if self.fail_status and self.fail_times > 0:
            self.fail_times -= 1
            headers = {"Retry-After": self.retry_after} if self.retry_after else {}
            reply(request, self.fail_status, b'{"error": {"reason": "STAND-IN FAILURE"}}', headers)
            return True
        return False


def receive(request: BaseHTTPRequestHandler, state: StandIn) -> bytes:
    body = request.rfile.read(int(request.headers.get("Content-Length") or 0))
    state.seen.append((request.command, request.path, body))
    return body


def answer_json(request: BaseHTTPRequestHandler, status: int, value: object) -> None:
    reply(request, status, json.dumps(value).encode(), {"Content-Type": "application/json"})


@contextmanager
def pinning_service(state: StandIn) -> Iterator[str]:
    """Stand-in IPFS Pinning Service API: queued, then pinning, then pinned."""
    ids = itertools.count(1)
    polls: dict[str, Iterator[str]] = {}

    def status_object(request_id: str, status: str) -> dict:
        pin = state.pins[request_id]
        return {"requestid": request_id, "status": "queued" if state.stuck else status,
                "created": "2024-01-01T00:00:00Z", "pin": pin, "delegates": state.delegates}

    def handle(request: BaseHTTPRequestHandler) -> None:
        body = receive(request, state)
        if state.refuse(request):
            return
        url = urlsplit(request.path)
        query = parse_qs(url.query)
        if request.command == "POST" and url.path == "/pins":
            request_id = f"req-{next(ids)}"
            pin = json.loads(body)
            state.pins[request_id] = {**pin, "cid": state.report_cid or pin["cid"]}
            polls[request_id] = iter(["pinning", "pinned"])
            answer_json(request, 202, status_object(request_id, "queued"))
        elif request.command == "GET" and url.path.startswith("/pins/"):
            request_id = url.path.rsplit("/", 1)[1]
            answer_json(request, 200, status_object(request_id, next(polls[request_id], "pinned")))
        elif request.command == "GET" and url.path == "/pins":
            cids = query.get("cid", [])
            results = [status_object(rid, "pinned") for rid, pin in state.pins.items()
                       if pin["cid"] in cids]
            answer_json(request, 200, {"count": len(results), "results": results})
        elif request.command == "DELETE" and url.path.startswith("/pins/"):
            state.pins.pop(url.path.rsplit("/", 1)[1], None)
            reply(request, 202, b"")
        else:
            reply(request, 404, b"not found")

    with standin_http(handle) as url:
        yield url


def multipart_fields(request: BaseHTTPRequestHandler, body: bytes) -> dict[str, bytes]:
    head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
    message = BytesParser(policy=HTTP).parsebytes(head + body)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


@contextmanager
def pinata(state: StandIn) -> Iterator[str]:
    """Stand-in for Pinata's upload API (hashing uploads with aleph-cid) and its gateway."""

    def handle(request: BaseHTTPRequestHandler) -> None:
        body = receive(request, state)
        url = urlsplit(request.path)
        if request.command == "GET" and url.path.startswith("/ipfs/"):  # public, no token
            reply(request, 200, state.pins[url.path.rsplit("/", 1)[1]]["file"])
            return
        if state.refuse(request):
            return
        if request.command == "POST" and url.path == "/pinning/pinFileToIPFS":
            fields = multipart_fields(request, body)
            options = json.loads(fields["pinataOptions"])
            cid = state.report_cid or oracle_cid(fields["file"], options["cidVersion"])
            state.pins[cid] = {"options": options, "file": fields["file"]}
            answer_json(request, 200, {"IpfsHash": cid, "PinSize": len(fields["file"]),
                                       "Timestamp": "2024-01-01T00:00:00Z",
                                       "isDuplicate": state.duplicate})
        elif request.command == "GET" and url.path == "/data/pinList":
            cid = parse_qs(url.query)["hashContains"][0]
            rows = [{"ipfs_pin_hash": cid}] if cid in state.pins else []
            answer_json(request, 200, {"count": len(rows), "rows": rows})
        elif request.command == "DELETE" and url.path.startswith("/pinning/unpin/"):
            state.pins.pop(url.path.rsplit("/", 1)[1], None)
            reply(request, 200, b"OK")
        else:
            reply(request, 404, b"not found")

    with standin_http(handle) as url:
        yield url


@pytest.fixture
def tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KIT_PINNING_TOKEN", TOKEN)
    monkeypatch.setenv("PINATA_JWT", TOKEN)


Deploy = Callable[..., tuple[int, str, str]]


@pytest.fixture
def deploy_cli(capsys: pytest.CaptureFixture[str], ipfs_node: RunningNode,
               deployed: Path) -> Deploy:
    def run(service: str, *extra: str) -> tuple[int, str, str]:
        return run_cli(capsys, "deploy", "-C", str(deployed), "--ipfs-api", ipfs_node.api,
                       "--pinning-service", service, *extra)
    return run


# --- Pinning Service API --------------------------------------------------------------------


@pytest.mark.usefixtures("tokens")
def test_pinning_service_pins_by_cid_and_polls_until_pinned(
    deploy_cli: Deploy, deployed: Path
) -> None:
    state = StandIn()
    with pinning_service(state) as url:
        code, out, err = deploy_cli(url, "--json")
    assert code == 0, err
    result = json.loads(out)
    artifact = (deployed / "dist/agent.js").read_bytes()
    assert result["cid"] == oracle_cid(artifact, 0) and result["backend"] == "pinning-service"
    posted = [json.loads(body) for method, path, body in state.seen if method == "POST"]
    # the session node runs offline: its `id` lists no address, so no origins are sent
    assert posted == [{"cid": result["cid"], "name": "agent.js"}]
    assert state.paths("GET").count("/pins/req-1") == 2  # pinning, then pinned
    assert TOKEN not in out + err + (deployed / "deployments/latest.json").read_text()


@pytest.mark.usefixtures("tokens")
@pytest.mark.parametrize(
    ("status", "retry_after", "message"),
    [
        (401, None, "rejected the token (HTTP 401); check the token in KIT_PINNING_TOKEN"),
        (429, "1", "kept rate-limiting (HTTP 429) GET /pins after 4 attempts; wait"),
        (500, None, "failed GET /pins (HTTP 500) after 4 attempts"),
    ],
)
def test_pinning_service_failures(
    status: int, retry_after: str | None, message: str, deploy_cli: Deploy, deployed: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if status == 401:
        monkeypatch.setenv("KIT_PINNING_TOKEN", "wrong-" + TOKEN)
    state = StandIn(fail_status=status, fail_times=99, retry_after=retry_after)
    before = snapshot(deployed)
    with pinning_service(state) as url:
        code, _, err = deploy_cli(url)
    assert code == 1
    assert message in err and TOKEN not in err
    assert snapshot(deployed) == before
    # the first remote call is the "already pinned?" GET /pins; retried only if retryable
    assert len(state.seen) == (1 if status == 401 else 4)


@pytest.mark.usefixtures("tokens")
def test_pinning_service_429_then_success_honours_retry_after(
    deploy_cli: Deploy, deployed: Path
) -> None:
    state = StandIn(fail_status=429, fail_times=2, retry_after="1")
    with pinning_service(state) as url:
        code, out, err = deploy_cli(url)
    assert code == 0, err
    assert "recorded in deployments/" in out
    assert len(state.seen) >= 3  # two refusals, then served


@pytest.mark.usefixtures("tokens")
def test_pinning_service_reporting_another_cid_is_undone(
    deploy_cli: Deploy, deployed: Path
) -> None:
    state = StandIn(report_cid=OTHER_CID)
    before = snapshot(deployed)
    with pinning_service(state) as url:
        code, _, err = deploy_cli(url)
    assert code == 1
    assert f"returned {OTHER_CID}" in err and "the pin this deploy added was removed" in err
    assert state.paths("DELETE") == ["/pins/req-1"] and state.pins == {}
    assert snapshot(deployed) == before


def test_missing_token_is_bad_input(deploy_cli: Deploy, deployed: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KIT_PINNING_TOKEN", raising=False)
    before = snapshot(deployed)
    with pinning_service(StandIn()) as url:
        code, _, err = deploy_cli(url)
    assert code == 2 and "set KIT_PINNING_TOKEN" in err
    assert snapshot(deployed) == before


# --- origins and delegates (the service must be able to fetch the content) ------------------

# Addresses a node that is online would report (documentation ranges, RFC 5737 / RFC 3849).
ANNOUNCED = ["/ip4/198.51.100.7/tcp/4001", "/ip6/2001:db8::7/tcp/4001",
             "/ip4/127.0.0.1/tcp/4001"]
DELEGATES = ["/ip4/198.51.100.20/tcp/4001/p2p/12D3KooWGzxzKZYveHXtpG6AsrUJBcWxHBFS2HsEoGTxrMLvKXtf",
             "/dns4/pin.example/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"]


@dataclass
class NodeProxy:
    """Stand-in in front of the real node's RPC API: forwards every call to the node and records
    it, but answers `id` with ANNOUNCED as the Addresses (what an online node reports)."""

    calls: list[tuple[str, list[str]]] = field(default_factory=list)
    peer_id: str = ""

    def connects(self) -> list[str]:
        return [arg for path, args in self.calls if path == "/api/v0/swarm/connect"
                for arg in args]


def read_request_body(request: BaseHTTPRequestHandler) -> bytes:
    if request.headers.get("Transfer-Encoding", "").lower() != "chunked":
        return request.rfile.read(int(request.headers.get("Content-Length") or 0))
    body = bytearray()
    while True:
        size = int(request.rfile.readline().split(b";")[0], 16)
        if size == 0:
            while request.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            return bytes(body)
        body += request.rfile.read(size)
        request.rfile.readline()


@contextmanager
def node_proxy(node: RunningNode, proxy: NodeProxy) -> Iterator[str]:
    import http.client

    target = urlsplit(node.api_url)

    def handle(request: BaseHTTPRequestHandler) -> None:
        body = read_request_body(request)
        url = urlsplit(request.path)
        proxy.calls.append((url.path, parse_qs(url.query).get("arg", [])))
        headers = {name: value for name, value in request.headers.items()
                   if name.lower() not in ("host", "transfer-encoding", "content-length")}
        connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
        try:
            connection.request(request.command, request.path, body=body, headers=headers)
            answer = connection.getresponse()
            payload, status = answer.read(), answer.status
            kind = answer.getheader("Content-Type", "application/json")
        finally:
            connection.close()
        if url.path == "/api/v0/id" and status == 200:
            identity = json.loads(payload)
            proxy.peer_id = identity["ID"]
            payload = json.dumps({**identity, "Addresses": ANNOUNCED}).encode()
        reply(request, status, payload, {"Content-Type": kind})

    with standin_http(handle) as url:
        port = urlsplit(url).port
        yield f"/ip4/127.0.0.1/tcp/{port}/http"


@pytest.mark.usefixtures("tokens")
def test_pin_request_sends_origins_and_the_node_dials_the_delegates(
    capsys: pytest.CaptureFixture[str], deployed: Path, ipfs_node: RunningNode
) -> None:
    state = StandIn(delegates=DELEGATES)
    proxy = NodeProxy()
    with pinning_service(state) as url, node_proxy(ipfs_node, proxy) as api:
        code, out, err = run_cli(capsys, "deploy", "-C", str(deployed), "--ipfs-api", api,
                                 "--pinning-service", url)
    assert code == 0, err  # the offline node cannot dial: reported, not fatal
    posted = [json.loads(body) for method, _, body in state.seen if method == "POST"]
    assert len(posted) == 1 and proxy.peer_id
    assert posted[0]["origins"] == [f"{address}/p2p/{proxy.peer_id}" for address in ANNOUNCED]
    assert proxy.connects() == DELEGATES  # each delegate dialled once, in order


def test_dial_failures_are_notes_and_dialling_is_bounded(ipfs_node: RunningNode) -> None:
    from kit.ipfs.client import IpfsClient
    from kit.ipfs.pinning import MAX_DELEGATES, PinningServicePinner

    many = [f"{DELEGATES[0][:-6]}{n:06d}" for n in range(MAX_DELEGATES + 3)]
    state = StandIn(delegates=many)
    proxy = NodeProxy()
    data = b"dial test " + bytes(range(32))
    with pinning_service(state) as url, node_proxy(ipfs_node, proxy) as api:
        pinner = PinningServicePinner(url, IpfsClient(api, timeout=20.0), token=TOKEN)
        pinned = pinner.pin(data, oracle_cid(data, 0), "dial.js", 0)
    assert pinned.cid == oracle_cid(data, 0)
    assert proxy.connects() == many[:MAX_DELEGATES]
    failures = [note for note in pinned.notes if "delegate" in note]
    assert len(failures) == MAX_DELEGATES + 1  # one per failed dial, one for those skipped
    assert f"first {MAX_DELEGATES} of {len(many)}" in failures[-1]
    assert all(TOKEN not in note for note in pinned.notes)


def test_a_service_that_cannot_fetch_says_why(ipfs_node: RunningNode) -> None:
    """The session node is offline and loopback-only: the service stays queued, and the error
    says the node is unreachable and what to do, instead of only 'still queued'."""
    from kit.ipfs.pinning import PinningServicePinner

    state = StandIn(stuck=True)
    data = b"unreachable " + bytes(range(16))
    with pinning_service(state) as url:
        pinner = PinningServicePinner(url, ipfs_node.client, token=TOKEN, poll_timeout=1.0)
        with pytest.raises(PinningError) as failure:
            pinner.pin(data, oracle_cid(data, 0), "stuck.js", 0)
    message = str(failure.value)
    assert "still reports 'queued'" in message
    assert "cannot fetch the content" in message and "--pinning-service pinata" in message
    assert "origins" not in json.loads(state.seen[1][2])  # POST /pins: nothing to announce


@pytest.mark.parametrize(("address", "public"), [
    ("/ip4/8.8.8.8/tcp/4001", True),
    ("/ip4/127.0.0.1/tcp/4001", False),
    ("/ip4/192.168.1.5/tcp/4001", False),
    ("/ip4/10.0.0.1/udp/4001/quic-v1", False),
    ("/ip6/::1/tcp/4001", False),
    ("/ip6/2606:4700:4700::1111/tcp/4001", True),
    ("/dns4/pin.example.org/tcp/4001", True),
    ("/dns/localhost/tcp/4001", False),
    ("/unix/tmp/socket", False),
])
def test_reachability_of_an_address(address: str, public: bool) -> None:
    from kit.ipfs.pinning import is_public

    assert is_public(address) is public


# --- Pinata ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("tokens")
@pytest.mark.parametrize("version", ["0", "1"])
def test_pinata_upload_sends_the_bytes_and_options(
    version: str, deploy_cli: Deploy, deployed: Path
) -> None:
    state = StandIn()
    with pinata(state) as url:
        code, out, err = deploy_cli(f"pinata+{url}", "--cid-version", version, "--json",
                                    "--gateway", url)
    assert code == 0, err
    artifact = (deployed / "dist/agent.js").read_bytes()
    result = json.loads(out)
    assert result["cid"] == oracle_cid(artifact, int(version)) and result["backend"] == "pinata"
    upload = state.pins[result["cid"]]
    assert upload["file"] == artifact
    assert upload["options"] == {"cidVersion": int(version), "wrapWithDirectory": False}
    assert result["verified_via"] == url and state.paths("GET")[-1] == f"/ipfs/{result['cid']}"


@pytest.mark.usefixtures("tokens")
@pytest.mark.parametrize(("duplicate", "deleted"), [(False, True), (True, False)])
def test_pinata_returning_another_cid_removes_only_a_pin_it_created(
    duplicate: bool, deleted: bool, deploy_cli: Deploy, deployed: Path
) -> None:
    state = StandIn(report_cid=OTHER_CID, duplicate=duplicate)
    before = snapshot(deployed)
    with pinata(state) as url:
        code, _, err = deploy_cli(f"pinata+{url}")
    assert code == 1 and f"returned {OTHER_CID}" in err
    assert state.paths("DELETE") == ([f"/pinning/unpin/{OTHER_CID}"] if deleted else [])
    assert ("was removed" if deleted else "was left in place") in err
    assert snapshot(deployed) == before


def test_pinata_wrong_token_names_its_variable(
    deploy_cli: Deploy, deployed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PINATA_JWT", "wrong-token")
    before = snapshot(deployed)
    with pinata(StandIn()) as url:
        code, _, err = deploy_cli(f"pinata+{url}")
    assert code == 1 and "check the token in PINATA_JWT" in err and "wrong-token" not in err
    assert snapshot(deployed) == before


def test_library_errors_never_carry_the_token() -> None:
    from kit.ipfs.pinning import PinataPinner

    state = StandIn(fail_status=400, fail_times=1)
    with pinata(state) as url:
        pinner = PinataPinner(url, token=TOKEN)
        with pytest.raises(PinningError) as failure:
            pinner.pin(b"x", oracle_cid(b"x", 0), "x.js", 0)
    assert "HTTP 400" in str(failure.value) and TOKEN not in str(failure.value)


def test_make_pinner_rejects_an_unknown_spec(ipfs_node: RunningNode) -> None:
    from kit.ipfs.pinning import make_pinner

    with pytest.raises(InputError, match="pinata\\+URL"):
        make_pinner("s3://bucket", ipfs_node.client)
