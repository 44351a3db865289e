"""The campaign: SAL's answer on MNIST-1D and digits, every stage, one command.

Per data set, three stages, each an ordinary sal command on a preset of this repository:
  compare      sal compare compare/campaign_<ds>.yaml            SAL vs Adam, SAM, SWA, tuned fairly
  attribution  sal ablate + report ablations/campaign_attribution_<ds>.yaml   factorial + trigger
  dose         sal ablate + report ablations/campaign_dose_<ds>.yaml          noise dose-response
Then scripts/findings.py writes <out>/README.md from the reports' summary.csv files and the stage times.

Scales: ``cpu`` runs the presets as declared (~38 min on 2 cores at load 6-14, 2026-12-07: docs/findings/times.csv);
``gpu`` and ``smoke`` are declared deltas of them (SCALES below), applied to copies written under the work
folder, so the presets stay the one place for everything else. The analysis plan of every stage is the
preset's own (sal hashes it into the queue and MLflow before the first run).

Reproducible on the CPU, bit for bit: each data set is one lane of stages run with ``--workers 1`` and
one torch thread, the two lanes side by side (one per core). One worker per queue keeps the TPE sampler's
trial sequence and the grouping of packed seeds the same on every run; two workers on one queue would race
for trials and make both depend on timing. ``<stage>_seeds.csv`` beside each report folder lists every per-seed test
metric, so two runs can be diffed; ``<stage>_epochs.csv`` (stages whose runs log the grad norm) holds the per-epoch
grad norm and plastic events the report's sharpness-around-events numbers are computed from.

Budget (measured 2026-12-03 on this 2-core machine while other jobs held it at load 7-9, so each lane got
~0.27 of a core: CPU time / wall time of the probes): seconds of wall time per seed-epoch, including each
run's test pass, packed seeds: mnist1d_cnn 0.7 (2 seeds packed, tuning) / 0.4-0.6 (10 packed), SAM 1.3;
digits cnn 0.5 / 0.3-0.5, SAM 1.0; plus ~2.5 s per run (MLflow, queue) and 30-100 s per report. At those
rates a lane (compare with 20 evaluation seeds + attribution + dose) takes 60-85 min; with a core per lane
(a quiet machine) ~0.3 of that, 20-26 min; the presets are sized for <= 60 min at twice a quiet machine's
load.

    python scripts/campaign.py                     # the campaign -> docs/findings (work: campaign/cpu)
    python scripts/campaign.py --smoke --out DIR   # 2 seeds, 2 epochs, 2 trials: the code path
    python scripts/campaign.py --scale gpu --gpus 0,1 --workers 2   # not bit-for-bit (parallel queues)
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from sal.core.spec_base import SpecError  # noqa: E402

from campaign_outputs import check_campaign_folder, write_owned  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "findings"  # the cpu scale's findings; its summary also goes into README.md
DATASETS = ("mnist1d", "digits")
STAGES = {  # stage -> preset, in the order a lane runs them
    "compare": "compare/campaign_{ds}.yaml",
    "attribution": "ablations/campaign_attribution_{ds}.yaml",
    "dose": "ablations/campaign_dose_{ds}.yaml",
}


@dataclass(frozen=True)
class Scale:
    """Deltas of the presets; None keeps the preset's value."""

    epochs: dict[str, int] = field(default_factory=dict)  # data set -> train.epochs
    trials: int | None = None  # tuning trials per method
    tuning_seeds: int | None = None
    startup_trials: int | None = None  # TPE's random trials before it models
    eval_seeds: int | None = None  # first look of the evaluation
    max_seeds: int | None = None  # 0: a fixed design (no sequential looks)
    step: int | None = None
    ablation_seeds: int | None = None
    what: str = ""  # one line for the findings: what this scale can and cannot show


SCALES = {
    "cpu": Scale(what="20 (MNIST-1D) / 30 (digits) epochs, 8 trials x 2 seeds per method, evaluation up to 20 "
                 "seeds, 10 seeds per ablation cell: short training (MNIST-1D's paper trains 150 epochs), a "
                 "sparse search of SAL's seven knobs, and effects above roughly 1 accuracy point (see mde)"),
    "gpu": Scale(epochs={"mnist1d": 150, "digits": 60}, trials=40, tuning_seeds=3, startup_trials=10, eval_seeds=20,
                 max_seeds=40, step=10, ablation_seeds=30,
                 what="the paper's 150 MNIST-1D epochs, 40 trials x 3 seeds per method, up to 40 evaluation "
                 "seeds, 30 seeds per ablation cell: effects of a few tenths of a point"),
    "smoke": Scale(epochs={"mnist1d": 2, "digits": 2}, trials=2, tuning_seeds=1, startup_trials=1, eval_seeds=2,
                   max_seeds=0, ablation_seeds=2,
                   what="the code path only (2 epochs, 2 seeds): no verdict of it means anything"),
}


def _rescale_warmup(cells: dict, old: int, new: int) -> None:
    # SAL's warm-up keeps its share of training, and stays below the epochs (sal refuses a warm-up >= epochs)
    for over in cells.values():
        if "method.warmup" in over:
            over["method.warmup"] = max(0, min(new - 1, round(over["method.warmup"] * new / old)))


def scaled(doc: dict, scale: Scale, ds: str) -> dict:
    """The preset ``doc`` at ``scale`` (a compare spec has ``methods``, an ablation ``cells``)."""
    doc = copy.deepcopy(doc)
    if ds in scale.epochs:
        train = doc["base"]["train"]
        old, train["epochs"] = train["epochs"], scale.epochs[ds]
        _rescale_warmup(doc.get("methods") or doc["cells"], old, train["epochs"])
    if "methods" in doc:
        t, e = doc["tuning"], doc["evaluation"]
        for key, value in (("trials", scale.trials), ("seeds", scale.tuning_seeds)):
            if value is not None:
                t[key] = value
        if scale.startup_trials is not None:
            t.setdefault("sampler", {}).setdefault("options", {})["n_startup_trials"] = scale.startup_trials
        for key, value in (("seeds", scale.eval_seeds), ("max_seeds", scale.max_seeds), ("step", scale.step)):
            if value is not None:
                e[key] = value
        if e.get("max_seeds") == 0:
            e.pop("max_seeds")
            e.pop("step", None)
    elif scale.ablation_seeds is not None:
        doc["seeds"] = scale.ablation_seeds
    return doc


@dataclass
class Lane:
    """One data set's stages, run one after the other."""

    ds: str
    args: argparse.Namespace
    times: dict[str, float] = field(default_factory=dict)
    failed: str = ""

    def _sal(self, *argv: str, log) -> None:
        cmd = [sys.executable, "-m", "sal", *argv, "--tracking-uri", self.args.uri]
        log.write(f"$ {' '.join(cmd)}\n")
        log.flush()
        subprocess.run(cmd, cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT, check=True)

    def _pool(self, name: str, kind: str) -> list[str]:
        a = self.args
        out = ["--workers", str(a.workers), "--storage", str(a.work / "optuna" / f"{kind}-{name}.journal"),
               "--checkpoint-dir", str(a.work / "checkpoints")]
        return out + (["--gpus", a.gpus] if a.gpus else [])

    def run_stage(self, stage: str, log) -> None:
        a = self.args
        doc = scaled(yaml.safe_load((REPO / STAGES[stage].format(ds=self.ds)).read_text()), a.scale, self.ds)
        preset = a.work / "presets" / Path(STAGES[stage].format(ds=self.ds)).name
        preset.parent.mkdir(parents=True, exist_ok=True)
        preset.write_text(yaml.safe_dump(doc, sort_keys=False))
        out = a.out / self.ds / stage
        figures = ["--no-figures"] if a.no_figures else []
        if stage == "compare":
            self._sal("compare", str(preset), "--out", str(out), *figures, *self._pool(doc["name"], "compare"),
                      log=log)
        else:
            self._sal("ablate", str(preset), *self._pool(doc["name"], "ablation"), log=log)
            self._sal("report", doc["name"], "--out", str(out), *figures, log=log)
        # beside the report folder, not in it: sal's report refuses a folder holding files it did not write,
        # so a file of ours in there would stop the next run of the campaign
        write_seeds(a.uri, doc["name"], a.out, f"{self.ds}/{stage}_seeds.csv")
        write_epochs(a.uri, doc["name"], a.out, f"{self.ds}/{stage}_epochs.csv")
        if stage == "compare":
            write_owned(a.out, f"{self.ds}/compare_design.csv", design_csv(preset))

    def __call__(self) -> None:
        with open(self.args.work / f"{self.ds}.log", "a") as log:
            for stage in self.args.stages:
                start = time.perf_counter()
                try:
                    self.run_stage(stage, log)
                except subprocess.CalledProcessError as err:
                    self.failed = f"{self.ds} {stage}: exit {err.returncode} (see {log.name})"
                    print(self.failed, flush=True)
                    return
                self.times[stage] = time.perf_counter() - start
                print(f"[{time.strftime('%H:%M:%S')}] {self.ds:8s} {stage:12s} {self.times[stage]:7.1f} s", flush=True)


def _env() -> dict[str, str]:
    # one torch/OpenMP thread per process: tiny nets on shared cores run many times slower on two threads,
    # and one thread is what makes a lane's arithmetic the same on every run
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _csv_text(header: list[str], rows) -> str:
    text = io.StringIO()
    w = csv.writer(text, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return text.getvalue()


def write_seeds(uri: str, name: str, out: Path, rel: str) -> None:
    """Every finished seed run of ablation/compare ``name``'s evaluation: cell, seed, test metrics (exact),
    as ``out/rel`` (a file the campaign owns: scripts/campaign_outputs.py)."""
    from sal.tracking.store import experiment_name, runs_frame

    runs = runs_frame(uri, [experiment_name("ablation", name)])
    cols = {"tags.sal.cell": "cell", "tags.seed": "seed", "metrics.test/acc": "test_acc",
            "metrics.test/loss": "test_loss"}
    rows = runs[[c for c in cols if c in runs]].rename(columns=cols).dropna(subset=["seed", "test_acc"])
    rows = rows.assign(seed=rows["seed"].astype(int)).sort_values(["cell", "seed"])
    write_owned(out, rel, _csv_text(list(rows.columns), [[repr(v) if isinstance(v, float) else v for v in r]
                                                         for r in rows.itertuples(index=False)]))


def write_epochs(uri: str, name: str, out: Path, rel: str) -> None:
    """The per-epoch grad norm and plastic events of every run the report of ``name`` analyses (run id, cell,
    seed, epoch, grad norm to 6 significant digits, deform/revert/noise flags) as ``out/rel``, so the report's
    grad norm around plastic events can be recomputed from committed files (sal.report.event_sharpness:
    history_from_epochs, then event_contrasts); nothing for a stage whose runs did not log the grad norm."""
    from sal.report.build import analysed_histories
    from sal.report.event_sharpness import epoch_table

    table = epoch_table(analysed_histories(uri, name))
    if not table.empty:
        write_owned(out, rel, table.to_csv(index=False, lineterminator="\n"))


def design_csv(preset: Path) -> str:
    """A compare stage's evaluation design, one row per look: its seeds and nominal two-sided p threshold,
    as sal compare computes them (looks_of, sequential_alphas); scripts/findings.py forms the campaign's
    family from it (docs/statistics.md, "The campaign's family")."""
    from sal.spec.analysis import AnalysisSpec
    from sal.stats.inference import sequential_alphas
    from sal.sweeps.compare import load_compare, looks_of

    spec = load_compare(preset)
    e, alpha = spec.evaluation, (spec.analysis or AnalysisSpec()).alpha
    looks = looks_of(e)
    thresholds = sequential_alphas(looks, alpha) if e.sequential else [alpha]
    return _csv_text(["look", "n_seeds", "seeds", "threshold", "alpha"],
                     [[k + 1, n, " ".join(map(str, e.seed_list[:n])), repr(t), alpha]
                      for k, (n, t) in enumerate(zip(looks, thresholds))])


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--smoke", action="store_true", help="same as --scale smoke")
    p.add_argument("--out", type=Path, help="findings folder (default docs/findings; gpu: docs/findings_gpu)")
    p.add_argument("--work", type=Path, help="MLflow store, Optuna journals, logs (default campaign/SCALE)")
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--stages", default=",".join(STAGES))
    p.add_argument("--workers", type=int, default=1, help="workers per queue (1 keeps runs bit for bit)")
    p.add_argument("--gpus", help="passed to sal (gpu scale)")
    p.add_argument("--no-figures", action="store_true", help="reports without figures (faster smoke runs)")
    p.add_argument("--sequential", action="store_true", help="run the data sets one after the other")
    p.add_argument("--epochs", type=int, help="probe: train.epochs of every stage")
    p.add_argument("--seeds", type=int, help="probe: seeds of every stage (fixed design)")
    p.add_argument("--trials", type=int, help="probe: tuning trials per method")
    a = p.parse_args(argv)
    a.scale_name = "smoke" if a.smoke else a.scale
    scale = SCALES[a.scale_name]
    if a.epochs:
        scale = replace(scale, epochs={ds: a.epochs for ds in DATASETS})
    if a.seeds:
        scale = replace(scale, eval_seeds=a.seeds, max_seeds=0, ablation_seeds=a.seeds, tuning_seeds=min(a.seeds, 2))
    if a.trials:
        scale = replace(scale, trials=a.trials, startup_trials=min(a.trials, 4))
    a.scale = scale
    a.datasets = [d for d in a.datasets.split(",") if d]
    a.stages = [s for s in a.stages.split(",") if s]
    for value, known, what in ((a.datasets, DATASETS, "--datasets"), (a.stages, STAGES, "--stages")):
        if bad := sorted(set(value) - set(known)):
            p.error(f"{what}: unknown {bad}; use some of {list(known)}")
    if a.out is None:
        if a.scale_name == "smoke":
            p.error("--smoke needs --out DIR (the smoke run never writes docs/findings)")
        a.out = DEFAULT_OUT if a.scale_name == "cpu" else REPO / "docs" / f"findings_{a.scale_name}"
    a.work = (a.work or REPO / "campaign" / a.scale_name).resolve()
    a.out = a.out.resolve()
    a.uri = f"sqlite:///{a.work / 'mlflow.db'}"
    return a


def _times_rows(a: argparse.Namespace, lanes: list[Lane], total: float) -> list[list]:
    """times.csv's rows: the stages this run timed, the other stages' rows of the earlier times.csv kept (a run
    of some stages, e.g. one stage re-run, leaves the others' times as measured), and the total wall time only
    when this run ran every stage of every data set (after a partial run no total describes the stages)."""
    rows = {(lane.ds, stage): round(s, 1) for lane in lanes for stage, s in lane.times.items()}
    full = set(a.datasets) == set(DATASETS) and set(a.stages) == set(STAGES)
    try:
        with open(a.out / "times.csv", newline="") as f:
            earlier = {(r["dataset"], r["stage"]): r["seconds"] for r in csv.DictReader(f)}
    except (OSError, KeyError, csv.Error):
        earlier = {}
    for key, seconds in earlier.items():
        if key not in rows and key[0] != "all":
            rows[key] = seconds
    if full:
        rows[("all", "side by side" if not a.sequential else "one after the other")] = round(total, 1)
    order = {key: i for i, key in enumerate((ds, stage) for ds in DATASETS for stage in STAGES)}
    return [[ds, stage, seconds] for (ds, stage), seconds in
            sorted(rows.items(), key=lambda item: order.get(item[0], len(order)))]


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    try:  # before any compute: a folder of the user's files, a file or a read-only folder is refused here
        check_campaign_folder(a.out, DATASETS, STAGES)
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    a.work.mkdir(parents=True, exist_ok=True)
    print(f"campaign ({a.scale_name}): {', '.join(a.datasets)} x {', '.join(a.stages)}; work {a.work}; "
          f"findings {a.out}", flush=True)
    start = time.perf_counter()
    lanes = [Lane(ds, a) for ds in a.datasets]
    if a.sequential:
        for lane in lanes:
            lane()
    else:
        threads = [threading.Thread(target=lane, name=lane.ds) for lane in lanes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    total = time.perf_counter() - start
    from findings import write_findings

    write_owned(a.out, "times.csv", _csv_text(["dataset", "stage", "seconds"], _times_rows(a, lanes, total)))
    readme = write_findings(a.out, scale=a.scale_name, what=a.scale.what,
                            summary_into=REPO / "README.md" if a.out == DEFAULT_OUT else None)
    print(f"campaign done in {total:.0f} s; findings: {readme}", flush=True)
    failed = [lane.failed for lane in lanes if lane.failed]
    for line in failed:
        print(f"FAILED {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
