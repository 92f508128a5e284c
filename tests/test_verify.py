"""`kit verify`: fetch a CID back through gateways and re-hash it (real gateway, stand-ins)."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import requests

from fixtures.ipfs_node import RunningNode, oracle_cid, reply, run_cli, standin_http
from kit.ipfs.deploy import verify
from kit.errors import InputError

CONTENT = b"verify me: " + bytes(range(256)) * 2000  # two chunks: a real DAG, not one block


@pytest.fixture(scope="module")
def added(ipfs_node: RunningNode) -> dict[int, str]:
    """CONTENT added to the real node as CIDv0 and CIDv1 (checked against the oracle)."""
    cids = {v: ipfs_node.client.add_bytes(CONTENT, cid_version=v) for v in (0, 1)}
    assert cids == {v: oracle_cid(CONTENT, v) for v in (0, 1)}
    return cids


def altering_gateway(real: str, spoil: bytes) -> AbstractContextManager[str]:
    """Stand-in gateway: proxies the real one and replaces the first byte with `spoil`."""
    def handle(request) -> None:
        body = requests.get(real + request.path, timeout=10).content
        reply(request, 200, spoil + body[1:])
    return standin_http(handle)


@pytest.mark.parametrize("version", [0, 1])
def test_real_gateway_passes_and_an_altering_one_fails(
    version: int, added: dict[int, str], ipfs_node: RunningNode
) -> None:
    cid = added[version]
    with altering_gateway(ipfs_node.gateway_url, b"X") as bad:
        good_check, bad_check = verify(cid, [ipfs_node.gateway_url, bad], timeout=10)
    assert good_check.ok and good_check.size == len(CONTENT) and good_check.cid == cid
    assert not bad_check.ok and bad_check.gateway == bad
    assert bad_check.cid == oracle_cid(b"X" + CONTENT[1:], version)
    assert "altered content" in bad_check.error


def test_cli_reports_each_gateway_and_fails_if_any_fails(
    capsys: pytest.CaptureFixture[str], added: dict[int, str], ipfs_node: RunningNode
) -> None:
    with standin_http(lambda request: reply(request, 404, b"no such thing")) as missing:
        code, out, err = run_cli(capsys, "verify", added[0], "--gateway", ipfs_node.gateway_url,
                                 "--gateway", missing, "--json")
    assert code == 1
    checks = json.loads(out)["checks"]
    assert [c["ok"] for c in checks] == [True, False]
    assert "answered HTTP 404" in checks[1]["error"]
    assert "1 of 2 gateways failed verification" in err


def test_cli_defaults_to_the_latest_deployment(
    capsys: pytest.CaptureFixture[str], project_factory: Callable[..., Path],
    ipfs_node: RunningNode,
) -> None:
    project = project_factory()
    code, out, err = run_cli(capsys, "deploy", "-C", str(project), "--ipfs-api", ipfs_node.api,
                             "--json")
    assert code == 0, err
    cid = json.loads(out)["cid"]
    code, out, err = run_cli(capsys, "verify", "-C", str(project))
    assert code == 0, err
    assert f"verifying {cid}" in out and f"{ipfs_node.gateway_url}: ok" in out


def test_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="is not a valid CID"):
        verify("Qmnotacid", ["http://127.0.0.1:1"])
    code, _, err = run_cli(capsys, "verify", "-C", str(tmp_path))
    assert code == 2 and "no CID given and no deployment recorded" in err
