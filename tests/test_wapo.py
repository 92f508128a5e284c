"""The WapoJS globals inside real QuickJS, checked against published vectors and against Python's
own independent implementations (base64, UTF-8, urllib, hmac)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import pytest

from kit.errors import InputError
from kit.local.runtime import Limits, default_worker_key, invoke, make_request, wyhash64

KEY = bytes(range(32))
HEX = "const hex = (u8) => Array.from(u8, b => b.toString(16).padStart(2, '0')).join('');\n"


def js(expression: str, *, code: str = "", worker_key: bytes = KEY) -> Any:
    """Evaluate `expression` in a contract and return its JSON value."""
    output = f"\nscriptOutput = JSON.stringify({{body: JSON.stringify({expression})}});"
    source = HEX + code + output
    answer = invoke(source, make_request("GET", "/ipfs/x"), limits=Limits(time_seconds=10),
                    worker_key=worker_key)
    assert answer.error is None, (answer.error, answer.logs)
    return json.loads(answer.body)


# ---- Wapo.hash: published vectors ------------------------------------------------------------

HASH_VECTORS = [
    # FIPS 180-2 appendix B.1
    ("sha256", "abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    ("sha256", "", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    # Ethereum's keccak256 of the empty string and of "abc"
    ("keccak256", "", "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"),
    ("keccak256", "abc", "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45"),
    # RFC 7693 appendix A
    ("blake2b512", "abc", "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1"
                          "7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923"),
    ("blake2b256", "", "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"),
    ("blake2b256", "abc", "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319"),
    ("blake2b128", "", "cae66941d9efbd404e4d88758ea67670"),
]


@pytest.mark.parametrize("algorithm, text, digest", HASH_VECTORS)
def test_hash_matches_published_vectors(algorithm: str, text: str, digest: str) -> None:
    got = js(f"[hex(Wapo.hash({algorithm!r}, {text!r})), "
             f"hex(Wapo.hash({algorithm!r}, new TextEncoder().encode({text!r}))), "
             f"Wapo.hash({algorithm!r}, {text!r}) instanceof Uint8Array]")
    assert got == [digest, digest, True]


def test_hash_of_non_ascii_text_is_over_its_utf8_bytes() -> None:
    text = "héllo wörld ✓ 😀"
    assert js(f"hex(Wapo.hash('sha256', {json.dumps(text)}))") == \
        hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_unsupported_hash_throws_a_catchable_error() -> None:
    got = js("(() => { try { Wapo.hash('md5', 'x'); return 'no'; } "
             "catch (e) { return e.message; } })()")
    assert got.startswith("unsupported hash algorithm 'md5'; use one of sha256, keccak256")
    got = js("(() => { try { Wapo.hash('sha256', 42); } catch (e) { return e.name; } })()")
    assert got == "TypeError"


# ---- wyhash (final 4), as Rust's wyhash_final4 ------------------------------------------------

# The test vector of the reference C implementation for the final 4 version (seed = index),
# as published with the wyhash_final4 crate and matching Zig's std.hash.Wyhash tests.
WYHASH_VECTORS = [
    ("", 0, 0x409638EE2BDE459),
    ("a", 1, 0xA8412D091B5FE0A9),
    ("abc", 2, 0x32DD92E4B2915153),
    ("wyhash", 3, 0x12C7EF9314847163),
    ("message digest", 4, 0xA2608B1B6EC6EBBF),
    ("abcdefghijklmnopqrstuvwxyz", 5, 0x3F213F97FAF16439),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 6, 0xD730106570676F54),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", 7, 0x2E9C2F693249CA6),
    ("1234567890" * 8, 8, 0x3C353B8B0B931BB0),
    ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*()`~-_=+[{]};:,<.>/?",
     9, 0x3903FC47BA3EF81C),
]
EXTENDED_BUFFER = (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
                   b"!@#$%^&*()`~-_=+[{]};:,<.>/?")
# (length = seed, expected): the crate's extended vector over prefixes of EXTENDED_BUFFER
WYHASH_EXTENDED = [(1, 0x4F5EE2FADA5971B1), (3, 0xCAF4058FB822E46D), (4, 0x577959BB8C92D137),
                   (8, 0xC2A03B43BDA0959D), (16, 0xD84AE114EECF57C8), (17, 0xB98EB4548A1355A9),
                   (32, 0x55FE588F50750DBF), (33, 0x2DC683F89EAA4CBE), (48, 0x18C54464FFEAD7F9),
                   (49, 0x1179EE16801C99CB), (89, 0xF30F51889A34404C)]


@pytest.mark.parametrize("text, seed, expected", WYHASH_VECTORS)
def test_wyhash64_matches_the_reference_vectors(text: str, seed: int, expected: int) -> None:
    assert wyhash64(text.encode(), seed) == expected


@pytest.mark.parametrize("length, expected", WYHASH_EXTENDED)
def test_wyhash64_matches_the_extended_vectors(length: int, expected: int) -> None:
    assert wyhash64(EXTENDED_BUFFER[:length], length) == expected


def test_non_cryptographic_hash_is_wyhash64_seed_0_little_endian() -> None:
    got = js("[hex(Wapo.nonCryptographicHash('wyhash64', '')), "
             "(() => { try { Wapo.nonCryptographicHash('xxhash', 'a'); } "
             "catch (e) { return e.message; } })()]")
    assert got[0] == (0x409638EE2BDE459).to_bytes(8, "little").hex()
    assert "use 'wyhash64'" in got[1]


# ---- deriveSecret, worker key ----------------------------------------------------------------


def expected_secret(key: bytes, code: str, salt: bytes) -> str:
    """The documented construction: HMAC-SHA512(worker key, tag || sha256(code) || salt)."""
    message = b"kit/wapo/deriveSecret\x00" + hashlib.sha256(code.encode()).digest() + salt
    return hmac.new(key, message, hashlib.sha512).hexdigest()


def secret_of(code_prefix: str, salt: str, key: bytes = KEY) -> tuple[str, str]:
    output = f"\nscriptOutput = JSON.stringify({{body: hex(Wapo.deriveSecret({salt!r}))}});"
    code = code_prefix + HEX + output
    answer = invoke(code, make_request("GET", "/ipfs/x"), worker_key=key)
    return answer.body, code


def test_derive_secret_is_deterministic_and_bound_to_code_salt_and_key() -> None:
    first, code = secret_of("", "salt-1")
    assert len(bytes.fromhex(first)) == 64
    assert first == expected_secret(KEY, code, b"salt-1")
    assert secret_of("", "salt-1")[0] == first
    assert secret_of("", "salt-2")[0] != first
    assert secret_of("// another contract\n", "salt-1")[0] != first
    assert secret_of("", "salt-1", key=bytes(32))[0] != first


def test_derive_secret_accepts_bytes_salt() -> None:
    body, code = secret_of("", "x")
    code_bytes = code.replace("Wapo.deriveSecret('x')",
                              "Wapo.deriveSecret(new Uint8Array([0, 255]))")
    answer = invoke(code_bytes, make_request("GET", "/ipfs/x"), worker_key=KEY)
    assert answer.body == expected_secret(KEY, code_bytes, b"\x00\xff")


def test_worker_key_must_be_32_bytes() -> None:
    with pytest.raises(InputError, match="worker key must be 32 bytes, got 3"):
        invoke("scriptOutput = ''", make_request("GET", "/ipfs/x"), worker_key=b"abc")


def test_default_worker_key_is_created_once_and_private(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    key = default_worker_key()
    path = tmp_path / "agent-contract-kit" / "worker.key"
    assert path.read_text().strip() == key.hex() and len(key) == 32
    assert path.stat().st_mode & 0o777 == 0o600
    assert default_worker_key() == key


def test_corrupt_worker_key_file_is_reported_and_kept(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    path = tmp_path / "agent-contract-kit" / "worker.key"
    path.parent.mkdir(parents=True)
    path.write_text("not hex\n")
    with pytest.raises(InputError, match="worker key file .* is corrupt; delete it"):
        default_worker_key()
    assert path.read_text() == "not hex\n"


# RFC 8032 section 7.1, tests 1 and 2 (Ed25519)
RFC8032 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc6"
     "1e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e45"
     "8f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]


@pytest.mark.parametrize("seed, public, message, signature", RFC8032)
def test_worker_public_key_and_sign_are_ed25519(seed: str, public: str, message: str,
                                                signature: str) -> None:
    msg = json.dumps(list(bytes.fromhex(message)))
    got = js(f"[hex(Wapo.workerPublicKey()), hex(Wapo.workerSign(new Uint8Array({msg})))]",
             worker_key=bytes.fromhex(seed))
    assert got == [public, signature]


def test_other_wapo_members() -> None:
    got = js("[Array.from(Wapo.concatU8a([new Uint8Array([1, 2]), new Uint8Array([]), "
             "new Uint8Array([3])])), Wapo.sgxQuote('m') instanceof Uint8Array, typeof Wapo.env, "
             "process.env === Wapo.env]")
    assert got == [[1, 2, 3], True, "object", True]


# ---- TextEncoder / TextDecoder against Python's UTF-8 --------------------------------------

TEXTS = ["", "plain ascii", "héllo wörld", "€ ✓ 日本語", "emoji 😀👍🏽",
         "\u2028\u0000\uffff"]


@pytest.mark.parametrize("text", TEXTS)
def test_text_encoder_round_trips(text: str) -> None:
    literal = json.dumps(text)
    encoded, decoded = js(f"[hex(new TextEncoder().encode({literal})), "
                          f"new TextDecoder().decode(new TextEncoder().encode({literal}))]")
    assert encoded == text.encode("utf-8").hex()
    assert decoded == text


@pytest.mark.parametrize("raw", [b"\xff", b"a\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80x",
                                 b"\xc0\xaf", b"\xf4\x90\x80\x80", b"ok\xe2\x82\xacok"])
def test_text_decoder_replaces_invalid_bytes_like_python(raw: bytes) -> None:
    got = js(f"new TextDecoder().decode(new Uint8Array({json.dumps(list(raw))}))")
    assert got == raw.decode("utf-8", "replace")


def test_text_decoder_fatal_bom_and_labels() -> None:
    got = js("[(() => { try { new TextDecoder('utf-8', {fatal: true})"
             ".decode(new Uint8Array([255])); } catch (e) { return e.name; } })(), "
             "new TextDecoder().decode(new Uint8Array([0xef, 0xbb, 0xbf, 0x41])), "
             "new TextDecoder('utf-8', {ignoreBOM: true})"
             ".decode(new Uint8Array([0xef, 0xbb, 0xbf])).length, "
             "(() => { try { new TextDecoder('latin1'); } catch (e) { return e.name; } })()]")
    assert got == ["TypeError", "A", 1, "RangeError"]


# ---- atob / btoa against Python's base64 ---------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"f", b"fo", b"foo", b"foob", bytes(range(256))])
def test_btoa_and_atob_match_python_base64(raw: bytes) -> None:
    binary = raw.decode("latin-1")
    b64 = base64.b64encode(raw).decode()
    encoded, decoded = js(f"[btoa({json.dumps(binary)}), atob({json.dumps(b64)})]")
    assert encoded == base64.b64encode(raw).decode()
    assert decoded == binary


def test_atob_and_btoa_reject_invalid_input() -> None:
    got = js("[(() => { try { btoa('€'); } catch (e) { return e.name; } })(), "
             "(() => { try { atob('abc!'); } catch (e) { return e.name; } })(), "
             "(() => { try { atob('a'); } catch (e) { return e.name; } })(), atob(' Zm9v\\n')]")
    assert got == ["InvalidCharacterError", "InvalidCharacterError", "InvalidCharacterError", "foo"]


# ---- URL / URLSearchParams against urllib ------------------------------------------------------

URLS = [
    "https://api.example.com/v1/chat/completions?model=gpt-4o&x=1#frag",
    "http://user:pw@Example.COM:8080/a/b/../c/./d?q=a%20b",
    "https://example.com:443/",
    "http://127.0.0.1:5002/api/v0/add?cid-version=1",
    "https://example.com",
]


@pytest.mark.parametrize("url", URLS)
def test_url_components_match_urllib(url: str) -> None:
    got = js(f"(() => {{ const u = new URL({url!r}); return {{protocol: u.protocol, "
             "hostname: u.hostname, port: u.port, pathname: u.pathname, search: u.search, "
             "hash: u.hash, username: u.username, password: u.password}; })()")
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}[parts.scheme]
    assert got["protocol"] == parts.scheme + ":"
    assert got["hostname"] == parts.hostname
    assert got["port"] == ("" if parts.port in (None, default_port) else str(parts.port))
    assert got["search"] == (f"?{parts.query}" if parts.query else "")
    assert got["hash"] == (f"#{parts.fragment}" if parts.fragment else "")
    assert (got["username"], got["password"]) == (parts.username or "", parts.password or "")
    # urljoin with "." normalises dot segments the way a URL parser must
    expected_path = urlsplit(urljoin(url, parts.path or "/")).path if parts.path else "/"
    assert got["pathname"] == expected_path


@pytest.mark.parametrize("base, ref", [
    ("https://a.example/b/c/d?x=1", "../e?y=2"),
    ("https://a.example/b/c/d", "/root"),
    ("https://a.example/b/c/d", "//other.example/p"),
    ("https://a.example/b/c/d?x=1", "?z=3"),
    ("https://a.example/b/c/d", "sibling"),
])
def test_relative_urls_resolve_like_urljoin(base: str, ref: str) -> None:
    assert js(f"new URL({ref!r}, {base!r}).href") == urljoin(base, ref)


def test_url_search_params_build_and_read() -> None:
    params = {"q": "hello world & more", "lang": "fr+en", "emoji": "✓", "eq": "a=b"}
    got = js(f"(() => {{ const p = new URLSearchParams({json.dumps(params)}); "
             "const u = new URL('https://h.example/p?k=1&k=2'); u.searchParams.append('n', 'v w'); "
             "u.searchParams.delete('missing'); "
             "return [p.toString(), u.searchParams.getAll('k'), u.searchParams.get('nope'), "
             "u.href, new URLSearchParams('?a=1&b=x+y&a=%E2%9C%93').getAll('a'), "
             "Array.from(new URLSearchParams([['x', '1'], ['y', '2']]).keys())]; })()")
    assert got[0] == urlencode(params)
    assert got[1:] == [["1", "2"], None, "https://h.example/p?k=1&k=2&n=v+w", ["1", "✓"],
                       ["x", "y"]]


def test_invalid_url_throws_type_error() -> None:
    got = js("[(() => { try { new URL('not a url'); } catch (e) { return e.name; } })(), "
             "URL.canParse('https://x.example'), URL.canParse('nope')]")
    assert got == ["TypeError", True, False]


def test_performance_now_is_monotonic() -> None:
    got = js("(() => { const a = performance.now(); let s = 0;"
             " for (let i = 0; i < 1e5; i++) s += i;"
             " const b = performance.now(); return [a >= 0, b >= a]; })()")
    assert got == [True, True]
