#!/usr/bin/env bash
# The campaign: SAL against tuned Adam, SAM and SWA, the attribution ablation and the noise
# dose-response, on MNIST-1D (the paper's CNN) and digits (sal's small CNN), with one command:
#   ./scripts/campaign.sh                 the CPU scale (~38 min on 2 busy cores) -> docs/findings/
#   ./scripts/campaign.sh --smoke --out DIR   2 seeds, 2 epochs: the code path (the test suite runs it)
#   ./scripts/campaign.sh --scale gpu --workers 2 --gpus 0,1   -> docs/findings_gpu/ (more epochs, seeds, trials)
# Sets up .venv like scripts/quickstart.sh; keeps its own MLflow store and Optuna journals under campaign/SCALE
# (gitignored), never the user's mlflow/; prints each stage's wall time. Options: scripts/campaign.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1  # one torch thread per process (see scripts/campaign.py)
exec .venv/bin/python scripts/campaign.py "$@"
