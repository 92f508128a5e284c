#!/usr/bin/env python3
"""The IPFS deploy script for pipelines: build, pin, check, fetch back, record; one JSON line.

Runs the same steps as `kit deploy` through the library, never prompts, prints progress on
stderr and exactly one JSON object on stdout: the deployment on success, or
`{"ok": false, "error": "...", "kind": "<error class>"}` on failure.

Exit codes:
  0  deployed and verified (or unchanged since the latest deployment)
  1  the outside world failed: node down, pinning service error, CID mismatch, gateway fault
  2  bad input: invalid agent.toml, argument, token missing, corrupt deployment record

Tokens for remote pinning come from the environment (KIT_PINNING_TOKEN, PINATA_JWT), never
from arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kit.errors import KitError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="exit codes: 0 ok, 1 outside failure (node, service, gateway, CID mismatch), "
        "2 bad input",
    )
    parser.add_argument("-C", dest="project_dir", type=Path, default=Path("."),
                        help="project directory holding agent.toml (default: .)")
    parser.add_argument("--ipfs-api", help="node RPC API multiaddr or URL")
    parser.add_argument("--pinning-service", metavar="URL",
                        help="Pinning Service API URL, or 'pinata' / 'pinata+URL'")
    parser.add_argument("--gateway", help="gateway to verify through (default: the node's)")
    parser.add_argument("--cid-version", type=int, choices=(0, 1), default=None)
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds allowed for each network call (default: 30)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from kit.ipfs.deploy import deploy

    try:
        result = deploy(
            args.project_dir, ipfs_api=args.ipfs_api, pinning_service=args.pinning_service,
            gateway=args.gateway, cid_version=args.cid_version, timeout=args.timeout,
            progress=lambda message: print(message, file=sys.stderr, flush=True),
        )
    except KitError as exc:
        print(json.dumps({"ok": False, "error": str(exc), "kind": type(exc).__name__}))
        return exc.exit_code
    print(json.dumps({"ok": True, **result.to_dict()}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
