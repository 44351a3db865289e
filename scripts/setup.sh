#!/usr/bin/env bash
# Create .venv once per clone and install sal into it; a no-op when nothing changed since last time.
# torch is pinned to the build this project is tested with (pip finds it on this machine's disk);
# override with SAL_TORCH="torch==X torchvision==Y" on other platforms.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  "${PYTHON:-python3}" -m venv .venv
fi
stamp=.venv/.sal-setup
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    # shellcheck disable=SC2086
    .venv/bin/pip install -q ${SAL_TORCH:-torch==2.14.1 torchvision==0.29.1} 2>&1 | grep -v "^WARNING: Location" || true
  fi
  .venv/bin/pip install -q -e ".[dev]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import sal, torch, optuna, mlflow" || { echo "setup failed: see pip's output above" >&2; exit 1; }
  echo "$want" > "$stamp"
fi
