"""Issue 12, Python side: the confidential stand-in (`kit mock-llm --confidential`), the provider
report check and `kit provider attest`, and the nested provider proof.

Oracles, independent of the kit's code:
- eth-account (EIP-191 recovery through libsecp256k1) and hashlib for signatures and texts;
- the report_data layout written out here from the provider's source: nearai/private-ml-sdk,
  vllm-proxy/src/app/quote/quote.py `_build_report_data` and
  vllm-proxy/verifiers/attestation_verifier.py `check_report_data`: the 20 address bytes,
  zero-padded on the right to 32, then the 32-byte nonce;
- the TDX v4 quote layout (48-byte header, report_data at body offset 520), sliced by hand;
- dcap-qvl called directly, and the real TDX sample of shared/vectors/dcap-qvl/
  (Phala-Network/dcap-qvl `sample/`, commit 9bffe30b, see SOURCE.md there), used as it is;
- tomllib for the rewritten agent.toml.
Every server binds 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner

from fixtures.vectors import DCAP_QVL
from fixtures.servers import MOCK_LLM_KEY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

VECTORS = DCAP_QVL
STAND_IN_SEED = b"kit mock-llm confidential stand-in signing key v1 (public, never secret)"
REPORT_DATA_AT = 48 + 520  # TDX v4: header, then report_data at offset 520 of the TD report
AUTH = {"authorization": f"Bearer {MOCK_LLM_KEY}"}
NONCE = "c3" * 32


def recover(text: str, signature: str) -> str:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return Account.recover_message(encode_defunct(text=text), signature=signature)


def stand_in_address() -> str:
    from eth_account import Account

    return Account.from_key(hashlib.sha256(STAND_IN_SEED).digest()).address


def layout(address: str, nonce: str) -> bytes:
    """The provider's report_data, from its source (module docstring)."""
    return bytes.fromhex(address[2:]) + bytes(12) + bytes.fromhex(nonce)


@pytest.fixture
def confidential() -> Any:
    from kit.local.mock_llm import MockLLM

    server = MockLLM(api_key=MOCK_LLM_KEY, confidential=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def complete(server: Any, prompt: str = "Is the sky blue?", stream: bool = False
             ) -> tuple[bytes, requests.Response]:
    body = json.dumps({"model": "gpt-4o-mini", "stream": stream,
                       "messages": [{"role": "user", "content": prompt}]}).encode()
    response = requests.post(server.base_url + "/chat/completions", data=body, timeout=10,
                             headers={**AUTH, "content-type": "application/json"})
    assert response.status_code == 200, response.text
    return body, response


def chat_id_of(response: requests.Response) -> str:
    if response.headers["content-type"].startswith("text/event-stream"):
        first = response.content.split(b"\n\n")[0].removeprefix(b"data: ")
        return json.loads(first)["id"]
    return response.json()["id"]


def signature(server: Any, chat_id: str, timeout: float = 10, **params: str) -> requests.Response:
    query = {"model": "gpt-4o-mini", "signing_algo": "ecdsa", **params}
    return requests.get(f"{server.base_url}/signature/{chat_id}", params=query, headers=AUTH,
                        timeout=timeout)


# ---- the stand-in's signatures ------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_signature_covers_the_exact_bytes_and_recovers_the_stand_in(confidential: Any,
                                                                    stream: bool) -> None:
    body, response = complete(confidential, stream=stream)
    answer = signature(confidential, chat_id_of(response))
    assert answer.status_code == 200
    proof = answer.json()
    expected = hashlib.sha256(body).hexdigest() + ":" + hashlib.sha256(response.content).hexdigest()
    assert proof["text"] == expected
    assert proof["signing_algo"] == "ecdsa"
    assert recover(proof["text"], proof["signature"]) == proof["signing_address"]
    assert proof["signing_address"] == stand_in_address() == confidential.confidential.address


def test_signature_endpoint_speaks_the_real_errors(confidential: Any) -> None:
    _, response = complete(confidential)
    chat_id = chat_id_of(response)
    assert signature(confidential, "chatcmpl-unknown").status_code == 404
    assert signature(confidential, chat_id, signing_algo="ed25519").status_code == 400
    unauthorized = requests.get(f"{confidential.base_url}/signature/{chat_id}", timeout=10)
    assert unauthorized.status_code == 401


def test_plain_stand_in_serves_no_signatures(mock_llm: Any) -> None:
    answer = requests.get(f"{mock_llm.base_url}/signature/x", headers=AUTH, timeout=10)
    assert answer.status_code == 404
    assert requests.get(f"{mock_llm.base_url}/attestation/report", timeout=10).status_code == 404


@pytest.mark.parametrize("kind", ["wrong-signature", "text-mismatch", "unknown-signer"])
def test_each_signature_fault_breaks_exactly_one_link(confidential: Any, kind: str) -> None:
    body, response = complete(confidential)
    confidential.fail_signature(kind)
    proof = signature(confidential, chat_id_of(response)).json()
    exact = hashlib.sha256(body).hexdigest() + ":" + hashlib.sha256(response.content).hexdigest()
    signer = recover(proof["text"], proof["signature"])
    if kind == "wrong-signature":
        assert proof["text"] == exact and signer != proof["signing_address"]
    elif kind == "text-mismatch":
        assert proof["text"] != exact and signer == proof["signing_address"] == stand_in_address()
    else:
        assert proof["text"] == exact and signer == proof["signing_address"] != stand_in_address()
    healthy = signature(confidential, chat_id_of(response)).json()  # count=1: then normal again
    assert healthy["text"] == exact and recover(exact, healthy["signature"]) == stand_in_address()


def test_not_found_slow_and_timeout_faults(confidential: Any) -> None:
    _, response = complete(confidential)
    chat_id = chat_id_of(response)
    confidential.fail_signature("not-found", count=2)
    assert [signature(confidential, chat_id).status_code for _ in range(3)] == [404, 404, 200]
    confidential.fail_signature("slow", delay=0.3)
    started = time.monotonic()
    assert signature(confidential, chat_id).status_code == 200
    assert time.monotonic() - started >= 0.3
    confidential.fail_signature("timeout", delay=5)
    with pytest.raises(requests.Timeout):
        signature(confidential, chat_id, timeout=0.5)


@pytest.mark.parametrize("text", ["bogus", "slow,delay=x", "not-found,delay=1", "slow,count=0",
                                  "slow,count=1,count=2"])
def test_bad_signature_fault_specs_are_refused_naming_the_option(text: str) -> None:
    from kit.cli import cli

    result = CliRunner().invoke(cli, ["mock-llm", "--confidential", "--signature-fault", text])
    assert result.exit_code == 2
    assert "--signature-fault" in result.output and "Traceback" not in result.output


def test_signature_fault_needs_confidential() -> None:
    from kit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["mock-llm", "--port", "0", "--signature-fault", "slow"])
    assert exit_info.value.code == 2


# ---- the attestation report ---------------------------------------------------------------


def report(server: Any, nonce: str = NONCE) -> dict[str, Any]:
    answer = requests.get(f"{server.base_url}/attestation/report",
                          params={"model": "gpt-4o-mini", "nonce": nonce}, timeout=10)
    assert answer.status_code == 200
    return answer.json()


def test_report_quote_is_a_dev_quote_binding_address_and_nonce(confidential: Any) -> None:
    document = report(confidential)
    quote = bytes.fromhex(document["intel_quote"])
    assert quote.startswith(b"KIT-DEV-TDX-QUOTE")  # says "dev" in its first bytes
    assert document["signing_address"] == stand_in_address()
    assert quote[REPORT_DATA_AT:REPORT_DATA_AT + 64] == layout(stand_in_address(), NONCE)
    assert json.loads(document["nvidia_payload"])["nonce"] == NONCE


def test_dev_report_passes_only_when_dev_quotes_are_allowed(confidential: Any) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import verify_report

    document = report(confidential)
    with pytest.raises(NotVerified) as refused:
        verify_report(document, nonce=NONCE)
    assert refused.value.field == "intel_quote"
    [attested] = verify_report(document, nonce=NONCE, allow_dev=True)
    assert attested.signing_address == stand_in_address() and not attested.production
    assert attested.gpu.present and attested.gpu.nonce_matches and attested.gpu.evidence_items == 0


def tampered(document: dict[str, Any], how: str) -> dict[str, Any]:
    copy = dict(document)
    if how == "address":
        copy["signing_address"] = "0x" + "11" * 20
    elif how == "request_nonce":
        copy["request_nonce"] = "00" * 32
    elif how == "algo":
        copy["signing_algo"] = "ed25519"
    elif how == "quote_bit":
        quote = bytearray.fromhex(copy["intel_quote"])
        quote[REPORT_DATA_AT + 40] ^= 1
        copy["intel_quote"] = quote.hex()
    elif how == "no_quote":
        copy.pop("intel_quote")
    return copy


@pytest.mark.parametrize("how, field", [
    ("address", "report_data"), ("request_nonce", "request_nonce"), ("algo", "signing_algo"),
    ("quote_bit", "quote"), ("no_quote", "intel_quote"),
])
def test_every_tampered_report_is_refused_naming_the_field(confidential: Any, how: str,
                                                           field: str) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import verify_report

    with pytest.raises(NotVerified) as refused:
        verify_report(tampered(report(confidential), how), nonce=NONCE, allow_dev=True)
    assert refused.value.field == field


def test_a_report_for_another_nonce_is_refused(confidential: Any) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import verify_report

    with pytest.raises(NotVerified) as refused:
        verify_report(report(confidential, "d4" * 32), nonce=NONCE, allow_dev=True)
    assert refused.value.field == "request_nonce"


def test_multi_node_reports_verify_every_node(confidential: Any) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import verify_report

    node = report(confidential)
    attested = verify_report({"all_attestations": [node, node]}, nonce=NONCE, allow_dev=True)
    assert [a.signing_address for a in attested] == [stand_in_address()] * 2
    with pytest.raises(NotVerified):
        verify_report({"all_attestations": [node, tampered(node, "address")]}, nonce=NONCE,
                      allow_dev=True)


# ---- the real TDX sample ------------------------------------------------------------------


def iso(value: str) -> int:
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())


@pytest.fixture(scope="module")
def sample() -> tuple[bytes, str, int]:
    quote = (VECTORS / "tdx_quote").read_bytes()
    collateral = (VECTORS / "tdx_quote_collateral.json").read_text()
    parts = json.loads(collateral)
    tcb, qe = json.loads(parts["tcb_info"]), json.loads(parts["qe_identity"])
    now = max(iso(tcb["issueDate"]), iso(qe["issueDate"])) + 60
    assert now < min(iso(tcb["nextUpdate"]), iso(qe["nextUpdate"]))
    return quote, collateral, now


def test_real_tdx_sample_verifies_and_its_report_data_is_extracted(sample) -> None:
    import dcap_qvl

    from kit.trust.provider import quote_report_data

    quote, collateral, now = sample
    kind, status, _, report_data = quote_report_data(quote, collateral=collateral, now=now)
    oracle = dcap_qvl.verify(quote, dcap_qvl.QuoteCollateralV3.from_json(collateral), now)
    assert (kind, status) == ("tdx", oracle.status)
    assert report_data == quote[REPORT_DATA_AT:REPORT_DATA_AT + 64]


def test_real_sample_passes_dcap_then_fails_loudly_on_the_binding(sample) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import verify_report

    quote, collateral, now = sample
    document = {"signing_address": stand_in_address(), "signing_algo": "ecdsa",
                "request_nonce": NONCE, "intel_quote": quote.hex()}
    with pytest.raises(NotVerified) as refused:  # the sample binds no provider key
        verify_report(document, nonce=NONCE, collateral=collateral, now=now)
    assert refused.value.field == "report_data"
    with pytest.raises(NotVerified) as late:  # outside the collateral's window: DCAP refuses
        verify_report(document, nonce=NONCE, collateral=collateral, now=now + 10 * 365 * 86400)
    assert late.value.field == "dcap"


def test_a_debug_td_is_refused(sample) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import refuse_debug_td

    attributes_at = 48 + 120  # TDX v4: td_attributes at offset 120 of the TD report, 8 bytes
    real = sample[0][attributes_at:attributes_at + 8]
    assert real[0] & 1 == 0  # the sample is a production TD
    refuse_debug_td(real)
    with pytest.raises(NotVerified) as refused:
        refuse_debug_td(bytes([real[0] | 1]) + real[1:])
    assert refused.value.field == "td_attributes"


def test_collateral_fetch_is_bounded_by_the_timeout(sample, silent_server: str) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import quote_report_data

    started = time.monotonic()
    with pytest.raises(NotVerified) as refused:
        quote_report_data(sample[0], pccs_url=silent_server, timeout=2)
    assert refused.value.field == "collateral"
    assert time.monotonic() - started < 15


# ---- kit provider attest ------------------------------------------------------------------


@pytest.fixture
def conf_project(tmp_path: Path, confidential: Any) -> Path:
    from kit.contract.project import init_project

    directory = tmp_path / "conf"
    init_project(directory, name="conf-agent", provider="confidential",
                 base_url=confidential.base_url)
    return directory


@dataclass
class Outcome:
    exit_code: int
    output: str  # standard output
    error: str


def attest(directory: Path, *args: str) -> Outcome:
    """`kit provider attest` through the console entry point (exit codes as a user sees them)."""
    import contextlib
    import io

    from kit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        with pytest.raises(SystemExit) as exit_info:
            main(["provider", "attest", "-C", str(directory), *args])
    return Outcome(int(exit_info.value.code or 0), out.getvalue(), err.getvalue())


def test_attest_refuses_the_dev_quote_without_the_flag_and_writes_nothing(
        conf_project: Path) -> None:
    before = (conf_project / "agent.toml").read_bytes()
    result = attest(conf_project, "--json")
    assert result.exit_code == 1
    assert json.loads(result.output)["field"] == "intel_quote"
    assert (conf_project / "agent.toml").read_bytes() == before


def test_attest_pins_the_address_keeping_comments_and_layout(conf_project: Path) -> None:
    path = conf_project / "agent.toml"
    before = path.read_text()
    result = attest(conf_project, "--allow-dev-quote")
    assert result.exit_code == 0, result.output
    assert stand_in_address() in result.output and "DEV quote" in result.output
    assert "NVIDIA payload: present" in result.output
    after = path.read_text()
    assert [line for line in before.splitlines()] == \
        [line for line in after.splitlines() if line in before.splitlines()]  # all kept, in order
    assert tomllib.loads(after)["provider"]["signing_addresses"] == [stand_in_address()]
    again = attest(conf_project, "--allow-dev-quote", "--json")
    assert again.exit_code == 0 and json.loads(again.output)["signing_addresses_added"] == []
    assert path.read_text() == after


@pytest.mark.parametrize("kind, field", [("report-wrong-nonce", "report_data"),
                                         ("report-wrong-address", "report_data")])
def test_attest_fails_and_writes_nothing_on_a_bad_report(conf_project: Path, confidential: Any,
                                                         kind: str, field: str) -> None:
    before = (conf_project / "agent.toml").read_bytes()
    confidential.fail_signature(kind)
    result = attest(conf_project, "--allow-dev-quote", "--json")
    assert result.exit_code == 1
    assert json.loads(result.output)["field"] == field
    assert (conf_project / "agent.toml").read_bytes() == before


def test_attest_needs_a_confidential_provider(project_factory) -> None:
    directory = project_factory()
    result = attest(directory, "--allow-dev-quote")
    assert result.exit_code == 2 and "confidential" in result.error


def test_attest_reports_an_unreachable_provider_as_an_outside_failure(tmp_path: Path) -> None:
    from kit.contract.project import init_project

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    init_project(tmp_path / "p", name="conf-agent", provider="confidential",
                 base_url=f"http://127.0.0.1:{port}/v1")
    result = attest(tmp_path / "p", "--allow-dev-quote", "--timeout", "2")
    assert result.exit_code == 1 and result.error.startswith("error: cannot reach")


def test_config_checks_signing_addresses(tmp_path: Path) -> None:
    from kit.contract.config import parse_config
    from kit.errors import ConfigError

    def provider(**values: Any) -> Any:
        return parse_config({"agent": {"name": "demo"}, "provider": values}, tmp_path)

    address = stand_in_address()
    assert provider(kind="confidential", signing_addresses=[address]).provider.signing_addresses \
        == (address,)
    for bad in ([address[:-1]], [address, address.lower()], [7]):
        with pytest.raises(ConfigError, match="provider.signing_addresses"):
            provider(kind="confidential", signing_addresses=bad)
    with pytest.raises(ConfigError, match="confidential"):
        provider(kind="openai", signing_addresses=[address])


# ---- the nested provider proof ------------------------------------------------------------


def provider_proof(server: Any) -> dict[str, Any]:
    _, response = complete(server)
    chat_id = chat_id_of(response)
    proof = signature(server, chat_id).json()
    return {"text": proof["text"], "signature": proof["signature"],
            "signing_address": proof["signing_address"], "chat_id": chat_id}


def test_provider_proof_check(confidential: Any) -> None:
    from kit.trust.errors import NotVerified
    from kit.trust.provider import check_provider_proof

    proof = provider_proof(confidential)
    assert check_provider_proof(proof, [stand_in_address().lower()]) == stand_in_address()
    other = "0x" + "22" * 20
    flipped = proof["signature"][:10] + ("0" if proof["signature"][10] != "0" else "1") + \
        proof["signature"][11:]
    cases = [
        ({**proof, "text": "0" * 64 + ":" + "1" * 64}, [stand_in_address()], "signature"),
        ({**proof, "signature": flipped}, [stand_in_address()], "signature"),
        ({**proof, "signing_address": other}, [stand_in_address(), other], "signature"),
        (proof, [other], "signing_address"),
        (proof, [], "signing_address"),
        ({**proof, "text": "not hashes"}, [stand_in_address()], "text"),
        ({**proof, "extra": "x"}, [stand_in_address()], "extra"),
        ({k: v for k, v in proof.items() if k != "chat_id"}, [stand_in_address()], "chat_id"),
    ]
    for bad, pinned, field in cases:
        with pytest.raises(NotVerified) as refused:
            check_provider_proof(bad, pinned)
        assert refused.value.field == f"provider_proof.{field}", (field, refused.value)
