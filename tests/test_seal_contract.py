"""Private requests, contract side: the built template in the local runtime (real QuickJS, the
vendored noble code) opens eciespy's ciphertexts and seals answers that eciespy opens.

Oracles, independent of the contract's code: eciespy 0.4.7 (the format's reference) and the
`cryptography`-based ECIES of test_seal_python.py; eth-account (EIP-191 recovery); hashlib/hmac
for the documented key rules; the v2 text written out in test_seal_python.V2_TEXT; the stand-in
LLM's documented answer ("stand-in answer: " + sha256(prompt)[:16], kit/local/mock_llm.py), which
shows which prompt reached the provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from fixtures.servers import MOCK_LLM_KEY, TEST_WORKER_KEY
from kit.local.runtime import Invocation, derive_secret, invoke, make_request
from test_seal_python import V2_TEXT, oracle_decrypt, salted

ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # SEC 2 v2, 2.4.1
SIGNING_PATH = b"agent-contract-kit/answer-signing/v1"
ENCRYPTION_PATH = b"agent-contract-kit/request-encryption/v1"
SEALING_PATH = b"agent-contract-kit/answer-sealing/v1"
CID = "QmSealedUnderTest"
SYSTEM = "Answer in one line."
CANARY = "canary-5d1e: the secret question nobody may read"
REQUESTER = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
PRIVACY = "\n[privacy]\nsealed_requests = true\nallow_plain_provider = true\n"


def derived_key(code: str, path: bytes) -> bytes:
    """The documented rule: Wapo.deriveSecret(path) as a big-endian x, then (x mod (n-1)) + 1."""
    secret = derive_secret(TEST_WORKER_KEY, code, path)
    return ((int.from_bytes(secret, "big") % (ORDER - 1)) + 1).to_bytes(32, "big")


def public_of(secret: bytes, compressed: bool = True) -> bytes:
    from coincurve import PrivateKey

    return PrivateKey(secret).public_key.format(compressed)


def address_of(secret: bytes) -> str:
    from eth_account import Account

    return Account.from_key(secret).address


def stand_in_answer(prompt: str) -> str:
    return "stand-in answer: " + hashlib.sha256(prompt.encode()).hexdigest()[:16]


def seal_with_eciespy(code: str, inner: dict[str, Any], *, key: bytes | None = None) -> str:
    import ecies

    recipient = public_of(key or derived_key(code, ENCRYPTION_PATH))
    plain = json.dumps(inner, ensure_ascii=False).encode()
    return base64.b64encode(ecies.encrypt(recipient, plain)).decode()


def inner_request(prompt: str = CANARY, **extra: Any) -> dict[str, Any]:
    return {"prompt": prompt, "reply_to": public_of(REQUESTER).hex(), "nonce": "7a" * 32,
            **extra}


def run(code: str, body: Any) -> Invocation:
    raw = body if isinstance(body, str) else json.dumps(body)
    request = make_request("POST", f"/ipfs/{CID}", [], body=raw, secret={"llmKey": MOCK_LLM_KEY})
    return invoke(code, request, worker_key=TEST_WORKER_KEY)


def write_privacy(project: Path, text: str = PRIVACY) -> None:
    toml = project / "agent.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + text, encoding="utf-8")


@pytest.fixture
def sealed_project(project_factory: Any, mock_llm: Any) -> Path:
    from kit.contract.project import build_project

    project: Path = project_factory(base_url=mock_llm.base_url, models=["model-a"],
                                    key_secret="llmKey", system_prompt=SYSTEM)
    write_privacy(project)
    build_project(project)
    return project


@pytest.fixture
def contract(sealed_project: Path) -> str:
    return (sealed_project / "dist" / "agent.js").read_text(encoding="utf-8")


def open_result(body: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    import ecies

    ciphertext = base64.b64decode(body["sealed_answer"], validate=True)
    plain = ecies.decrypt(REQUESTER, ciphertext)
    assert oracle_decrypt(REQUESTER, ciphertext) == plain
    return ciphertext, json.loads(plain)


# ---- interoperability ----------------------------------------------------------------------


@pytest.mark.parametrize("prompt", [CANARY, "héllo ♥ 日本語 😀 " + CANARY])
def test_eciespy_request_opens_in_the_contract_and_its_answer_opens_with_eciespy(
    contract: str, mock_llm: Any, prompt: str
) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    sealed = seal_with_eciespy(contract, inner_request(prompt))
    answer = run(contract, {"sealed": sealed, "v": 1, "model": "model-a"})
    assert answer.status == 200, answer.body
    body = json.loads(answer.body)
    assert set(body) == {"sealed_answer", "model", "usage", "proof"}
    assert prompt not in answer.body and stand_in_answer(prompt) not in answer.body
    ciphertext, inner = open_result(body)
    # the provider got the plaintext prompt: its answer is derived from it
    assert inner == {"answer": stand_in_answer(prompt), "model": "model-a", "nonce": "7a" * 32}
    proof = body["proof"]
    request_bytes = base64.b64decode(sealed)
    assert proof == {**proof, "version": 2, "cid": CID, "model": "model-a",
                     "system_sha256": hashlib.sha256(SYSTEM.encode()).hexdigest(),
                     "prompt_sha256": salted("7a" * 32, prompt),
                     "answer_sha256": salted("7a" * 32, inner["answer"]),
                     "provider_proof_sha256": "none",
                     "sealed_request_sha256": hashlib.sha256(request_bytes).hexdigest(),
                     "sealed_answer_sha256": hashlib.sha256(ciphertext).hexdigest(),
                     "requester": address_of(REQUESTER),
                     "signer": address_of(derived_key(contract, SIGNING_PATH))}
    text = V2_TEXT.format(**proof)  # the same written-out vector test_seal_python feeds Python
    assert Account.recover_message(encode_defunct(text=text),
                                   signature=proof["signature"]) == proof["signer"]


def test_the_answer_key_is_derived_as_documented_and_deterministic(contract: str) -> None:
    from coincurve import PrivateKey

    body = {"sealed": seal_with_eciespy(contract, inner_request()), "v": 1}
    first = json.loads(run(contract, body).body)
    assert json.loads(run(contract, body).body) == first
    ciphertext, inner = open_result(first)
    plain = json.dumps(inner, separators=(",", ":")).encode()
    data = (hashlib.sha256(base64.b64decode(body["sealed"])).digest() + public_of(REQUESTER)
            + hashlib.sha256(plain).digest())
    key = derived_key(contract, SEALING_PATH)
    block = [hmac.new(key, bytes([tag]) + data, "sha256").digest() for tag in (1, 2, 3)]
    scalar = int.from_bytes(block[0] + block[1], "big") % (ORDER - 1) + 1
    assert ciphertext[:65] == PrivateKey(scalar.to_bytes(32, "big")).public_key.format(False)
    assert ciphertext[65:81] == block[2][:16]
    # another answer (another prompt) never reuses the ephemeral key
    other = json.loads(run(contract, {"sealed": seal_with_eciespy(
        contract, inner_request("another question")), "v": 1}).body)
    assert base64.b64decode(other["sealed_answer"])[:65] != ciphertext[:65]


def test_the_sealing_path_never_calls_math_random(contract: str) -> None:
    trap = ("Math.random = () => { throw new Error('Math.random called'); };\n"
            "Object.defineProperty(globalThis, 'crypto', { get() { throw new Error("
            "'the contract asked for randomness'); } });\n")
    trapped = trap + contract  # other code, so other derived keys: seal to the trapped one's
    body = {"sealed": seal_with_eciespy(trapped, inner_request()), "v": 1}
    answer = run(trapped, body)
    assert answer.status == 200, answer.body
    assert open_result(json.loads(answer.body))[1]["answer"] == stand_in_answer(CANARY)


# ---- refusals: 400 with a code, nothing of the plaintext -----------------------------------


def _flip(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


REFUSALS = {
    "not_base64": (lambda c: {"sealed": "not base64!", "v": 1}, "sealed_invalid"),
    "wrong_version": (lambda c: {"sealed": seal_with_eciespy(c, inner_request()), "v": 2},
                      "sealed_invalid"),
    "extra_field": (lambda c: {"sealed": seal_with_eciespy(c, inner_request()), "v": 1,
                               "prompt": "x"}, "sealed_invalid"),
    "tampered_body": (lambda c: {"sealed": _flip(seal_with_eciespy(c, inner_request()), -3),
                                 "v": 1}, "sealed_unreadable"),
    "tampered_key": (lambda c: {"sealed": _flip(seal_with_eciespy(c, inner_request()), 10),
                                "v": 1}, "sealed_unreadable"),
    "another_cids_key": (lambda c: {"sealed": seal_with_eciespy(
        c, inner_request(), key=derived_key(c + "\n", ENCRYPTION_PATH)), "v": 1},
        "sealed_unreadable"),
    "no_nonce": (lambda c: {"sealed": seal_with_eciespy(
        c, {k: v for k, v in inner_request().items() if k != "nonce"}), "v": 1},
        "sealed_request_invalid"),
    "bad_reply_to": (lambda c: {"sealed": seal_with_eciespy(
        c, inner_request(reply_to="02" + "00" * 32)), "v": 1}, "sealed_request_invalid"),
    "unknown_inner_field": (lambda c: {"sealed": seal_with_eciespy(
        c, inner_request(system="x")), "v": 1}, "sealed_request_invalid"),
    "model_mismatch": (lambda c: {"sealed": seal_with_eciespy(
        c, inner_request(model="model-a")), "v": 1, "model": "model-b"},
        "sealed_model_mismatch"),
    "oversized": (lambda c: {"sealed": seal_with_eciespy(
        c, inner_request(CANARY * 2000)), "v": 1}, "sealed_too_large"),
}


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_each_bad_sealed_request_gets_400_with_no_plaintext(contract: str, mock_llm: Any,
                                                            name: str) -> None:
    make, code = REFUSALS[name]
    before = len(mock_llm.requests)
    answer = run(contract, make(contract))
    assert (answer.status, json.loads(answer.body)["error"]["code"]) == (400, code), answer.body
    everything = answer.body + "".join(answer.logs) + str(answer.error)
    assert "canary" not in everything
    assert len(mock_llm.requests) == before  # the provider was never called


def test_sealed_requests_are_refused_unless_enabled(project_factory: Any, mock_llm: Any) -> None:
    project = project_factory(base_url=mock_llm.base_url, models=["model-a"], key_secret="llmKey")
    code = (project / "dist" / "agent.js").read_text(encoding="utf-8")
    answer = run(code, {"sealed": seal_with_eciespy(code, inner_request()), "v": 1})
    assert (answer.status, json.loads(answer.body)["error"]["code"]) == (400,
                                                                         "sealed_not_enabled")


def test_kit_build_refuses_sealing_with_a_plain_provider(project_factory: Any,
                                                         capsys: Any) -> None:
    from kit.cli import main

    project = project_factory()
    write_privacy(project, "\n[privacy]\nsealed_requests = true\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "-C", str(project)])
    assert exit_info.value.code == 2
    assert "allow_plain_provider" in capsys.readouterr().err


def test_the_sealing_code_runs_alike_in_phalas_engine(contract: str, tmp_path: Path) -> None:
    """Phala's own QuickJS build (phatjs in @phala/fn, pinned in scripts/phala-fn; no `crypto`
    global) opens an eciespy request with a 4-byte UTF-8 character (phatjs's TextDecoder gets
    those wrong, so the contract decodes UTF-8 itself) and seals an answer that eciespy opens.
    phatjs has no Wapo global: a stand-in Wapo.deriveSecret gives 64 bytes of 0x07."""
    from fixtures.phatjs import probe

    secret = ((int.from_bytes(bytes([7]) * 64, "big") % (ORDER - 1)) + 1).to_bytes(32, "big")
    prompt = "héllo 😀 " + CANARY
    sealed = seal_with_eciespy(contract, inner_request(prompt), key=secret)
    opened_prompt, sealed_answer = probe(tmp_path, contract, (
        f"(() => {{ const s = openSealedRequest(sealedEnvelope({{ sealed: '{sealed}', v: 1 }}));\n"
        "  const out = sealedAnswer(answerSigner(), 'QmProbe', { system: 's', "
        "prompt: s.ask.prompt },\n"
        "    { message: 'yes 😀', model: 'model-a', usage: {} }, s);\n"
        "  return [s.ask.prompt, out.sealed_answer]; })()"))
    assert opened_prompt == prompt
    _, inner = open_result({"sealed_answer": sealed_answer})
    assert inner == {"answer": "yes 😀", "model": "model-a", "nonce": "7a" * 32}


# ---- the user's handler runs for sealed prompts too ----------------------------------------


def build_with_module(project: Path, module: str) -> str:
    from kit.contract.project import build_project

    (project / "src").mkdir(exist_ok=True)
    (project / "src" / "agent.js").write_text(module, encoding="utf-8")
    build_project(project)
    return (project / "dist" / "agent.js").read_text(encoding="utf-8")


def test_a_sealed_prompt_goes_through_the_users_handler(sealed_project: Path,
                                                        mock_llm: Any) -> None:
    code = build_with_module(sealed_project, (
        "export async function handle(input, ctx) {\n"
        "  const reply = await ctx.complete({ prompt: 'rephrase: ' + input.prompt });\n"
        "  return 'handled ' + reply.text + ' ' + ctx.hash('sha256', input.prompt);\n}\n"))
    answer = run(code, {"sealed": seal_with_eciespy(code, inner_request()), "v": 1})
    assert answer.status == 200, answer.body
    body = json.loads(answer.body)
    assert CANARY not in answer.body
    _, inner = open_result(body)
    expected = ("handled " + stand_in_answer("rephrase: " + CANARY) + " "
                + hashlib.sha256(CANARY.encode()).hexdigest())
    assert inner["answer"] == expected
    assert body["proof"]["answer_sha256"] == salted("7a" * 32, expected)


def test_a_failing_handler_on_a_sealed_prompt_keeps_the_prompt_out_of_the_error(
        sealed_project: Path) -> None:
    code = build_with_module(sealed_project, (
        "export async function handle(input, ctx) {\n"
        "  throw new Error('cannot answer: ' + input.prompt);\n}\n"))
    answer = run(code, {"sealed": seal_with_eciespy(code, inner_request()), "v": 1})
    assert answer.status == 500
    assert json.loads(answer.body)["error"]["code"] == "handler_error"
    assert CANARY not in answer.body and CANARY not in "".join(answer.logs)
