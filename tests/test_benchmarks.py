"""The benchmark scripts run: the GPU suite's code paths on the CPU (smoke mode), the shell wrappers parse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_shell_scripts_parse():
    for script in ("gpu_suite.sh", "fetch_wheels.sh"):
        assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / script)]).returncode == 0


@pytest.mark.slow
def test_gpu_suite_smoke_on_the_cpu(tmp_path):
    """The suite's every figure is produced on the CPU with tiny sizes: the code a CUDA box will run."""
    out = tmp_path / "suite.json"
    env = {"PYTHONPATH": f"{ROOT}:{ROOT / 'benchmarks'}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_suite.py"), "--device", "cpu", "--smoke",
                           "--json", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    names = [r["benchmark"] for r in result["rows"]]
    assert names[0] == "SAL epoch / base epoch" and result["rows"][0]["value"] > 0
    recompiles = next(r for r in result["rows"] if r["benchmark"].startswith("recompiles"))
    assert recompiles["value"] == 0  # SAL's in-place interventions, new seeds and new knobs reuse the graph
    packed = [r for r in result["rows"] if r["benchmark"].startswith("packed")]
    assert len(packed) == 2 and all(r["value"] > 0 for r in packed)
    assert "MLflow + Optuna per trial" in names
    assert "SAL epoch / base epoch" in proc.stdout  # the table
