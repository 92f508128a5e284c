"""The added cost of private requests (issue 14), in Python and in the contract.

    .venv/bin/python benchmarks/bench_seal.py [--runs 200] [--contract-runs 40] [--python-only]

1. Python (`kit encrypt`/`kit decrypt`'s work, without the process start-up and the attestation
   fetch): kit.trust.seal.seal_request and open_answer (the whole proof check: hashes, signer
   recovery, ECIES, salted hashes), p50/p99 per call after a warm-up.
2. Contract (the built template in the local runtime, kit.local.runtime.invoke, a fresh QuickJS
   context per call as in production): a sealed POST / minus a plain POST / of the same prompt
   to the stand-in LLM, p50 of each; the difference is what sealing adds per call (decrypt +
   encrypt + the v2 proof's extra hashes).

Baseline: the same call without sealing. Targets: Python p50 <= 2 ms for each of seal and open;
contract added p50 <= 5 ms. Exits 1 when a target is missed (the figures are printed either way).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

PYTHON_TARGET_MS = 2.0
CONTRACT_TARGET_MS = 5.0
PROMPT = "Will it rain in Lisbon tomorrow? Answer yes or no. " * 4


def timed(function: Callable[[], Any], runs: int) -> list[float]:
    function()  # warm-up (imports, first-use tables)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples)


def p(samples: list[float], q: float) -> float:
    return samples[min(len(samples) - 1, int(q * len(samples)))]


def python_costs(runs: int) -> dict[str, list[float]]:
    from test_seal_python import CONTRACT_SECRET, SIGNER_KEY, answer_request, public_of

    from eth_account import Account
    from kit.trust import seal

    key = seal.key_from_hex("0x" + "11" * 32)
    encryption_key = public_of(CONTRACT_SECRET)
    sealed = seal.seal_request(PROMPT, encryption_key, key)
    result = json.dumps(answer_request(sealed.text))
    signer = Account.from_key(SIGNER_KEY).address
    return {
        "seal_request": timed(lambda: seal.seal_request(PROMPT, encryption_key, key), runs),
        "open_answer": timed(lambda: seal.open_answer(result, key, signers=[signer],
                                                      request=sealed, prompt=PROMPT), runs),
    }


def contract_costs(runs: int) -> dict[str, list[float]]:
    from kit.local.mock_llm import MockLLM

    worker_key = bytes(range(32))
    llm = MockLLM(api_key="mock-llm-key")
    llm.start()
    try:
        return _contract_costs(runs, llm, worker_key)
    finally:
        llm.stop()


def _contract_costs(runs: int, llm: Any, worker_key: bytes) -> dict[str, list[float]]:
    from kit.contract.project import build_project, init_project
    from kit.local.runtime import derive_secret, invoke, make_request
    from kit.trust import seal

    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "bench"
        init_project(project, name="bench", base_url=llm.base_url, models=["model-a"],
                     key_secret="llmKey")
        toml = project / "agent.toml"
        toml.write_text(toml.read_text() + "\n[privacy]\nsealed_requests = true\n"
                        "allow_plain_provider = true\n")
        build_project(project)
        code = (project / "dist" / "agent.js").read_text(encoding="utf-8")
        order = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
        secret = derive_secret(worker_key, code, b"agent-contract-kit/request-encryption/v1")
        scalar = (int.from_bytes(secret, "big") % (order - 1)) + 1
        from coincurve import PrivateKey

        encryption_key = PrivateKey(scalar.to_bytes(32, "big")).public_key.format(True).hex()
        sealed = seal.seal_request(PROMPT, encryption_key, seal.key_from_hex("0x" + "11" * 32))
        envelope = json.loads(sealed.text)

        def call(body: dict[str, Any]) -> Callable[[], None]:
            request = make_request("POST", "/ipfs/QmBench", [], body=json.dumps(body),
                                   secret={"llmKey": "mock-llm-key"})

            def run() -> None:
                answer = invoke(code, request, worker_key=worker_key)
                assert answer.status == 200, answer.body
            return run

        return {"plain": timed(call({"prompt": PROMPT}), runs),
                "sealed": timed(call({**envelope, "model": "model-a"}), runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--contract-runs", type=int, default=40)
    parser.add_argument("--python-only", action="store_true")
    args = parser.parse_args()
    missed = False
    for name, samples in python_costs(args.runs).items():
        print(f"python {name}: p50 {p(samples, .5):.3f} ms, p99 {p(samples, .99):.3f} ms "
              f"(target p50 <= {PYTHON_TARGET_MS} ms)")
        missed |= p(samples, .5) > PYTHON_TARGET_MS
    if not args.python_only:
        costs = contract_costs(args.contract_runs)
        plain, sealed = p(costs["plain"], .5), p(costs["sealed"], .5)
        print(f"contract plain POST /: p50 {plain:.2f} ms; sealed: p50 {sealed:.2f} ms; "
              f"added {sealed - plain:.2f} ms (target <= {CONTRACT_TARGET_MS} ms)")
        missed |= sealed - plain > CONTRACT_TARGET_MS
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
