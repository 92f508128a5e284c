"""kit.trust answer proofs: every tampering is refused, naming the field; an honest proof passes.

The oracle is eth-account's own signing (`Account.sign_message` of `encode_defunct(text=...)`)
over the signed text written out here from issue 11, not built by the kit; hashes come from
hashlib. A published EIP-191 vector (viem's documentation, `signMessage` of "hello world" by the
well-known development account 0xf39F...2266) checks recovery against an outside source.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from kit.errors import InputError
from kit.trust.answer import parse_result, verify_answer
from kit.trust.core import ProofError, check_answer, recover_signer
from kit.trust.errors import NotVerified

KEY = "0x" + "11" * 32
OTHER_KEY = "0x" + "22" * 32
SIGNER = Account.from_key(KEY).address
CID = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
OTHER_CID = "bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq"
PROMPT = "Will it rain in Lisbon tomorrow? Answer yes or no."
ANSWER = "No — clear skies are forecast. ☀"
SYSTEM = "You are a helpful assistant."
MODEL = "gpt-4o-mini"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def signed_text(proof: dict[str, Any]) -> str:
    """Issue 11's text, written out independently of kit.trust.core."""
    return (
        "agent-contract-kit answer v1\n"
        f"cid: {proof['cid']}\n"
        f"model: {proof['model']}\n"
        f"system_sha256: {proof['system_sha256']}\n"
        f"prompt_sha256: {proof['prompt_sha256']}\n"
        f"answer_sha256: {proof['answer_sha256']}\n"
        f"provider_proof_sha256: {proof['provider_proof_sha256']}"
    )


def make_proof(*, key: str = KEY, cid: str = CID, prompt: str = PROMPT, answer: str = ANSWER,
               model: str = MODEL, provider: str = "none") -> dict[str, Any]:
    proof: dict[str, Any] = {
        "version": 1, "cid": cid, "model": model, "system_sha256": sha(SYSTEM),
        "prompt_sha256": sha(prompt), "answer_sha256": sha(answer),
        "provider_proof_sha256": provider, "signer": Account.from_key(key).address,
    }
    signature = Account.sign_message(encode_defunct(text=signed_text(proof)), key).signature
    proof["signature"] = "0x" + bytes(signature).hex()
    return proof


def result(proof: dict[str, Any], answer: str = ANSWER, model: str = MODEL,
           **extra: Any) -> str:
    return json.dumps({"answer": answer, "model": model, "proof": proof, **extra})


def check(data: str, prompt: str = PROMPT, signers: tuple[str, ...] = (SIGNER,),
          cid: str | None = CID) -> str:
    return verify_answer(parse_result(data), prompt=prompt, signers=signers, cid=cid,
                         system=SYSTEM).signer


def refused(data: str, field: str, **kwargs: Any) -> None:
    with pytest.raises(NotVerified) as caught:
        check(data, **kwargs)
    assert caught.value.field == field, str(caught.value)


def test_an_honest_proof_verifies_in_every_delivered_shape() -> None:
    proof = make_proof()
    assert check(result(proof)) == SIGNER
    contract_answer = json.dumps({"message": ANSWER, "model": MODEL, "proof": proof,
                                  "usage": {"prompt_tokens": 1}})
    assert check(contract_answer) == SIGNER
    delivery = json.dumps({"requestId": "1", "prompt": PROMPT, "tool": "x",
                           "result": result(proof)})
    parsed = parse_result(delivery)
    assert parsed.prompt == PROMPT
    assert verify_answer(parsed, prompt=parsed.prompt, signers=[SIGNER.lower()]).cid == CID


def test_recovery_matches_a_published_eip191_vector() -> None:
    # viem docs, signMessage: "hello world" -> 0xa461f5...1b by 0xf39Fd6e5...2266
    signature = ("0xa461f509887bd19e312c0c58467ce8ff8e300d3c1a90b608a760c5b80318eaf15fe57c96f"
                 "9175d6cd4daad4663763baa7e78836e067d0163e9a2ccf2ff753f5b1b")
    assert recover_signer("hello world", signature) == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


def test_tampered_answer_prompt_model_cid_are_refused() -> None:
    proof = make_proof()
    refused(result(proof, answer=ANSWER + "!"), "answer_sha256")
    refused(result(proof), "prompt_sha256", prompt=PROMPT + " ")
    refused(result(proof, model="gpt-4o"), "model")
    refused(result(proof), "cid", cid=OTHER_CID)
    forged = dict(proof, model="gpt-4o")  # the model edited inside the proof too
    refused(result(forged, model="gpt-4o"), "signature")
    moved = dict(proof, cid=OTHER_CID)  # the CID edited inside the proof: the text changes
    refused(result(moved), "signature", cid=OTHER_CID)


def test_wrong_signer_or_signature_is_refused() -> None:
    proof = make_proof()
    refused(result(proof), "signer", signers=(Account.from_key(OTHER_KEY).address,))
    refused(result(proof), "signer", signers=())
    claimed = dict(proof, signer=Account.from_key(OTHER_KEY).address)
    refused(result(claimed), "signature", signers=(claimed["signer"],))
    own = make_proof(key=OTHER_KEY)  # validly signed by a key nobody pinned
    refused(result(own), "signer")
    raw = bytearray.fromhex(proof["signature"][2:])
    raw[10] ^= 1
    refused(result(dict(proof, signature="0x" + raw.hex())), "signature")
    raw = bytearray.fromhex(proof["signature"][2:])
    raw[64] = 1  # v outside {27, 28}
    refused(result(dict(proof, signature=raw.hex())), "signature")
    refused(result(dict(proof, signature="0x1234")), "signature")


def test_a_proof_from_another_cid_or_prompt_is_refused() -> None:
    elsewhere = make_proof(cid=OTHER_CID)  # honest proof, but for another contract
    refused(result(elsewhere), "cid")
    replayed = make_proof(prompt="What is 2 + 2?")  # same answer, replayed for another prompt
    refused(result(replayed), "prompt_sha256")


def test_provider_proof_hash_is_recomputed() -> None:
    provider = {"text": "a" * 64 + ":" + "b" * 64, "signature": "0x00", "chat_id": "c1",
                "signing_address": "0x" + "33" * 20}
    canonical = json.dumps(provider, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    proof = make_proof(provider=sha(canonical))
    assert check(result(proof, provider_proof=provider)) == SIGNER
    refused(result(proof, provider_proof=dict(provider, chat_id="c2")), "provider_proof_sha256")
    refused(result(proof), "provider_proof_sha256")  # the hash signed, the proof withheld
    refused(result(make_proof(), provider_proof=provider), "provider_proof_sha256")


@pytest.mark.parametrize("mutate, field", [
    (lambda p: p.pop("signer"), "signer"),
    (lambda p: p.update(extra="x"), "extra"),
    (lambda p: p.update(version=2), "version"),
    (lambda p: p.update(version=True), "version"),
    (lambda p: p.update(model="a\nb"), "model"),
    (lambda p: p.update(prompt_sha256=p["prompt_sha256"].upper()), "prompt_sha256"),
    (lambda p: p.update(provider_proof_sha256="None"), "provider_proof_sha256"),
    (lambda p: p.update(signer="0x12"), "signer"),
])
def test_malformed_proofs_are_refused_by_name(mutate: Any, field: str) -> None:
    proof = make_proof()
    mutate(proof)
    refused(result(proof), field)


def test_system_prompt_is_checked_when_known() -> None:
    proof = make_proof()
    with pytest.raises(ProofError) as caught:
        check_answer(proof, ANSWER, PROMPT, CID, [SIGNER], system=SYSTEM + ".")
    assert caught.value.field == "system_sha256"


@pytest.mark.parametrize("data", ["not json", "[]", '{"answer": "x"}', '{"proof": {}}',
                                  '{"result": "plain text answer", "prompt": "p"}'])
def test_unreadable_results_are_input_errors(data: str) -> None:
    with pytest.raises(InputError):
        parse_result(data)


def test_verifier_source_is_the_module_region() -> None:
    from kit.trust import core

    source = core.verifier_source()
    text = Path(core.__file__).read_text(encoding="utf-8")
    assert source.startswith(core.BEGIN_MARKER + "\n") and source.rstrip().endswith(core.END_MARKER)
    assert source in text and not re.search(r"^\s*(from|import) kit\b", source, re.M)
    namespace: dict[str, Any] = {}
    host = "import hashlib, json, re\nfrom typing import Any, Dict, Iterable, Optional\n"
    exec(compile(host + source, "verifier", "exec"), namespace)  # needs only the host imports
    assert namespace["check_answer"](make_proof(), ANSWER, PROMPT, CID, [SIGNER]) == SIGNER


@pytest.mark.parametrize("field", ["cid", "model", "system_sha256", "signer", "signature"])
def test_a_proof_field_ending_in_a_newline_is_refused(field: str) -> None:
    # `$` in a Python pattern also matches before a trailing newline: the checks must not
    from kit.trust.core import PROOF_FIELDS, ProofError, check_proof_shape

    proof: dict[str, object] = {name: "a" for name in PROOF_FIELDS}
    proof.update(version=1, system_sha256="0" * 64, prompt_sha256="0" * 64,
                 answer_sha256="0" * 64, provider_proof_sha256="none", signer="0x" + "1" * 40)
    check_proof_shape(proof)  # well-formed as it stands
    proof[field] = str(proof[field]) + "\n"
    with pytest.raises(ProofError) as refused:
        check_proof_shape(proof)
    assert refused.value.field == field
