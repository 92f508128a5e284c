#!/usr/bin/env bash
# Sets up everything the kit needs on a fresh machine, idempotently:
#   - .venv/ with the kit (editable) and its test extras, from PyPI;
#   - scripts/ipfs-node/node_modules: the pinned js-ipfs node, installed by `npm ci` from the
#     committed package-lock.json (Node.js 20 and npm come with the machine).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="${KIT_VENV:-$root/.venv}"

if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.kit-installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[test]"
  touch "$stamp"
fi

node_dir="$root/scripts/ipfs-node"
if [ ! -f "$node_dir/node_modules/.package-lock.json" ] \
   || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
