#!/usr/bin/env bash
# The main job on a fresh machine: set up (scripts/bootstrap.sh), then run the whole local flow
# (scripts/quickstart.py). Extra arguments go to quickstart.py (see --help), e.g.
# `--runtime dstack` for the production gateway under the stand-in dstack guest agent.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/bootstrap.sh"
exec "${KIT_VENV:-$root/.venv}/bin/python" "$root/scripts/quickstart.py" "$@"
