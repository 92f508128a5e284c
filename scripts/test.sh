#!/usr/bin/env bash
# Sets up (scripts/bootstrap.sh) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
cd "$root"
exec "${KIT_VENV:-$root/.venv}/bin/python" -m pytest "$@"
