#!/usr/bin/env bash
# Run on a machine WITH network: puts every wheel gpu_suite.sh needs into benchmarks/wheels/ (for CPython
# 3.12 on x86-64 Linux), so the suite can install them on a CUDA box without network. Copy the whole
# benchmarks/ folder (or the repository) across afterwards.
#   bash benchmarks/fetch_wheels.sh            # core: pydantic, pyyaml, optuna (+ dependencies)
#   WITH_MLFLOW=1 bash benchmarks/fetch_wheels.sh   # also mlflow, for the per-trial overhead figure
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dest="${WHEELS:-$here/wheels}"
mkdir -p "$dest"
py="${PYTHON:-python3}"
fetch() {
  "$py" -m pip download --dest "$dest" --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    --platform any "$@"
}
fetch -r "$here/gpu_requirements.txt"
if [[ "${WITH_MLFLOW:-0}" == "1" ]]; then
  fetch "mlflow>=3.0"
fi
echo "wheels in $dest: $(ls "$dest" | wc -l) files"
