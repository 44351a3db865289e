#!/usr/bin/env bash
# The test suite: sets up .venv if needed, then runs pytest on the CPU (about 5 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
