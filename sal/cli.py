"""``sal`` / ``python -m sal``: the only place that prints or reads argv.

Bad input (unknown key, impossible value, missing file) exits 2 before any compute and writes nothing.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from .config import SpecError

__all__ = ["main"]

EXIT_BAD_INPUT = 2
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        _COMMANDS[name] = fn
        return fn
    return register


def _uri(args: argparse.Namespace) -> str:
    from .tracking import default_tracking_uri

    return args.tracking_uri or default_tracking_uri()


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .config import load_run_spec, parse_overrides
    from .tracking import experiment_name, log_result
    from .train import train

    spec = load_run_spec(args.config, parse_overrides(args.set))
    uri = _uri(args)
    print(f"training {spec.method.name} on {spec.data.name} ({spec.model.name}, {spec.optim.name}), seed {spec.seed}, "
          f"{spec.train.epochs} epochs")
    result = train(spec)
    run_id = log_result(result, uri=uri, experiment=args.experiment or experiment_name("train"), kind="train")
    final = ", ".join(f"{k}={v:.4g}" for k, v in result.final.items())
    print(f"status {result.status}{': ' + result.message if result.message else ''}")
    print(f"{final}\nMLflow run {run_id} in {uri}")
    return 0


def _gpus(value: str | None) -> list[str] | None:
    if not value:
        return None
    gpus = [g.strip() for g in value.split(",") if g.strip()]
    if not all(g.isdigit() for g in gpus):
        raise SpecError([f"--gpus={value!r} must list device numbers; fix: e.g. --gpus 0,1"])
    return gpus


def _check_workers(n: int) -> int:
    if n < 1:
        raise SpecError([f"--workers={n} must be at least 1; fix: --workers 1"])
    return n


@command("ablate")
def _ablate(args: argparse.Namespace) -> int:
    from .ablation import load_ablation, run_ablation
    from .config import parse_overrides
    from .engine import StorageRef

    spec, items = load_ablation(args.file, parse_overrides(args.set), seeds=args.seeds)
    workers, gpus = _check_workers(args.workers), _gpus(args.gpus)
    ref = StorageRef.resolve(args.storage, spec.name, "ablation")
    cells = sorted({(i.spec.data.display_name, i.context, i.cell) for i in items})
    print(f"ablation {spec.name}: {len(cells)} cells x {len(spec.seed_list)} seeds = {len(items)} runs")
    if args.dry_run:
        for dataset, context, cell in cells:
            print(f"  {dataset:14s} {context:32s} {cell}")
        return 0
    uri = _uri(args)
    print(f"queue {ref.url}; MLflow {uri}")
    out = run_ablation(spec, items, ref=ref, uri=uri, workers=workers, gpus=gpus, retry_failed=args.retry_failed,
                       wait=not args.no_wait)
    q = out["queue"]
    print(f"before: {len(q['done'])} done, {len(q['pending'])} pending, {len(q['queued'])} queued now, "
          f"{len(q['failed'])} failed (re-run them with --retry-failed)")
    print("trials by state:", ", ".join(f"{k.lower()} {v}" for k, v in sorted(out["states"].items())))
    if out["failed_workers"]:
        print(f"{out['failed_workers']} worker(s) stopped with an error (see above); re-run the same command to "
              "finish their trials", file=sys.stderr)
        return 1
    return 0


@command("study")
def _study(args: argparse.Namespace) -> int:
    return {"run": _study_run, "status": _study_status, "best": _study_best}[args.study_command](args)


def _study_run(args: argparse.Namespace) -> int:
    from .config import parse_overrides
    from .engine import StorageRef
    from .study import run_study
    from .study_spec import load_study_spec
    from .study_summary import log_study_summary

    spec = load_study_spec(args.file, parse_overrides(args.set), n_trials=args.n_trials, timeout=args.timeout,
                           seeds=args.seeds)
    workers, gpus = _check_workers(args.workers), _gpus(args.gpus)
    ref, uri = StorageRef.resolve(args.storage, spec.name, "study"), _uri(args)
    print(f"study {spec.name}: {spec.n_trials} trials x {len(spec.seed_list)} seeds, sampler {spec.sampler.name}, "
          f"pruner {spec.pruner.name}, objective " + ", ".join(f"{o.aggregate}({o.metric}) {o.direction}"
                                                              for o in spec.objectives))
    print(f"storage {ref.url}; MLflow {uri}")
    study = run_study(spec, ref=ref, uri=uri, workers=workers, gpus=gpus)
    run_id, summary = log_study_summary(study, uri)
    _print_status(study)
    print(f"summary run {run_id}")
    return 0


def _open_existing(args: argparse.Namespace):
    import optuna

    from .engine import StorageRef

    ref = StorageRef.resolve(args.storage, args.name, "study")
    if ref.is_journal and not Path(ref.url).is_file():
        raise SpecError([f"no study {args.name!r}: {ref.url} does not exist; fix: run `sal study run` first or "
                         "pass its --storage"])
    try:
        return optuna.load_study(study_name=args.name, storage=ref.open())
    except KeyError:
        raise SpecError([f"no study {args.name!r} in {ref.url}; fix: check the name or --storage"]) from None


def _print_status(study) -> None:
    from .engine import trials_by_state
    from .study import best_trial

    states = trials_by_state(study)
    print(f"study {study.study_name}: " + ", ".join(f"{k.lower()} {v}" for k, v in sorted(states.items())))
    if states.get("COMPLETE"):
        best = best_trial(study)
        print(f"best trial {best.number}: value {best.values}")
        for k, v in best.params.items():
            print(f"  {k} = {v}")
        for k, v in best.user_attrs.items():
            if k.startswith("sal.per_seed"):
                print(f"  per seed {k.removeprefix('sal.per_seed.')}: {v}")


def _study_status(args: argparse.Namespace) -> int:
    _print_status(_open_existing(args))
    return 0


def _study_best(args: argparse.Namespace) -> int:
    from .config import to_yaml
    from .engine import trials_by_state
    from .study import best_spec

    study = _open_existing(args)
    if not trials_by_state(study).get("COMPLETE"):
        raise SpecError([f"study {args.name!r} has no complete trial yet; fix: let `sal study run` finish some"])
    spec = best_spec(study)
    text = to_yaml(spec)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(f"# best trial of study {args.name}; train it with: sal train --config {out}\n" + text)
    tmp.replace(out)  # atomic
    print(f"wrote {out}")
    return 0


@command("report")
def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .report import build_report

    metrics = args.metric or ["test/acc"]
    if not 0 < args.alpha < 1:
        raise SpecError([f"--alpha={args.alpha} must be in (0, 1); fix: e.g. --alpha 0.05"])
    if args.rope < 0:
        raise SpecError([f"--rope={args.rope} must be >= 0; fix: e.g. --rope 0.002 (0.2 accuracy points)"])
    out = Path(args.out or Path("reports") / args.name)
    kwargs = dict(metrics=metrics, rope=args.rope, alpha=args.alpha, correction=args.correction, family=args.family,
                  allow_unpaired=args.allow_unpaired, random_state=args.random_state)
    folder, summary = build_report(_uri(args), args.name, out, baseline=args.baseline, filter_string=args.filter or "",
                                   draw_figures=not args.no_figures, **kwargs)
    primary = summary[(summary["metric"] == metrics[0]) & (summary["verdict"] != "reference")]
    for _, r in primary.iterrows():
        where = f"{r['dataset']} {r['context']}".strip()
        print(f"  {where:24s} {r['method']:18s} delta {r['delta']:+.4f} [{r['delta_ci_low']:+.4f}, "
              f"{r['delta_ci_high']:+.4f}]  p_holm {r['p_holm']:.3g}  {r['verdict']}")
    print(f"report: {folder / 'report.html'} (also report.md, summary.csv, table.tex)")
    return 0


@command("ui")
def _ui(args: argparse.Namespace) -> int:
    uri = _uri(args)
    if uri.startswith("sqlite:///"):
        from .tracking import client_for

        client_for(uri).search_experiments()  # creates the store (and its tables) if this is a first start
    print(f"MLflow UI on http://127.0.0.1:{args.port} (store {uri}); Ctrl-C stops it", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--storage", help="Optuna storage: a .journal file (default optuna/KIND-NAME.journal), "
                   "sqlite:///file.db, or postgresql://... shared by several machines")
    p.add_argument("--gpus", help="comma-separated GPU numbers; worker i uses the (i mod n)-th")
    p.add_argument("--no-wait", action="store_true",
                   help="stop when the queue is empty instead of waiting for other workers' running trials")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sal", description="Sweeps, ablations and significance reports for "
                                "Stress-Aware Learning")
    p.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlflow/mlflow.db)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress of every run")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train one run and log it to MLflow")
    t.add_argument("--config", help="YAML run spec (defaults apply to what it leaves out)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key, e.g. method.rho=1e-3")
    t.add_argument("--experiment", help="MLflow experiment (default sal-train)")

    a = sub.add_parser("ablate", help="run an ablation grid (cells x seeds), resumable, on Optuna's queue")
    a.add_argument("file", help="ablation YAML, e.g. ablations/quick.yaml")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key of the base spec")
    a.add_argument("--seeds", type=int, help="number of seeds (overrides the file)")
    _add_engine_args(a)
    a.add_argument("--retry-failed", action="store_true", help="run again the cells whose run crashed")
    a.add_argument("--dry-run", action="store_true", help="print the cells and their count, run nothing")

    st = sub.add_parser("study", help="Optuna studies over SAL's knobs, multi-seed trials")
    ssub = st.add_subparsers(dest="study_command", required=True)
    sr = ssub.add_parser("run", help="run (or resume) a study from its YAML spec")
    sr.add_argument("file", help="study YAML, e.g. studies/quick.yaml")
    sr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key of the base spec")
    sr.add_argument("--n-trials", type=int, help="finished trials to reach (overrides the file)")
    sr.add_argument("--timeout", type=float, help="seconds for this invocation")
    sr.add_argument("--seeds", type=int, help="seeds per trial (overrides the file)")
    _add_engine_args(sr)
    for name, text in (("status", "trials by state and the best so far"),
                       ("best", "write the best trial's run spec (for sal train or an ablation cell)")):
        sp = ssub.add_parser(name, help=text)
        sp.add_argument("name", help="study name")
        sp.add_argument("--storage", help="the study's storage (default optuna/study-NAME.journal)")
        if name == "best":
            sp.add_argument("--out", required=True, help="YAML file to write")

    r = sub.add_parser("report", help="significance report of an ablation (tables, tests, figures)")
    r.add_argument("name", help="ablation name (the `name:` of its YAML)")
    r.add_argument("--baseline", help="reference cell (default: the ablation's baseline)")
    r.add_argument("--metric", action="append", help="metric to compare (repeatable; default test/acc)")
    r.add_argument("--family", choices=["metric", "dataset"], default="metric",
                   help="Holm family: every comparison of a metric (default) or per data set")
    r.add_argument("--correction", choices=["holm", "bh"], default="holm", help="bh only for exploratory grids")
    r.add_argument("--rope", type=float, default=0.002, help="equivalence margin for accuracies (fraction)")
    r.add_argument("--alpha", type=float, default=0.05)
    r.add_argument("--out", help="report folder (default reports/NAME)")
    r.add_argument("--filter", help="extra MLflow filter, e.g. \"tags.dataset = 'digits'\"")
    r.add_argument("--allow-unpaired", action="store_true", help="compare on the seeds both methods have")
    r.add_argument("--random-state", type=int, default=0, help="seed of the bootstrap intervals")
    r.add_argument("--no-figures", action="store_true")

    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the tracking store")
    u.add_argument("--port", type=int, default=5000)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("sal").setLevel(logging.INFO)  # progress of sweeps: one line per run
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.WARNING)
    if not args.verbose:  # Optuna flags options it may change (TPE's group); they are ours to pin, not news
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        return _COMMANDS[args.command](args)
    except SpecError as err:
        print("error: invalid input\n" + "\n".join(f"  {line}" for line in err.problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted; finished runs are kept, re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
