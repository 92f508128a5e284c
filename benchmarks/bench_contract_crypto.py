"""What each crypto step of the contract costs in a fresh context, in the kit's runtime and in
Phala's own phatjs: the floor under the latency goals of issues 11, 12 and 14.

    .venv/bin/python benchmarks/bench_contract_crypto.py [--runs 40]

Each step is a small gen-1 script that loads the vendored bundles exactly as the template does
(indirect eval of the file's text) and then does one thing: compile and run the signing
library; a public key (the first fixed-base multiplication, loading the G table); a public key
and a signature (as one signed answer needs); an EIP-191 recovery (a provider check); an ECDH
(half of what a sealed call needs); loading AES-GCM and encrypting once. Every script answers
with the bytes it computed, and each answer is checked against coincurve (libsecp256k1) and
pycryptodome, so a fast wrong answer cannot count. Times are p50 over --runs fresh contexts:
`kit.local.runtime.invoke` for the kit, and `phatjs_times.cjs` (a fresh phatjs runtime per run
inside one Node process, as `phat-fn run` makes it) for phatjs. Figures only; the goals are
checked by bench_runtime.py, bench_confidential.py and bench_seal.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_runtime import PHATJS_TIMES, percentile, time_runtime  # noqa: E402

VENDOR = ROOT / "contract_template" / "vendor"
KEY = hashlib.sha256(b"bench key").digest()
PEER_KEY = hashlib.sha256(b"bench peer").digest()
DIGEST = hashlib.sha256(b"bench message").digest()
AES_KEY, AES_NONCE, PLAIN = hashlib.sha256(b"aes").digest(), bytes(16), b"agent-contract-kit"

LOAD = """
const SIGNING = %s;
const AES = %s;
const noble = () => (0, eval)(`(function () {\\n${SIGNING}\\nreturn KitCrypto;\\n})()`);
const bytes = (hex) => Uint8Array.from(hex.match(/../g), (pair) => parseInt(pair, 16));
"""
ANSWER = """
const hex = Array.from(result, (byte) => byte.toString(16).padStart(2, "0")).join("");
scriptOutput = JSON.stringify({ status: 200, body: hex });
"""


def steps() -> dict[str, str]:
    import coincurve

    signature = coincurve.PrivateKey(KEY).sign_recoverable(DIGEST, hasher=None)
    recovered = bytes([signature[64]]) + signature[:64]  # noble's order: recovery bit first
    peer = coincurve.PublicKey.from_secret(PEER_KEY).format(True)
    return {
        "empty context": "const result = new Uint8Array(0);",
        "compile + run the signing library": "const C = noble(), result = new Uint8Array(0);",
        "public key":
            f"const C = noble(), result = C.secp256k1.getPublicKey(bytes('{KEY.hex()}'), true);",
        "public key + signature":
            f"const C = noble(); C.secp256k1.getPublicKey(bytes('{KEY.hex()}'), true);"
            f"const result = C.secp256k1.sign(bytes('{DIGEST.hex()}'), bytes('{KEY.hex()}'),"
            " { prehash: false, format: 'recovered', extraEntropy: false });",
        "recovery (provider check)":
            f"const C = noble(), result = C.secp256k1.recoverPublicKey(bytes('{recovered.hex()}'),"
            f" bytes('{DIGEST.hex()}'), {{ prehash: false }});",
        "ECDH": f"const C = noble(), result = C.secp256k1.getSharedSecret(bytes('{KEY.hex()}'),"
                f" bytes('{peer.hex()}'));",
        "AES-GCM: load + encrypt once":
            "const C = noble();"
            "const A = (0, eval)(`(function () {\\n${AES}\\nreturn KitAes;\\n})()`);"
            f"const result = A.gcm(bytes('{AES_KEY.hex()}'), bytes('{AES_NONCE.hex()}'))"
            f".encrypt(bytes('{PLAIN.hex()}'));",
    }


def expected() -> dict[str, str]:
    """What each step must answer, from coincurve (libsecp256k1) and pycryptodome."""
    import coincurve
    from Crypto.Cipher import AES

    signature = coincurve.PrivateKey(KEY).sign_recoverable(DIGEST, hasher=None)
    public = coincurve.PublicKey.from_secret(KEY)
    shared = coincurve.PublicKey.from_secret(PEER_KEY).multiply(KEY).format(True)
    sealed, tag = AES.new(AES_KEY, AES.MODE_GCM, nonce=AES_NONCE).encrypt_and_digest(PLAIN)
    return {
        "empty context": "", "compile + run the signing library": "",
        "public key": public.format(True).hex(),
        "public key + signature": (bytes([signature[64]]) + signature[:64]).hex(),
        "recovery (provider check)": public.format(True).hex(),
        "ECDH": shared.hex(),
        "AES-GCM: load + encrypt once": (sealed + tag).hex(),
    }


def scripts(folder: Path) -> dict[str, Path]:
    load = LOAD % (json.dumps((VENDOR / "noble-crypto.js").read_text(encoding="utf-8")),
                   json.dumps((VENDOR / "noble-aes.js").read_text(encoding="utf-8")))
    paths = {}
    for index, (name, step) in enumerate(steps().items()):
        paths[name] = folder / f"step{index}.js"
        paths[name].write_text(load + step + ANSWER, encoding="utf-8")
    return paths


def kit_times(paths: dict[str, Path], runs: int) -> dict[str, float]:
    from kit.local.runtime import invoke, make_request

    request = make_request("GET", "/ipfs/QmBench")
    wanted = expected()
    times = {}
    for name, path in paths.items():
        code = path.read_text(encoding="utf-8")
        answer = invoke(code, request, worker_key=bytes(32))
        assert (answer.status, answer.body) == (200, wanted[name]), (name, answer.body)
        times[name] = percentile(time_runtime(code, request, runs), 0.5)
    return times


def phatjs_times(paths: dict[str, Path], runs: int) -> dict[str, float]:
    done = subprocess.run(["node", str(PHATJS_TIMES), str(runs), "{}",
                           *(str(path) for path in paths.values())],
                          capture_output=True, text=True, timeout=900, check=True)
    found: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    wanted = expected()
    times = {}
    for name, path in paths.items():
        output = found["outputs"][str(path)]
        assert json.loads(output)["body"] == wanted[name], (name, output)
        times[name] = percentile(found["times"][str(path)], 0.5)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = scripts(Path(tmp))
        ours, phala = kit_times(paths, args.runs), phatjs_times(paths, args.runs)
    print("p50 (ms) of a fresh context: the empty script whole, then what each step adds")
    print(f"{'step':<40} {'kit runtime':>12} {'phatjs':>12}")
    empty, compiled = "empty context", "compile + run the signing library"
    for name in paths:
        base = None if name == empty else empty if name == compiled else compiled
        row = [times[name] - (times[base] if base else 0.0) for times in (ours, phala)]
        label = name if base is None else f"  + {name}"
        print(f"{label:<40} {row[0]:>12.2f} {row[1]:>12.2f}")
    print("(the crypto steps are measured beyond compiling the signing library)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
