"""Private requests, Python side (kit.trust.seal, kit encrypt/decrypt's offline parts).

Oracles, independent of the kit's code:
- ECIES layout: eciespy 0.4.7's documented default (secp256k1, uncompressed ephemeral key,
  HKDF-SHA256 over ephemeral key || shared point, AES-256-GCM, 16-byte nonce, nonce || tag ||
  body), rebuilt here from `cryptography` (HKDF, AESGCM) and coincurve (ECDH point);
- signatures: eth-account (EIP-191, libsecp256k1); the v2 text is written out literally below;
- keys: mech-client's `ethereum_private_key.txt` is hex, as `aea generate-key ethereum` writes
  it; the key below is eth-account's documented `Account.from_key` example
  (0xb25c7d…b364 -> 0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E).
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from kit.cli import main
from kit.trust import seal
from kit.trust.errors import NotVerified

DOC_KEY = "0xb25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364"
DOC_ADDRESS = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"
CONTRACT_SECRET = bytes.fromhex("22" * 32)
SIGNER_KEY = bytes.fromhex("33" * 32)
CID = "QmSealedContract"
CANARY = "canary-7f3a prompt: will it rain in Lisbon tomorrow?"
ANSWER = "canary-answer-91c2"


# ---- an independent ECIES, written from eciespy's documented layout -------------------------


def oracle_decrypt(secret: bytes, data: bytes) -> bytes:
    from coincurve import PrivateKey, PublicKey
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ephemeral, nonce, tag, body = data[:65], data[65:81], data[81:97], data[97:]
    assert ephemeral[0] == 4  # uncompressed
    shared = PublicKey(ephemeral).multiply(PrivateKey(secret).secret).format(False)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"").derive(
        ephemeral + shared)
    return AESGCM(key).decrypt(nonce, body + tag, None)


def oracle_encrypt(public_key: bytes, plain: bytes, ephemeral_secret: bytes,
                   nonce: bytes) -> bytes:
    from coincurve import PrivateKey, PublicKey
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    ephemeral = PrivateKey(ephemeral_secret).public_key.format(False)
    shared = PublicKey(public_key).multiply(ephemeral_secret).format(False)
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"").derive(
        ephemeral + shared)
    sealed = AESGCM(key).encrypt(nonce, plain, None)
    return ephemeral + nonce + sealed[-16:] + sealed[:-16]


def public_of(secret: bytes) -> str:
    from coincurve import PrivateKey

    return PrivateKey(secret).public_key.format(True).hex()


# ---- a contract stand-in built from the oracles (the real contract: test_seal_contract.py) -----


V2_TEXT = """agent-contract-kit answer v2
cid: {cid}
model: {model}
system_sha256: {system_sha256}
prompt_sha256: {prompt_sha256}
answer_sha256: {answer_sha256}
provider_proof_sha256: {provider_proof_sha256}
sealed_request_sha256: {sealed_request_sha256}
sealed_answer_sha256: {sealed_answer_sha256}
requester: {requester}"""


def salted(nonce: str, text: str) -> str:
    return hashlib.sha256(bytes.fromhex(nonce) + text.encode("utf-8")).hexdigest()


def answer_request(request_text: str, answer: str = ANSWER, *, signer_key: bytes = SIGNER_KEY,
                   cid: str = CID, model: str = "model-a") -> dict[str, Any]:
    """What the contract does, rebuilt from the oracles: open, answer, seal back, sign v2."""
    from eth_account import Account
    from eth_account.messages import encode_defunct

    ciphertext = base64.b64decode(json.loads(request_text)["sealed"])
    inner = json.loads(oracle_decrypt(CONTRACT_SECRET, ciphertext))
    plain = json.dumps({"answer": answer, "model": model, "nonce": inner["nonce"]}).encode()
    sealed_answer = oracle_encrypt(bytes.fromhex(inner["reply_to"]), plain, b"\x44" * 32,
                                   b"\x55" * 16)
    from coincurve import PublicKey
    from eth_utils import keccak, to_checksum_address

    point = PublicKey(bytes.fromhex(inner["reply_to"])).format(False)
    proof: dict[str, Any] = {
        "version": 2, "cid": cid, "model": model, "system_sha256": "ab" * 32,
        "prompt_sha256": salted(inner["nonce"], inner["prompt"]),
        "answer_sha256": salted(inner["nonce"], answer), "provider_proof_sha256": "none",
        "sealed_request_sha256": hashlib.sha256(ciphertext).hexdigest(),
        "sealed_answer_sha256": hashlib.sha256(sealed_answer).hexdigest(),
        "requester": to_checksum_address(keccak(point[1:])[-20:]),
        "signer": Account.from_key(signer_key).address,
    }
    text = V2_TEXT.format(**proof)
    proof["signature"] = "0x" + bytes(
        Account.sign_message(encode_defunct(text=text), signer_key).signature).hex()
    return {"sealed_answer": base64.b64encode(sealed_answer).decode(), "model": model,
            "proof": proof}


@pytest.fixture
def requester() -> seal.RequesterKey:
    return seal.key_from_hex(DOC_KEY)


@pytest.fixture
def signer() -> str:
    from eth_account import Account

    return Account.from_key(SIGNER_KEY).address


# ---- keys and the ECIES format ------------------------------------------------------------------


def test_key_file_as_mech_client_keeps_it(tmp_path: Path) -> None:
    for text in (DOC_KEY, DOC_KEY.removeprefix("0x"), DOC_KEY + "\n"):
        path = tmp_path / "ethereum_private_key.txt"
        path.write_text(text)
        key = seal.load_key(path)
        assert key.address == DOC_ADDRESS
        assert DOC_KEY[2:] not in repr(key)


@pytest.mark.parametrize("text", ["", "0x1234", "zz" * 32, "00" * 32, "ff" * 32])
def test_bad_key_files_are_refused_without_their_content(tmp_path: Path, text: str,
                                                         capsys: Any) -> None:
    path = tmp_path / "key.txt"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        main(["decrypt", str(path), "--key-file", str(path), "--signer", "0x" + "11" * 20])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    if len(text) > 4:
        assert text not in err


def test_a_sealed_request_opens_with_the_independent_ecies(requester: seal.RequesterKey) -> None:
    sealed = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester, model="model-a")
    envelope = json.loads(sealed.text)
    assert set(envelope) == {"sealed", "v"} and envelope["v"] == 1
    raw = base64.b64decode(envelope["sealed"], validate=True)
    assert raw == sealed.ciphertext and sealed.sha256 == hashlib.sha256(raw).hexdigest()
    inner = json.loads(oracle_decrypt(CONTRACT_SECRET, raw))
    assert inner == {"prompt": CANARY, "reply_to": requester.public_key, "model": "model-a",
                     "nonce": sealed.nonce}
    assert len(inner["nonce"]) == 64 and CANARY not in sealed.text


def test_eciespy_is_used_in_its_default_layout() -> None:
    """The kit's ECIES equals eciespy's default and the oracle's, both ways."""
    import ecies

    data = "héllo 😀".encode()
    made = seal.ecies_encrypt(bytes.fromhex(public_of(CONTRACT_SECRET)), data)
    assert oracle_decrypt(CONTRACT_SECRET, made) == data
    assert ecies.decrypt(CONTRACT_SECRET, made) == data
    theirs = oracle_encrypt(bytes.fromhex(public_of(CONTRACT_SECRET)), data, b"\x07" * 32,
                            b"\x08" * 16)
    assert seal.ecies_decrypt(CONTRACT_SECRET, theirs) == data


def test_an_encryption_key_off_the_curve_is_refused(requester: seal.RequesterKey) -> None:
    with pytest.raises(NotVerified) as info:
        seal.seal_request("hi", "02" + "00" * 32, requester)
    assert info.value.field == "encryption_key"


# ---- the v2 text and open_answer --------------------------------------------------------------


def test_the_v2_text_is_the_written_out_one(requester: seal.RequesterKey) -> None:
    sealed = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester)
    proof = answer_request(sealed.text)["proof"]
    assert seal.sealed_answer_text(proof) == V2_TEXT.format(**proof)


def test_round_trip_opens_and_verifies_everything(requester: seal.RequesterKey,
                                                  signer: str) -> None:
    sealed = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester)
    result = answer_request(sealed.text)
    opened = seal.open_answer(json.dumps(result), requester, signers=[signer], cid=CID,
                              request=sealed, prompt=CANARY)
    assert (opened.answer, opened.signer, opened.requester) == (ANSWER, signer, DOC_ADDRESS)
    assert {"nonce", "prompt_sha256", "answer_sha256", "signature"} <= set(opened.checked)
    assert ANSWER not in repr(opened)
    # a mech delivery carries the sealed request as its prompt: it is used when none is given
    delivery = {"requestId": "1", "result": json.dumps(result), "prompt": sealed.text}
    again = seal.open_answer(json.dumps(delivery), requester, signers=[signer])
    assert again.answer == ANSWER and "sealed_request_sha256 (delivery)" in again.checked


def _flip_base64(text: str, at: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


TAMPERINGS = {
    "sealed_answer_body": lambda r, s: {**r, "sealed_answer": _flip_base64(r["sealed_answer"], -1)},
    "proof_cid": lambda r, s: {**r, "proof": {**r["proof"], "cid": "QmOther"}},
    "proof_answer_hash": lambda r, s: {**r, "proof": {**r["proof"], "answer_sha256": "0" * 64}},
    "proof_requester": lambda r, s: {**r, "proof": {**r["proof"],
                                                     "requester": "0x" + "12" * 20}},
    "proof_model": lambda r, s: {**r, "proof": {**r["proof"], "model": "model-b"}},
    "proof_signature": lambda r, s: {**r, "proof": {**r["proof"], "signature":
                                                     r["proof"]["signature"][:-4] + "001b"}},
    "proof_version": lambda r, s: {**r, "proof": {**r["proof"], "version": 1}},
    "unknown_signer": lambda r, s: answer_request(s.text, signer_key=b"\x66" * 32),
    "another_cid": lambda r, s: answer_request(s.text, cid="QmOther"),
}


@pytest.mark.parametrize("name", sorted(TAMPERINGS))
def test_each_tampering_is_refused_with_no_plaintext(name: str, requester: seal.RequesterKey,
                                                     signer: str) -> None:
    sealed = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester)
    result = TAMPERINGS[name](answer_request(sealed.text), sealed)
    with pytest.raises(NotVerified) as info:
        seal.open_answer(json.dumps(result), requester, signers=[signer], cid=CID,
                         request=sealed, prompt=CANARY)
    assert ANSWER not in str(info.value) and CANARY not in str(info.value)


def test_another_request_and_another_recipient_are_refused(requester: seal.RequesterKey,
                                                           signer: str) -> None:
    sealed = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester)
    other = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester)
    result = answer_request(sealed.text)
    with pytest.raises(NotVerified) as info:
        seal.open_answer(result, requester, signers=[signer], request=other)
    assert info.value.field == "sealed_request_sha256"
    stranger = seal.key_from_hex("0x" + "77" * 32)
    with pytest.raises(NotVerified) as info:
        seal.open_answer(result, stranger, signers=[signer], request=sealed)
    assert info.value.field == "requester"
    with pytest.raises(NotVerified) as info:  # the right proof, a wrong prompt
        seal.open_answer(result, requester, signers=[signer], request=sealed, prompt="other")
    assert info.value.field == "prompt_sha256"


def test_the_proof_hashes_no_plaintext_anyone_can_guess(requester: seal.RequesterKey) -> None:
    sealed = seal.seal_request("yes or no?", public_of(CONTRACT_SECRET), requester)
    proof = answer_request(sealed.text, answer="yes")["proof"]
    plain = {hashlib.sha256(t.encode()).hexdigest() for t in ("yes", "no", "yes or no?")}
    assert not plain & set(proof.values())


# ---- kit decrypt ------------------------------------------------------------------------------


def _decrypt(tmp_path: Path, result: dict[str, Any], *extra: str) -> list[str]:
    source = tmp_path / "result.json"
    source.write_text(json.dumps(result))
    key = tmp_path / "ethereum_private_key.txt"
    key.write_text(DOC_KEY)
    return ["decrypt", str(source), "--key-file", str(key), *extra]


def test_kit_decrypt_prints_the_answer_only_when_verified(tmp_path: Path, capsys: Any,
                                                          requester: seal.RequesterKey,
                                                          signer: str) -> None:
    sealed = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester)
    result = answer_request(sealed.text)
    args = _decrypt(tmp_path, result, "--request", sealed.text, "--signer", signer, "--json")
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    view = json.loads(capsys.readouterr().out)
    assert view["verified"] is True and view["answer"] == ANSWER
    bad = TAMPERINGS["proof_answer_hash"](result, sealed)
    for as_json in ((), ("--json",)):
        args = _decrypt(tmp_path, bad, "--request", sealed.text, "--signer", signer, *as_json)
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 1
        out, err = capsys.readouterr()
        assert ANSWER not in out + err and CANARY not in out + err
        assert "not verified" in out + err


def test_kit_decrypt_needs_the_request_and_a_signer(tmp_path: Path, capsys: Any,
                                                    requester: seal.RequesterKey,
                                                    signer: str) -> None:
    sealed = seal.seal_request(CANARY, public_of(CONTRACT_SECRET), requester)
    result = answer_request(sealed.text)
    for args in (_decrypt(tmp_path, result, "--signer", signer),
                 _decrypt(tmp_path, result, "--request", sealed.text,
                          "-C", str(tmp_path))):
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2
        out, err = capsys.readouterr()
        assert ANSWER not in out + err


def test_hostile_results_and_prompts_are_refused_cleanly(requester: seal.RequesterKey,
                                                         signer: str) -> None:
    from kit.errors import InputError
    from kit.trust.core import ProofError

    with pytest.raises(InputError):  # nested far beyond any result: refused, never parsed
        seal.open_answer("[" * 200000, requester, signers=[signer], request=b"x" * 100)
    assert seal.sealed_request_bytes('{"note": "a plain prompt"}') is None
    assert seal.sealed_request_bytes("plain text") is None
    for hostile in ('{"sealed": [' + "[" * 100000 + "]}", '{"sealed": "QUJD", "v": 1}',
                    '{"sealed": "' + "A" * 200 + '", "v": 1, "x": 2}'):
        with pytest.raises(ProofError) as info:
            seal.sealed_request_bytes(hostile)
        assert info.value.field == "sealed_request"
