#!/usr/bin/env bash
# The quick start on the embedded default: sets up .venv, then on scikit-learn's digits (CPU):
#   1. a paired ablation: SAL vs Adam, SAM, SWA, noise-only, deform-only, shrink-perturb (7 x 5 seeds)
#   2. an Optuna study over SAL's seven knobs (20 trials x 3 seeds)
#   3. the significance report of the ablation -> reports/quick/report.html
# Every run lands in MLflow (mlflow/mlflow.db); re-running resumes and only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
sal=.venv/bin/sal
start=$(date +%s)
$sal ablate ablations/quick.yaml --workers "${SAL_WORKERS:-2}"
$sal study run studies/quick.yaml --workers "${SAL_WORKERS:-2}"
$sal study best quick --out reports/quick_best.yaml
$sal report quick --out reports/quick
echo
echo "quick start done in $(( $(date +%s) - start )) s (after set-up)"
echo "report:   reports/quick/report.html   (and report.md, summary.csv, table.tex, figures/)"
echo "best:     reports/quick_best.yaml      (train it: $sal train --config reports/quick_best.yaml)"
echo "browse:   $sal ui                      (MLflow UI on http://127.0.0.1:5000)"
