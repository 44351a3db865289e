"""`sal compare`: every method tuned with one budget, evaluated on fresh seeds, until decided."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from sal.cli import main
from sal.core.names import ATTR_PER_SEED, TAG_COMPARE, TAG_KIND, TAG_STAGE
from sal.queue.engine import StorageRef
from sal.stats import inference as stats
from sal.sweeps.compare import load_compare, looks_of, tuning_spec
from sal.tracking.store import client_for, runs_frame
from tests.helpers import ABLATION_RUNS, STUDY_RUNS, TINY_BASE

REPO = Path(__file__).resolve().parents[1]


def _write(tmp_path, name, **fields):
    doc = {"name": name, "base": {**TINY_BASE, "train": {"epochs": 3, "batch_size": 32}},
           "methods": {"adam": {"method.name": "base"}, "sal": {"method.name": "sal", "method.warmup": 1}},
           "tuning": {"trials": 3, "seeds": 2, "sampler": {"name": "random", "seed": 0}, "pruner": {"name": "none"}},
           "evaluation": {"seeds": 3, "first_seed": 101, "max_seeds": 5, "step": 1}}
    doc.update(fields)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.training
def test_compare_tunes_every_method_with_one_budget_and_evaluates_on_fresh_seeds(tmp_path, mlflow_uri, capsys):
    path, journal = _write(tmp_path, "fair"), tmp_path / "c.journal"
    args = ["--tracking-uri", mlflow_uri, "compare", str(path), "--storage", str(journal), "--out",
            str(tmp_path / "report"), "--no-figures"]
    assert main(args) == 0
    storage = StorageRef(str(journal)).open()
    budgets = {}
    for cell in ("adam", "sal"):
        trials = optuna.load_study(study_name=f"fair.{cell}", storage=storage).trials
        budgets[cell] = (len(trials), {len(t.user_attrs[f"{ATTR_PER_SEED}.val/acc"]) for t in trials})
    assert budgets == {"adam": (3, {2}), "sal": (3, {2})}  # the same budget, read back from Optuna
    tuned = optuna.load_study(study_name="fair.adam", storage=storage).trials[0].params
    assert set(tuned) == {"optim.lr"}  # the baseline is tuned too
    tune_runs = runs_frame(mlflow_uri, ["sal-study-fair.adam", "sal-study-fair.sal"], STUDY_RUNS)
    eval_runs = runs_frame(mlflow_uri, ["sal-ablation-fair"], ABLATION_RUNS)
    assert set(tune_runs["tags.seed"].astype(int)) == {1, 2}
    eval_seeds = set(eval_runs["tags.seed"].astype(int))
    assert eval_seeds <= set(range(101, 106)) and len(eval_seeds) >= 3 and not eval_seeds & {1, 2}
    assert set(tune_runs[f"tags.{TAG_STAGE}"]) == {"tune"} and set(eval_runs[f"tags.{TAG_STAGE}"]) == {"evaluate"}
    assert set(tune_runs[f"tags.{TAG_COMPARE}"]) == set(eval_runs[f"tags.{TAG_COMPARE}"]) == {"fair"}
    # MLflow: one parent run per compare stage in each experiment, holding the trial and cell parents
    for experiment, stage, kind in (("sal-study-fair.adam", "tune", "trial"),
                                    ("sal-ablation-fair", "evaluate", "cell")):
        runs = runs_frame(mlflow_uri, [experiment])
        top = runs[runs[f"tags.{TAG_KIND}"] == "compare"]
        assert len(top) == 1 and top.iloc[0][f"tags.{TAG_STAGE}"] == stage and top.iloc[0]["status"] == "FINISHED"
        groups = runs[runs[f"tags.{TAG_KIND}"] == kind]
        parents = {client_for(mlflow_uri).get_run(r).data.tags.get("mlflow.parentRunId") for r in groups["run_id"]}
        assert len(groups) and parents == {top.iloc[0]["run_id"]}
    out = capsys.readouterr().out
    assert "stopped:" in out and "look at 3 seeds" in out
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Protocol: tuning, selection, evaluation" in md and "Tuning budget per method" in md
    assert "they share 0 seeds" in md and "Sequential looks" in md
    # the answer at every tuning budget: each method's 3 trials give E[best of n] for n = 1, 2, 3 (Dodge et al.)
    values = [t.value for t in optuna.load_study(study_name="fair.sal", storage=storage).trials]
    expected = stats.expected_max_curve(values)
    assert "The answer at every tuning budget" in md and "Expected best objective at each tuning budget" in md
    for n in (1, 2, 3):
        assert f"| sal | {n} | {round(float(expected[n - 1]), 4):g} |" in md
    # descriptive: no band, no crossing verdict; the methods are compared at one n, the fewest complete trials
    assert "descriptive" in md and "band (95%)" not in md and "stays beyond" not in md
    assert "at n = 3 trials, the fewest complete trials of any method: " in md and f"sal {expected[2]:.4f}" in md
    budget = pd.read_csv(tmp_path / "report" / "budget.csv")
    assert "crossing" not in budget.columns and set(budget["trials n"]) == {1, 2, 3}
    # resumable and idempotent: a second run trains nothing new
    assert main(args) == 0
    assert len(runs_frame(mlflow_uri, ["sal-ablation-fair"], ABLATION_RUNS)) == len(eval_runs)


def test_overlapping_seeds_and_other_bad_specs_exit_2(tmp_path, capsys):
    path = _write(tmp_path, "overlap", evaluation={"seeds": [2, 3, 4]})
    assert main(["compare", str(path)]) == 2
    assert "evaluation seeds [2] are also tuning seeds" in capsys.readouterr().err
    path = _write(tmp_path, "space", tuning={"trials": 2, "space": {"adamw": {"optim.lr": {"low": 1e-3,
                                                                                          "high": 1e-2}}}})
    assert main(["compare", str(path)]) == 2
    assert "tuning.space names ['adamw'], which are not methods" in capsys.readouterr().err
    path = _write(tmp_path, "maxlow", evaluation={"seeds": 10, "max_seeds": 5})
    assert main(["compare", str(path)]) == 2
    assert "evaluation.max_seeds=5 is below evaluation.seeds=10" in capsys.readouterr().err


def test_each_method_is_tuned_over_its_own_knobs_and_the_shared_ones(tmp_path):
    spec = load_compare(REPO / "compare" / "quick.yaml")
    spaces = {cell: set(tuning_spec(spec, cell).space) for cell in spec.methods}
    assert spaces["adam"] == {"optim.lr"} and spaces["sam"] == {"optim.lr", "method.rho"}
    assert spaces["swa"] == {"optim.lr", "method.swa_start", "method.swa_lr"}
    assert {"optim.lr", "method.rho", "method.theta", "method.s_noise", "method.s_yield", "method.delta",
            "method.lambda", "method.sigma_y"} == spaces["sal"]
    budgets = {(s.n_trials, tuple(s.seed_list), s.sampler.name, s.pruner.name) for s in
               (tuning_spec(spec, c) for c in spec.methods)}
    assert len(budgets) == 1  # one budget for all
    assert looks_of(spec.evaluation) == [8, 12, 16]
