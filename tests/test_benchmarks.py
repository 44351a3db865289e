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


@pytest.mark.subprocess
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


def _smoke(script: str, tmp_path) -> tuple[dict, str]:
    out = tmp_path / "out.json"
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke", "--json", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.subprocess
def test_mnist1d_table_smoke(tmp_path):
    """The paper's three models train through sal's seeds (2 seeds x 2 epochs) and print beside the paper."""
    result, stdout = _smoke("bench_mnist1d_table.py", tmp_path)
    rows = {r["model"]: r for r in result["rows"]}
    assert {m: r["n_params"] for m, r in rows.items()} == {"mnist1d_mlp": 15_210, "mnist1d_cnn": 5_210,
                                                           "mnist1d_linear": 410}
    assert {m: r["published"] for m, r in rows.items()} == {"mnist1d_mlp": 68.0, "mnist1d_cnn": 94.0,
                                                            "mnist1d_linear": 32.0}
    for r in rows.values():
        assert r["n_train"] == 4000 and r["steps"] == 80 and len(r["test_acc"]) == 2
        assert 15 < r["mean"] < 100 and r["ci_low"] <= r["mean"] <= r["ci_high"]  # learning (chance: 10%)
    assert "published" in stdout and "mnist1d_cnn" in stdout


@pytest.mark.subprocess
def test_mnist1d_speed_smoke(tmp_path):
    """The side-by-side loops do the same work (equal weights after an epoch) and every figure is produced."""
    result, stdout = _smoke("bench_mnist1d_speed.py", tmp_path)
    (row,) = result["loops"]
    assert row["model"] == "mnist1d_cnn" and row["grouped"] and row["n_val"] == 800
    assert row["weights_max_abs_diff_after_1_epoch"] < 1e-5
    for clock in ("wall", "cpu"):
        assert row[f"{clock}_one_vs_plain"] > 0 and row[f"{clock}_packed_vs_plain"] > 0
    stage = result["stage"]
    assert stage["stage_s"] > 0 and stage["bare_s"] > 0 and -1 < stage["overhead_share"] < 1
    assert 0 < stage["mlflow_share_profiled"] < 1 and 0 < stage["optuna_share_profiled"] < 1
    assert "MLflow + Optuna" in stdout


@pytest.mark.subprocess
def test_tuning_rule_smoke(tmp_path):
    """Every rule of every k in every scenario is simulated (400 replications) and printed side by side."""
    result, stdout = _smoke("bench_tuning_rule.py", tmp_path)
    assert result["replications"] == 400
    cells = {(r["scenario"], r["rule"], r["k"]) for r in result["rows"]}
    assert cells == {(s, rule, k) for s in ("digits", "mnist1d", "unequal noise", "divergence")
                     for rule in ("mean", "worst", "lcb") for k in (2, 3, 5)}
    for r in result["rows"]:
        assert r["regret"] >= 0 and r["configurations"] == 16 // r["k"]
        if r["rule"] == "mean":  # each rule against the mean on the same draws: the mean against itself is 0
            assert r["minus_mean"] == r["minus_mean_se"] == 0
    assert "k=2 (8 configs)" in stdout and "divergence" in stdout
