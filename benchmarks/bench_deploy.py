"""Time a deploy to a local js-ipfs node step by step, and the kit's overhead on `add`.

    .venv/bin/python benchmarks/bench_deploy.py [--runs N]

Starts its own node (through kit.ipfs.node, on free loopback ports, in a temp repo) and a scaffolded
project, then:

1. deploys N times per CID version, each time with a changed system prompt so every run adds
   new content and writes a record; prints the median of each step (render, cid, add, pin,
   verify, record) as timed by kit.ipfs.deploy;
2. adds the same bytes N times through `IpfsClient.add_bytes` and through a bare multipart
   `POST /api/v0/add` with requests (the baseline: the node's own time plus one HTTP round
   trip), alternating, and prints both medians and the kit's overhead.

Every CID is checked against aleph-cid; the node is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aleph_cid
import requests

STEPS = ("render", "cid", "add", "pin", "verify", "record")
SIZES = (13_000, 1 << 20, 8 << 20)  # about a contract, 1 MiB, 8 MiB (a bounded upper case)


def oracle(data: bytes, version: int) -> str:
    hasher = (aleph_cid.CidHasher.for_ipfs() if version == 0
              else aleph_cid.CidHasher.for_ipfs_v1_raw_leaves())
    hasher.update(data)
    return hasher.finalize()


def set_prompt(project: Path, text: str) -> None:
    config = project / "agent.toml"
    lines = [
        f'system_prompt = "{text}"' if line.startswith("system_prompt = ") else line
        for line in config.read_text().splitlines()
    ]
    config.write_text("\n".join(lines) + "\n")


def bench_deploy_steps(project: Path, api: str, runs: int) -> None:
    from kit.ipfs.deploy import deploy

    print(f"deploy steps, median of {runs} runs (ms)")
    print(f"  {'version':<8}" + "".join(f"{step:>9}" for step in STEPS) + f"{'total':>9}")
    for version in (0, 1):
        timings: dict[str, list[float]] = {step: [] for step in STEPS}
        for run in range(runs):
            set_prompt(project, f"You are benchmark run {version}-{run}.")
            result = deploy(project, ipfs_api=api, cid_version=version)
            assert result.recorded
            assert result.cid == oracle((project / "dist/agent.js").read_bytes(), version)
            for step in STEPS:
                timings[step].append(result.timings_ms[step])
        medians = [statistics.median(timings[step]) for step in STEPS]
        print(f"  v{version:<7}" + "".join(f"{m:>9.1f}" for m in medians)
              + f"{sum(medians):>9.1f}")


def raw_add(api_url: str, data: bytes, version: int) -> str:
    params = {"cid-version": version, "raw-leaves": str(version == 1).lower(), "pin": "true"}
    if version == 1:
        params["cid-base"] = "base32"
    answer = requests.post(f"{api_url}/api/v0/add", params=params, timeout=60,
                           files={"file": ("agent.js", data, "application/octet-stream")})
    answer.raise_for_status()
    return answer.json()["Hash"]


def bench_add_overhead(api: str, api_url: str, runs: int) -> None:
    from kit.ipfs.client import IpfsClient

    client = IpfsClient(api, timeout=60)
    print(f"\nadd: kit (IpfsClient.add_bytes) vs bare POST /api/v0/add, median of {runs} (ms)")
    print(f"  {'size':>10} {'version':>8} {'bare':>9} {'kit':>9} {'overhead':>9} {'ratio':>7}")
    for size in SIZES:
        for version in (0, 1):
            bare, kit = [], []
            for run in range(runs):
                data = os.urandom(size)  # fresh bytes: no run finds its blocks already stored
                other = os.urandom(size)
                first, second = (kit, bare) if run % 2 else (bare, kit)
                for sink, payload in ((first, data), (second, other)):
                    started = time.perf_counter()
                    cid = (client.add_bytes(payload, cid_version=version) if sink is kit
                           else raw_add(api_url, payload, version))
                    sink.append((time.perf_counter() - started) * 1000)
                    assert cid == oracle(payload, version), (cid, version)
            b, k = statistics.median(bare), statistics.median(kit)
            print(f"  {size:>10} {'v' + str(version):>8} {b:>9.1f} {k:>9.1f} {k - b:>9.1f} "
                  f"{k / b:>6.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    from kit.ipfs import node
    from kit.contract.project import init_project

    with tempfile.TemporaryDirectory(prefix="kit-bench-deploy-") as tmp:
        repo, project = Path(tmp) / "repo", Path(tmp) / "project"
        started = time.perf_counter()
        info, _ = node.up(repo, api_port=0, gateway_port=0, timeout=90)
        print(f"node ({info.implementation}) up in {time.perf_counter() - started:.1f}s "
              f"(install, init, start)\n")
        try:
            init_project(project, name="bench-agent")
            bench_deploy_steps(project, info.api, args.runs)
            bench_add_overhead(info.api, node.multiaddr_to_url(info.api), args.runs)
        finally:
            node.down(repo)
    return 0


if __name__ == "__main__":
    sys.exit(main())
