"""Time `kit cid` on a 64 MiB file as a whole process, beside `openssl dgst -sha256` (the floor:
every byte hashed once) and beside aleph-cid (Rust, streamed through its Python binding).

    .venv/bin/python benchmarks/bench_cid.py [--runs N] [--size-mib M]

Prints the best of N wall-clock runs of each command and the ratios against the targets
(kit within 1.5x of aleph-cid and within 3x of openssl). Each process's CID output is checked
against aleph-cid's so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALEPH_STREAM = """
import sys, aleph_cid
hasher = (aleph_cid.CidHasher.for_ipfs() if sys.argv[2] == "0"
          else aleph_cid.CidHasher.for_ipfs_v1_raw_leaves())
with open(sys.argv[1], "rb") as handle:
    while block := handle.read(1 << 20):
        hasher.update(block)
print(hasher.finalize())
"""

# Like a normal install, let Python cache bytecode (a developer shell may disable it).
ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
TARGET_VS_ALEPH = 1.5
TARGET_VS_OPENSSL = 3.0


def best_of(command: list[str], runs: int) -> tuple[float, str]:
    """Best wall-clock seconds over `runs` (after one warm-up run) and the command's stdout."""
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=ENV).stdout
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True, env=ENV)
        timings.append(time.perf_counter() - start)
    return min(timings), output.strip()


def write_test_file(directory: Path, size: int) -> Path:
    path = directory / "bench.bin"
    path.write_bytes(random.Random(64).randbytes(size))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--size-mib", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("openssl") is None:
        print("openssl is not installed; install it to measure the floor", file=sys.stderr)
        return 1

    with tempfile.TemporaryDirectory() as tmp:
        path = write_test_file(Path(tmp), args.size_mib * 2**20)
        floor, _ = best_of(["openssl", "dgst", "-sha256", str(path)], args.runs)
        print(f"{args.size_mib} MiB file, best of {args.runs} runs (wall clock, whole process)")
        print(f"  openssl dgst -sha256      {floor * 1000:8.1f} ms")
        failed = False
        for version in ("0", "1"):
            aleph, expected = best_of([sys.executable, "-c", ALEPH_STREAM, str(path), version],
                                      args.runs)
            kit, got = best_of([sys.executable, "-m", "kit", "cid", str(path),
                                "--cid-version", version], args.runs)
            if got != expected:
                print(f"  v{version}: kit printed {got}, aleph-cid {expected}: WRONG CID")
                return 1
            vs_aleph, vs_openssl = kit / aleph, kit / floor
            ok = vs_aleph <= TARGET_VS_ALEPH and vs_openssl <= TARGET_VS_OPENSSL
            failed |= not ok
            print(f"  v{version} aleph-cid (python -c)   {aleph * 1000:8.1f} ms")
            print(f"  v{version} kit cid (python -m kit) {kit * 1000:8.1f} ms   "
                  f"{vs_aleph:.2f}x aleph-cid (target {TARGET_VS_ALEPH}x), "
                  f"{vs_openssl:.2f}x openssl (target {TARGET_VS_OPENSSL}x)  "
                  f"{'ok' if ok else 'MISSED'}   {got}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
