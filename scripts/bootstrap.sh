#!/usr/bin/env bash
# Sets up everything the kit needs on a fresh machine, idempotently:
#   - .venv/ with the kit (editable) and its test extras, from PyPI;
#   - scripts/ipfs-node/node_modules: the pinned js-ipfs node, installed by `npm ci` from the
#     committed package-lock.json (Node.js 20 and npm come with the machine);
#   - scripts/phala-fn/node_modules: Phala's pinned @phala/fn (phatjs), the same way;
#   - scripts/vendor-crypto/node_modules: the pinned noble packages and esbuild, the same way;
#   - .venv-olas/ with open-autonomy (autonomy, aea) from scripts/olas-requirements.txt.
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

# Phala's own QuickJS runner (phatjs, `phat-fn run`): the oracle of tests/test_phatjs_differential.py.
phala_dir="$root/scripts/phala-fn"
if [ ! -f "$phala_dir/node_modules/.package-lock.json" ] \
   || [ "$phala_dir/package-lock.json" -nt "$phala_dir/node_modules/.package-lock.json" ]; then
  (cd "$phala_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The pinned noble packages and bundler behind contract_template/vendor/noble-{crypto,aes}.js: only
# for regenerating them and for the test that they are exactly what they give (kit build needs no
# Node.js).
crypto_dir="$root/scripts/vendor-crypto"
if [ ! -f "$crypto_dir/node_modules/.package-lock.json" ] \
   || [ "$crypto_dir/package-lock.json" -nt "$crypto_dir/node_modules/.package-lock.json" ]; then
  (cd "$crypto_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The Olas checks (autonomy, aea) in their own venv: open-autonomy's pins clash with the kit's.
olas_venv="${KIT_OLAS_VENV:-$root/.venv-olas}"
olas_reqs="$root/scripts/olas-requirements.txt"
if [ ! -f "$olas_venv/.kit-installed" ] || [ "$olas_reqs" -nt "$olas_venv/.kit-installed" ]; then
  [ -x "$olas_venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$olas_venv"
  "$olas_venv/bin/python" -m pip install -q --disable-pip-version-check -r "$olas_reqs"
  touch "$olas_venv/.kit-installed"
fi
