"""The campaign (scripts/campaign.py): its presets at every scale are valid sal specs with the declared
budgets, and the smoke version runs end to end and writes the findings."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sal.sweeps.ablation import load_ablation
from sal.sweeps.compare import load_compare

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from campaign import DATASETS, SCALES, STAGES, scaled  # noqa: E402
from findings import dose_of, verdict_sentence  # noqa: E402


def _preset(stage: str, ds: str) -> dict:
    return yaml.safe_load((REPO / STAGES[stage].format(ds=ds)).read_text())


@pytest.mark.parametrize("scale", sorted(SCALES))
@pytest.mark.parametrize("ds", DATASETS)
def test_every_stage_is_a_valid_spec_at_every_scale(tmp_path, scale, ds):
    for stage in STAGES:
        path = tmp_path / f"{stage}.yaml"
        path.write_text(yaml.safe_dump(scaled(_preset(stage, ds), SCALES[scale], ds)))
        if stage == "compare":
            load_compare(path)
        else:
            load_ablation(path)


@pytest.mark.parametrize("ds", DATASETS)
def test_the_cpu_presets_declare_the_issues_budget(ds):
    c = load_compare(REPO / STAGES["compare"].format(ds=ds))
    assert set(c.methods) == {"adam", "sam", "swa", "sal"}
    assert c.evaluation.max_seeds >= 20 and c.evaluation.stop == "decided"  # seeds until decided, max >= 20
    assert c.base["data"]["name"] == ds and c.base["data"].get("val_fraction", 0.15) > 0  # tuning reads val/acc
    assert c.base["model"]["name"] == {"mnist1d": "mnist1d_cnn", "digits": "cnn"}[ds]
    for stage in ("attribution", "dose"):
        spec, items = load_ablation(REPO / STAGES[stage].format(ds=ds))
        assert len(spec.seed_list) >= 10
        assert spec.base["train"]["epochs"] == c.base["train"]["epochs"]  # one scale per data set


def test_smoke_scale_shrinks_epochs_seeds_trials_and_keeps_warmup_below_epochs():
    doc = scaled(_preset("compare", "mnist1d"), SCALES["smoke"], "mnist1d")
    assert doc["base"]["train"]["epochs"] == 2 and doc["methods"]["sal"]["method.warmup"] == 0  # 5 of 20 -> 0 of 2
    assert doc["tuning"]["trials"] == 2 and doc["tuning"]["seeds"] == 1
    assert doc["evaluation"]["seeds"] == 2 and "max_seeds" not in doc["evaluation"]  # a fixed design
    gpu = scaled(_preset("attribution", "mnist1d"), SCALES["gpu"], "mnist1d")
    assert gpu["base"]["train"]["epochs"] == 150 and gpu["seeds"] == 30
    assert gpu["cells"]["sal"]["method.warmup"] == round(5 * 150 / 20)


def test_findings_sentences_state_no_effect_plainly():
    s = verdict_sentence("sal", "adam", "inconclusive", delta=0.001, lo=-0.004, hi=0.006, n=20, mde=0.0071)
    assert s.startswith("No difference shown between sal and adam") and "[-0.40, +0.60]" in s and "0.71 points" in s
    assert verdict_sentence("sal", "sam", "better", delta=0.02, lo=0.01, hi=0.03, n=10, mde=0.01).startswith(
        "sal beats sam: sal - sam = +2.00 points, 95% CI [+1.00, +3.00]")  # every interval names its level
    assert "96.09% CI [-0.40, +0.60]" in verdict_sentence("sal", "adam", "inconclusive", delta=0.001, lo=-0.004,
                                                         hi=0.006, n=20, mde=0.0071, level="96.09%")
    assert dose_of("noise_1e-3") == 1e-3 and dose_of("adam") != dose_of("adam")


@pytest.mark.subprocess
def test_smoke_campaign_end_to_end(tmp_path):
    out, work = tmp_path / "findings", tmp_path / "work"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "campaign.py"), "--smoke", "--no-figures",
                           "--out", str(out), "--work", str(work)], cwd=REPO, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    for ds in DATASETS:
        for stage in STAGES:
            folder = out / ds / stage
            summary = pd.read_csv(folder / "summary.csv")
            compared = summary[summary["verdict"] != "reference"]
            assert set(compared["dataset"]) == {ds} and (compared["n"] == 2).all(), (ds, stage)
            assert (folder / "report.md").is_file()
            seeds = pd.read_csv(out / ds / f"{stage}_seeds.csv")
            assert seeds["test_acc"].between(0, 1).all()
            first = 1001 if stage == "compare" else 1
            assert sorted(set(seeds["seed"])) == [first, first + 1]
        assert set(pd.read_csv(out / ds / "compare" / "summary.csv")["method"]) == {"sal", "adam", "sam", "swa"}
        assert set(pd.read_csv(out / ds / "attribution" / "factorial.csv")["effect"]) == {
            "noise", "deformation", "interaction", "trigger"}
        dose = pd.read_csv(out / ds / "dose" / "summary.csv")
        dose_seeds = pd.read_csv(out / ds / "dose_seeds.csv")
        assert {"noise_2e-7", "noise_1e-2"} <= set(dose["method"])
    with open(out / "times.csv") as f:
        times = list(csv.DictReader(f))
    assert {(r["dataset"], r["stage"]) for r in times} >= {(ds, st) for ds in DATASETS for st in STAGES}
    assert all(float(r["seconds"]) > 0 for r in times)
    readme = (out / "README.md").read_text()
    for text in ("## mnist1d", "## digits", "Factorial effects", "noise std at yield", "mde (points)",
                 "Stage times", "the code path only", "Evaluation seeds: fixed design: 2 evaluation seeds"):
        assert text in readme
    assert not (REPO / "docs" / "findings" / "smoke").exists()
    # the same command again over its own findings: the queue is done, the report is written again
    again = subprocess.run([sys.executable, str(REPO / "scripts" / "campaign.py"), "--smoke", "--no-figures",
                            "--out", str(out), "--work", str(work), "--datasets", "digits", "--stages", "dose"],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert pd.read_csv(out / "digits" / "dose_seeds.csv").equals(dose_seeds)


@pytest.mark.parametrize("kind", ["users_files", "a_file", "read_only"])
def test_an_out_folder_the_campaign_may_not_write_is_refused_before_any_compute(tmp_path, capsys, kind):
    from campaign import main

    out, work = tmp_path / "out", tmp_path / "work"
    if kind == "users_files":
        out.mkdir()
        (out / "README.md").write_text("my notes\n")
        (out / "times.csv").write_text("my,times\n")
    elif kind == "a_file":
        out.write_text("a file\n")
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes a read-only folder anyway")
        out.mkdir()
        out.chmod(0o500)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    try:
        code = main(["--smoke", "--no-figures", "--out", str(out), "--work", str(work)])
    finally:
        if kind == "read_only":
            out.chmod(0o700)
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and "fix:" in err, err
    assert {"users_files": "README.md, times.csv", "a_file": "is a file", "read_only": "not writable"}[kind] in err
    assert not work.exists()  # nothing trained, nothing written: the refusal comes before the work folder
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_the_campaign_writes_only_what_it_owns(tmp_path):
    from sal.core.spec_base import SpecError

    from campaign_outputs import check_campaign_folder, write_owned

    write_owned(tmp_path, "times.csv", "a\n")
    write_owned(tmp_path, "times.csv", "b\n")  # its own file: replaced
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "compare_seeds.csv").write_text("the user's\n")
    with pytest.raises(SpecError, match="did not write"):
        write_owned(tmp_path, "digits/compare_seeds.csv", "ours\n")
    with pytest.raises(SpecError, match="digits/compare_seeds.csv"):
        check_campaign_folder(tmp_path, DATASETS, STAGES)
    assert (tmp_path / "times.csv").read_text() == "b\n"
    assert (tmp_path / "digits" / "compare_seeds.csv").read_text() == "the user's\n"
    (tmp_path / "digits" / "compare_seeds.csv").unlink()
    (tmp_path / "digits" / "compare").mkdir()
    (tmp_path / "digits" / "compare" / "mine.txt").write_text("x")  # a report folder sal report did not write
    with pytest.raises(SpecError, match="mine.txt"):
        check_campaign_folder(tmp_path, DATASETS, STAGES)
