#!/usr/bin/env bash
# Every GPU benchmark of sal in one command, on a CUDA machine without network whose Python 3.12 has only
# PyTorch, pandas, scipy, seaborn, statsmodels and scikit-learn. Missing packages come from the wheels
# that benchmarks/fetch_wheels.sh put in benchmarks/wheels/ (pip install --no-index: nothing is downloaded);
# without optuna/mlflow the suite still runs and marks the overhead figure as skipped.
#   bash benchmarks/gpu_suite.sh                       # table on stdout, JSON in gpu_suite.json
#   bash benchmarks/gpu_suite.sh --device cpu --smoke  # the same code paths on a CPU (seconds)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"
wheels="${WHEELS:-$here/wheels}"
missing=()
for module in pydantic yaml optuna mlflow; do
  "$py" -c "import $module" 2>/dev/null || missing+=("$module")
done
if (( ${#missing[@]} )) && [[ -d "$wheels" ]]; then
  echo "installing from $wheels: ${missing[*]}"
  "$py" -m pip install --no-index --find-links "$wheels" -r "$here/gpu_requirements.txt" \
    || echo "warning: some wheels are missing in $wheels; continuing with what is installed"
  if [[ " ${missing[*]} " == *" mlflow "* ]] && ls "$wheels"/mlflow-*.whl >/dev/null 2>&1; then
    "$py" -m pip install --no-index --find-links "$wheels" mlflow || echo "warning: mlflow not installed"
  fi
fi
"$py" -c "import pydantic, yaml" 2>/dev/null || {
  echo "error: sal needs pydantic and pyyaml; run benchmarks/fetch_wheels.sh on a networked machine first" >&2
  exit 2
}
cd "$root"
export PYTHONPATH="$root:$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$here/gpu_suite.py" "$@"
