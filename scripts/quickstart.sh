#!/usr/bin/env bash
# The main job on a fresh machine: set up (scripts/bootstrap.sh), then run the whole local flow
# (scripts/quickstart.py). Extra arguments go to quickstart.py (see --help).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
exec "${KIT_VENV:-$root/.venv}/bin/python" "$root/scripts/quickstart.py" "$@"
