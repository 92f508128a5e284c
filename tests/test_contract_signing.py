"""The contract's side of the trust chain, run in the local runtime (real QuickJS, real vendored
noble code): answer proofs, /attestation, the dev quote, and the vendored files' integrity.

Oracles are independent of the contract's code: eth-account (EIP-191 signing and recovery,
libsecp256k1 through coincurve, RFC 6979 nonces), eth-keys (public keys), pycryptodome (keccak,
Ed25519), hashlib, and published vectors:
- eth-account 0.14.0 documentation, `Account.sign_message` and `Account.recover_message`
  (message "I♥SF", key 0xb25c7d…b364, signer 0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E);
- web3.js documentation, `web3.eth.accounts.sign` (docs.web3js.org, web3-eth-accounts `sign`:
  message "Some data", key 0x4c0883…2318).
The secp256k1 constants (p, n, G) are the SEC 2 v2 ones, written out here.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fixtures.servers import MOCK_LLM_KEY, TEST_WORKER_KEY
from kit.local.runtime import Invocation, derive_secret, invoke, make_request

ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141  # SEC 2 v2, 2.4.1
FIELD = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F  # SEC 2 v2, 2.4.1
G = (0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798,
     0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8)
VENDORED = ["noble-crypto.js", "noble-aes.js"]
SIGNING_PATH = b"agent-contract-kit/answer-signing/v1"
ENCRYPTION_PATH = b"agent-contract-kit/request-encryption/v1"
DEV_MAGIC = b"KIT-DEV-QUOTE-v1\x00"  # the shared dev quote layout (coordination constants)
CID = "QmContractUnderTest"
SYSTEM = "Answer in one line."
NONCE = "5e" * 32

EIP191_VECTORS = [  # (private key, message, signature) as published
    ("b25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364", "I♥SF",
     "e6ca9bba58c88611fad66a6ce8f996908195593807c4b38bd528d2cff09d4eb3"
     "3e5bfbbf4d3e39b1a2fd816a7680c19ebebaf3a141b239934ad43cb33fcec8ce1c"),
    ("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318", "Some data",
     "b91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd"
     "6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c"),
]


# ---- helpers -------------------------------------------------------------------------------------


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def keccak(data: bytes) -> bytes:
    from Crypto.Hash import keccak as keccak_hash

    return keccak_hash.new(digest_bits=256, data=data).digest()


def derived_key(code: str, path: bytes) -> bytes:
    """The documented rule: Wapo.deriveSecret(path) as a big-endian x, then (x mod (n-1)) + 1."""
    secret = derive_secret(TEST_WORKER_KEY, code, path)
    return ((int.from_bytes(secret, "big") % (ORDER - 1)) + 1).to_bytes(32, "big")


def address_of(key: bytes) -> str:
    from eth_account import Account

    return Account.from_key(key).address


def answer_text(proof: dict[str, Any]) -> str:
    """Issue 11's text, written out here rather than taken from the kit."""
    return (f"agent-contract-kit answer v1\ncid: {proof['cid']}\nmodel: {proof['model']}\n"
            f"system_sha256: {proof['system_sha256']}\nprompt_sha256: {proof['prompt_sha256']}\n"
            f"answer_sha256: {proof['answer_sha256']}\n"
            f"provider_proof_sha256: {proof['provider_proof_sha256']}")


def recover(text: str, signature: str) -> str:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    return Account.recover_message(encode_defunct(text=text), signature=signature)


def run(code: str, method: str, subpath: str = "", queries: list[tuple[str, str]] = (),
        body: Any = None) -> Invocation:
    raw = None if body is None else json.dumps(body)
    request = make_request(method, f"/ipfs/{CID}{subpath}", queries, body=raw,
                           secret={"llmKey": MOCK_LLM_KEY})
    return invoke(code, request, worker_key=TEST_WORKER_KEY)


def evaluate(code: str, expression: str) -> Any:
    """`expression` evaluated after the contract's own top level (its functions are globals of
    the script), its JSON value read back as the output of a harmless GET /info run."""
    probe = (f"\n;(() => {{ const value = JSON.stringify({expression});\n"
             "  const output = JSON.stringify({ status: 200, body: value });\n"
             "  Object.defineProperty(globalThis, 'scriptOutput', "
             "{ get: () => output, set: () => {} }); })();\n")
    answer = invoke(code + probe, make_request("GET", "/ipfs/QmProbe/info"),
                    worker_key=TEST_WORKER_KEY)
    assert answer.status == 200, answer.body
    return json.loads(answer.body)


@pytest.fixture
def contract(project_factory, mock_llm) -> str:
    project: Path = project_factory(base_url=mock_llm.base_url, models=["model-a"],
                                    key_secret="llmKey", system_prompt=SYSTEM)
    return (project / "dist" / "agent.js").read_text(encoding="utf-8")


# ---- signed answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["What is 2 + 2?", "héllo ♥ 日本語 😀", "line one\nline two"])
def test_answer_proof_verifies_with_eth_account(contract: str, prompt: str) -> None:
    answer = run(contract, "POST", body={"prompt": prompt})
    assert answer.status == 200, answer.body
    body = json.loads(answer.body)
    proof = body["proof"]
    assert list(proof) == ["version", "cid", "model", "system_sha256", "prompt_sha256",
                           "answer_sha256", "provider_proof_sha256", "signer", "signature"]
    assert (proof["version"], proof["cid"], proof["model"]) == (1, CID, body["model"])
    assert proof["system_sha256"] == sha(SYSTEM)
    assert proof["prompt_sha256"] == sha(prompt)
    assert proof["answer_sha256"] == sha(body["message"])
    assert proof["provider_proof_sha256"] == "none"
    signature = bytes.fromhex(proof["signature"].removeprefix("0x"))
    assert proof["signature"].startswith("0x") and len(signature) == 65
    assert signature[64] in (27, 28)
    assert recover(answer_text(proof), proof["signature"]) == proof["signer"]
    # the signer is the key derived by the documented rule, shown with the EIP-55 checksum
    assert proof["signer"] == address_of(derived_key(contract, SIGNING_PATH))


def test_signatures_are_rfc6979_deterministic_like_libsecp256k1(contract: str) -> None:
    from eth_account import Account
    from eth_account.messages import encode_defunct

    first = json.loads(run(contract, "GET", queries=[("chatQuery", "same prompt")]).body)["proof"]
    again = json.loads(run(contract, "GET", queries=[("chatQuery", "same prompt")]).body)["proof"]
    assert first == again
    # eth-account signs with libsecp256k1 (RFC 6979 nonces, low s): byte-identical signatures
    key = derived_key(contract, SIGNING_PATH)
    expected = Account.sign_message(encode_defunct(text=answer_text(first)), key).signature
    assert first["signature"] == "0x" + bytes(expected).hex()


def test_a_changed_answer_field_no_longer_recovers_the_signer(contract: str) -> None:
    proof = json.loads(run(contract, "POST", body={"prompt": "tamper"}).body)["proof"]
    for field in ("cid", "model", "prompt_sha256", "answer_sha256", "system_sha256"):
        changed = {**proof, field: proof[field] + "0"}
        assert recover(answer_text(changed), proof["signature"]) != proof["signer"]


@pytest.mark.parametrize(("key", "message", "signature"), EIP191_VECTORS)
def test_published_eip191_vectors_sign_identically_in_the_contract(
    contract: str, key: str, message: str, signature: str
) -> None:
    from eth_account import Account

    literal = json.dumps(message)
    got = evaluate(contract, f"[personalSign(noble().hexToBytes('{key}'), {literal}), "
                             f"recoverPersonalSigner({literal}, '0x{signature}')]")
    assert got == ["0x" + signature, Account.from_key(bytes.fromhex(key)).address]
    if message == "I♥SF":  # the signer eth-account's documentation recovers
        assert got[1] == "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"


def test_recover_refuses_malformed_signatures(contract: str) -> None:
    got = evaluate(contract, "['0x12', '0x' + 'ab'.repeat(64) + '1d', 'zz'.repeat(65)].map((s) => "
                             "{ try { recoverPersonalSigner('m', s); return 'accepted'; } "
                             "catch (e) { return e.message; } })")
    assert got == ["a signature is 65 bytes of hex", "a signature's v must be 27 or 28",
                   "a signature is 65 bytes of hex"]


def test_no_answer_without_a_signing_key(contract: str) -> None:
    without_wapo = "globalThis.Wapo = {};\n" + contract
    answer = run(without_wapo, "POST", body={"prompt": "hi"})
    assert answer.status == 500
    assert json.loads(answer.body)["error"]["code"] == "signing_unavailable"


def test_no_randomness_is_ever_asked_for(contract: str) -> None:
    """A `crypto` global that throws when touched: loading, signing and attesting never reach it."""
    trap = ("Object.defineProperty(globalThis, 'crypto', { get() { throw new Error("
            "'the contract asked for randomness'); } });\n")
    trapped = trap + contract
    answer = run(trapped, "POST", body={"prompt": "no dice"})
    assert answer.status == 200, answer.body
    proof = json.loads(answer.body)["proof"]
    assert recover(answer_text(proof), proof["signature"]) == proof["signer"]
    assert run(trapped, "GET", "/attestation", [("nonce", NONCE)]).status == 200


def test_the_same_code_signs_identically_in_phalas_engine(contract: str, tmp_path: Path) -> None:
    """Phala's own QuickJS build (phatjs in @phala/fn, pinned in scripts/phala-fn) runs the
    vendored library and the contract's signing code: published vector, and the key rule with a
    stand-in Wapo.deriveSecret (phatjs has no Wapo global) giving 64 bytes of 0x07."""
    from fixtures.phatjs import probe

    key, message, signature = EIP191_VECTORS[0]
    got = probe(tmp_path, contract, f"[personalSign(noble().hexToBytes('{key}'), "
                                    f"{json.dumps(message)}), answerSigner().address]")
    secret = int.from_bytes(bytes([7]) * 64, "big")
    assert got == ["0x" + signature, address_of(((secret % (ORDER - 1)) + 1).to_bytes(32, "big"))]


def test_encryption_primitives_agree_with_python_libraries(contract: str) -> None:
    """ECDH, HKDF-SHA256 and AES-256-GCM (for request encryption) inside the contract, against
    coincurve (libsecp256k1) and pycryptodome."""
    import coincurve
    from Crypto.Cipher import AES
    from Crypto.Hash import SHA256
    from Crypto.Protocol.KDF import HKDF

    ours, theirs = bytes([3]) * 32, bytes([5]) * 32
    nonce, plain, info = bytes(range(12)), "request ♥".encode(), b"kit ecies test"
    got = evaluate(contract, f"""(() => {{
      const C = noble(), hex = C.bytesToHex, bytes = C.hexToBytes;
      const shared = C.secp256k1.getSharedSecret(bytes('{ours.hex()}'),
        C.secp256k1.getPublicKey(bytes('{theirs.hex()}')));
      const key = C.hkdf(C.sha256, shared, new Uint8Array(0), bytes('{info.hex()}'), 32);
      const sealed = aesGcm(key, bytes('{nonce.hex()}')).encrypt(bytes('{plain.hex()}'));
      return [hex(shared), hex(key), hex(sealed)];
    }})()""")
    point = coincurve.PublicKey.from_secret(theirs).multiply(ours).format(compressed=True)
    key = HKDF(point, 32, b"", SHA256, context=info)
    cipher = AES.new(key, AES.MODE_GCM, nonce=nonce)
    sealed, tag = cipher.encrypt_and_digest(plain)
    assert got == [point.hex(), key.hex(), (sealed + tag).hex()]


# ---- /attestation --------------------------------------------------------------------------------


def test_attestation_document_and_dev_quote(contract: str) -> None:
    from Crypto.Signature import eddsa
    from eth_keys import keys

    answer = run(contract, "GET", "/attestation", [("nonce", NONCE)])
    assert answer.status == 200, answer.body
    document = json.loads(answer.body)
    assert sorted(document) == sorted([
        "cid", "signer", "encryption_key", "nonce", "message", "worker_public_key",
        "worker_signature", "quote", "quote_type"])
    signer = address_of(derived_key(contract, SIGNING_PATH))
    encryption_key = keys.PrivateKey(derived_key(contract, ENCRYPTION_PATH)).public_key
    assert document["cid"] == CID and document["nonce"] == NONCE
    assert document["signer"] == signer
    assert document["encryption_key"] == encryption_key.to_compressed_bytes().hex()
    message = (f"agent-contract-kit attest v1\ncid: {CID}\nsigner: {signer}\n"
               f"encryption_key: {document['encryption_key']}\nnonce: {NONCE}")
    assert document["message"] == message
    # the worker's signature (Ed25519 in the local runtime) over exactly the message
    worker_key = bytes.fromhex(document["worker_public_key"])
    verifier = eddsa.new(eddsa.import_public_key(worker_key), "rfc8032")
    verifier.verify(message.encode("utf-8"), bytes.fromhex(document["worker_signature"]))
    # the dev quote: magic | report_data | worker key | Ed25519 over magic + report_data
    quote = bytes.fromhex(document["quote"])
    assert document["quote_type"] == "dev" and len(quote) == len(DEV_MAGIC) + 64 + 32 + 64
    assert quote.startswith(DEV_MAGIC)
    report_data = quote[len(DEV_MAGIC):len(DEV_MAGIC) + 64]
    app_address = hashlib.sha256(contract.encode("utf-8")).digest()  # the local app address
    assert report_data == keccak(b"\x65" + app_address + message.encode("utf-8")) + bytes(32)
    assert quote[len(DEV_MAGIC) + 64:len(DEV_MAGIC) + 96] == worker_key
    verifier.verify(DEV_MAGIC + report_data, quote[len(DEV_MAGIC) + 96:])
    # the same signer signs the answers
    proof = json.loads(run(contract, "POST", body={"prompt": "who signs?"}).body)["proof"]
    assert proof["signer"] == signer


@pytest.mark.parametrize("queries", [
    [], [("nonce", "")], [("nonce", "ab" * 31)], [("nonce", "AB" * 32)], [("nonce", "zz" * 32)],
    [("nonce", "ab" * 33)], [("nonce", NONCE + "\n")],
], ids=["missing", "empty", "short", "uppercase", "not-hex", "long", "newline"])
def test_attestation_refuses_a_bad_nonce(contract: str, queries: list[tuple[str, str]]) -> None:
    answer = run(contract, "GET", "/attestation", queries)
    assert answer.status == 400
    assert json.loads(answer.body)["error"]["code"] == "invalid_nonce"


def test_attestation_is_get_only(contract: str) -> None:
    answer = run(contract, "POST", "/attestation", [("nonce", NONCE)], body={})
    assert (answer.status, json.loads(answer.body)["error"]["code"]) == (405, "method_not_allowed")


# ---- the vendored crypto -------------------------------------------------------------------------


def vendor_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "contract_template" / "vendor"


@pytest.mark.parametrize(("name", "constant"), [
    ("noble-crypto.js", "NOBLE_CRYPTO_SOURCE"), ("noble-aes.js", "NOBLE_AES_SOURCE")])
def test_vendored_file_is_the_recorded_one_and_ships_in_the_contract(
    contract: str, name: str, constant: str,
) -> None:
    data = (vendor_dir() / name).read_bytes()
    recorded = (vendor_dir() / f"{name}.sha256").read_text().split()
    assert recorded == [hashlib.sha256(data).hexdigest(), name]
    assert evaluate(contract, constant) == data.decode("utf-8")
    licence = (vendor_dir() / "LICENSE").read_text()
    assert all(name in licence for name in ("@noble/curves@", "@noble/hashes@", "@noble/ciphers@"))
    assert "MIT License" in licence


def test_vendored_files_are_exactly_what_the_pinned_packages_give() -> None:
    """scripts/vendor-crypto/build.mjs --check rebuilds both bundles from the locked npm packages
    (installed by scripts/bootstrap.sh) and compares them byte for byte, after its own checks
    against noble's secp256k1, keccak, G table and AES-GCM in a sandbox without `crypto`."""
    import subprocess

    folder = Path(__file__).resolve().parents[1] / "scripts" / "vendor-crypto"
    if not (folder / "node_modules" / "@noble" / "curves").exists():
        pytest.fail(f"{folder}/node_modules is missing: run scripts/bootstrap.sh")
    done = subprocess.run(["node", "build.mjs", "--check"], cwd=folder, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    for name in VENDORED:
        recorded = (vendor_dir() / f"{name}.sha256").read_text().split()[0]
        assert f"{name} is reproducible: sha256 {recorded}" in done.stdout


def affine_add(a: tuple[int, int] | None, b: tuple[int, int] | None) -> tuple[int, int] | None:
    """Textbook affine addition on y^2 = x^3 + 7 over FIELD (None is the point at infinity)."""
    if a is None or b is None:
        return b if a is None else a
    if a[0] == b[0] and (a[1] + b[1]) % FIELD == 0:
        return None
    if a == b:
        slope = 3 * a[0] * a[0] * pow(2 * a[1], -1, FIELD)
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, FIELD)
    x = (slope * slope - a[0] - b[0]) % FIELD
    return x, (slope * (a[0] - x) - a[1]) % FIELD


def test_the_compiled_in_g_table_is_the_multiples_of_g() -> None:
    """The signing bundle's table for G (one hex string: affine x || y, window by window) holds,
    for window w and digit d in 1..2^(W-1), d * 2^(W*w) * G: recomputed here with plain integer
    arithmetic from the SEC 2 constants, and spot-checked against libsecp256k1 (coincurve)."""
    import re

    import coincurve

    source = (vendor_dir() / "noble-crypto.js").read_text(encoding="utf-8")
    found = re.findall(r'"([0-9a-f]{1024,})"', source)
    assert len(found) == 1
    table = found[0]
    window = 4
    half, windows = 2 ** (window - 1), -(-256 // window) + 1
    assert len(table) == windows * half * 128
    entries = [(int(table[i:i + 64], 16), int(table[i + 64:i + 128], 16))
               for i in range(0, len(table), 128)]
    base: tuple[int, int] | None = G
    for w in range(windows):
        point = base
        for digit in range(1, half + 1):
            assert entries[w * half + digit - 1] == point, (w, digit)
            if digit == half:
                base = affine_add(point, point)
            point = affine_add(point, base)
    for index in (0, 1, 7, 8, 100, 311, len(entries) - 1):
        w, digit = divmod(index, half)
        scalar = ((digit + 1) << (window * w)) % ORDER
        x, y = entries[index]
        expected = coincurve.PublicKey.from_secret(scalar.to_bytes(32, "big")).format(False)
        assert expected == b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def test_signing_compiles_no_aes(contract: str) -> None:
    """AES-GCM is a bundle of its own, compiled only when a sealed request needs it."""
    assert evaluate(contract, "[answerSigner().address.length, 'gcm' in noble(), "
                              "nobleAesGcm === null]") == [42, False, True]


def modify_library(vendor: Path, name: str) -> None:
    library = vendor / name
    library.write_bytes(library.read_bytes().replace(b"var Kit", b"var KiT", 1))


def drop_record(vendor: Path, name: str) -> None:
    (vendor / f"{name}.sha256").unlink()


def change_record(vendor: Path, name: str) -> None:
    (vendor / f"{name}.sha256").write_text("0" * 64 + f"  {name}\n")


@pytest.mark.parametrize("name", VENDORED)
@pytest.mark.parametrize(("change", "problem"), [
    (modify_library, "does not match its recorded sha256"),
    (change_record, "does not match its recorded sha256"),
    (drop_record, "cannot read"),
], ids=["modified-file", "other-recorded-hash", "no-record"])
def test_build_refuses_a_vendored_file_that_is_not_the_recorded_one(
    project_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], change: Any, problem: str, name: str,
) -> None:
    import kit.contract.render
    from kit.cli import main

    project = project_factory()
    artifact = project / "dist" / "agent.js"
    before = artifact.read_bytes()
    template = tmp_path / "template"
    shutil.copytree(Path(kit.contract.render.contract_template_dir()), template)
    change(template / "vendor", name)
    monkeypatch.setattr(kit.contract.render, "contract_template_dir", lambda: template)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "-C", str(project)])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert problem in error and name in error and "Traceback" not in error
    assert artifact.read_bytes() == before


def test_builds_are_byte_identical(project_factory) -> None:
    first = project_factory(system_prompt="same")
    second = project_factory(system_prompt="same")
    assert (first / "dist" / "agent.js").read_bytes() == (second / "dist" / "agent.js").read_bytes()
