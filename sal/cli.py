"""``sal`` / ``python -m sal``: the only place that prints or reads argv.

Bad input (unknown key, impossible value, missing file) exits 2 before any compute and writes nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .core import interrupts
from .core.names import ATTR_METRIC, ATTR_PER_SEED, ATTR_QUEUE_KIND, ATTR_STUDY_SPEC, STATUS_FAILED
from .core.redact import MaskingFormatter, has_mask, mask_text, mask_url, quiet_library_tracebacks
from .queue.engine import QueueLost
from .spec.config import SpecError
from .spec.landscape_options import DEFAULT_WHAT, MEASURES, LandscapeOptions
from .sweeps.launch import ablation_specs, check_specs, check_stores, compare_specs, parse_gpus, study_specs

__all__ = ["main"]

EXIT_BAD_INPUT = 2
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str):
    def register(fn):
        _COMMANDS[name] = fn
        return fn
    return register


def _uri(args: argparse.Namespace) -> str:
    from .tracking.store import default_tracking_uri

    return args.tracking_uri or default_tracking_uri()


def say(*parts: object, file=None) -> None:
    """print, with the password of every URL masked: the one way this CLI writes to the terminal."""
    print(mask_text(" ".join(str(p) for p in parts)), file=file or sys.stdout, flush=True)


def _check_artifacts(uri: str, *, storage: str | None = None, joining: bool = False) -> None:
    from .queue.preflight import check_artifact_root

    check_artifact_root(uri, storage=storage, joining=joining)


def _preflight(*, storage: str | None = None, uri: str | None = None, must_exist: bool = False) -> None:
    """Storage and tracking store reachable (and writable) before anything is created or computed."""
    from .queue.preflight import check_storage, check_tracking

    if storage is not None:
        check_storage(storage, must_exist=must_exist)
    if uri is not None:
        check_tracking(uri, must_exist=must_exist)


def _sweep_outcome(study) -> int:
    """Print the trials by outcome and the failures grouped by message; 1 when runs failed."""
    from .outcomes import describe_failures, describe_outcomes, unresolved_failures

    say("trials:", describe_outcomes(study))
    failed = unresolved_failures(study)
    if not failed:
        return 0
    say(f"{len(failed)} run(s) failed:", file=sys.stderr)
    for line in describe_failures(failed):
        say(f"  {line}", file=sys.stderr)
    return 1


@command("train")
def _train(args: argparse.Namespace) -> int:
    from .spec.config import load_run_spec, parse_overrides
    from .tracking.store import LiveRun, experiment_name
    from .training.run import Result, train

    spec = load_run_spec(args.config, parse_overrides(args.set))
    check_specs([spec])  # a user's model/data functions, devices, data, before any compute
    uri = _uri(args)
    _preflight(uri=uri)
    say(f"training {spec.method.name} on {spec.data.name} ({spec.model.name}, {spec.optim.name}), seed {spec.seed}, "
        f"{spec.train.epochs} epochs")
    with LiveRun(uri, args.experiment or experiment_name("train"), kind="train") as live:  # RUNNING while it trains
        live.start(spec)
        try:
            result = train(spec, on_epoch=live.log_epoch)
        except Exception as err:  # noqa: BLE001 - a crash is the run's result: one line, no traceback
            result = Result(spec=spec, status=STATUS_FAILED, message=mask_text(f"{type(err).__name__}: {err}"))
        run_id = live.finish(result)
    final = ", ".join(f"{k}={v:.4g}" for k, v in result.final.items())
    say(f"status {result.status}{': ' + result.message if result.message else ''}")
    say(f"{final}\nMLflow run {run_id} in {mask_url(uri)}")
    return 1 if result.status == STATUS_FAILED else 0


def _checkpoint_dir(args: argparse.Namespace) -> str:
    from .training.checkpoints import default_directory

    return str(args.checkpoint_dir or default_directory())


def _check_finite(args: argparse.Namespace, *names: str) -> None:
    """Float flags parse 'nan' and 'inf'; no setting of sal means either."""
    for name in names:
        value = getattr(args, name, None)
        if value is not None and not math.isfinite(value):
            flag = "--" + name.replace("_", "-")
            raise SpecError([f"{flag}={value} must be a finite number; fix: give a number, e.g. {flag} 0.05, or "
                             "leave the flag out for the default"])


# --- progress: the library reports snapshots of the queue, this renders them ---
class _ProgressView:
    """A tqdm bar on a terminal; otherwise one timestamped line per change with the same facts."""

    def __init__(self, label: str):
        self.label, self.tty, self.bar = label, sys.stdout.isatty(), None

    def __call__(self, snap) -> None:
        extra = f"{snap.running} running" + (f", {snap.failed} failed" if snap.failed else "")
        if self.tty:
            from tqdm import tqdm

            if self.bar is None:
                self.bar = tqdm(total=snap.total or None, initial=snap.done, desc=self.label, unit="run",
                                dynamic_ncols=True)
            self.bar.n = snap.done
            self.bar.set_postfix_str(mask_text(extra + (f" | latest {snap.latest}" if snap.latest else "")),
                                     refresh=False)
            self.bar.refresh()
            return
        eta = "?" if math.isnan(snap.eta_s) else time.strftime("%H:%M:%S", time.gmtime(snap.eta_s))
        total = f"/{snap.total}" if snap.total else ""
        say(f"{time.strftime('%H:%M:%S')} {self.label}: {snap.done}{total} done, {extra}, ETA {eta}"
            + (f"; latest {snap.latest}" if snap.latest else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def _progress(ref, name: str, *, label: str, total: int, keys: set[str] | None = None, value_name: str = ""):
    from .queue.progress import watch

    view = _ProgressView(label)
    try:
        with watch(ref, name, total=total, keys=keys, value_name=value_name, on_change=view):
            yield
    finally:
        view.close()


@command("ablate")
def _ablate(args: argparse.Namespace) -> int:
    from .queue.engine import StorageRef
    from .queue.workqueue import Queue
    from .spec.config import parse_overrides
    from .sweeps.ablation import load_ablation, run_ablation

    spec, items = load_ablation(args.file, parse_overrides(args.set), seeds=args.seeds)
    workers, gpus = args.workers, parse_gpus(args.gpus)
    check_specs(ablation_specs(items), workers=workers, gpus=gpus)
    ref = StorageRef.resolve(args.storage, spec.name, "ablation")
    cells = sorted({(i.spec.data.display_name, i.context, i.cell) for i in items})
    say(f"ablation {spec.name}: {len(cells)} cells x {len(spec.seed_list)} seeds = {len(items)} runs")
    if args.dry_run:
        for dataset, context, cell in cells:
            say(f"  {dataset:14s} {context:32s} {cell}")
        return _print_estimate(spec.name, [(i.spec, 1) for i in items])
    uri = _uri(args)
    check_stores(ref, spec.name, uri, new_store=args.new_tracking_store)
    say(f"queue {mask_url(ref.url)}; MLflow {mask_url(uri)}")
    with _progress(ref, spec.name, label=spec.name, total=len(items), keys={i.key for i in items},
                   value_name=spec.metric):
        out = run_ablation(spec, items, ref=ref, uri=uri, workers=workers, gpus=gpus,
                           retry_failed=args.retry_failed, wait=not args.no_wait,
                           checkpoint_dir=_checkpoint_dir(args))
    q = out["queue"]
    missing = f", {len(q['missing_run'])} done but missing from this MLflow store (trained again)" \
        if q["missing_run"] else ""
    say(f"before: {len(q['done'])} done, {len(q['pending'])} pending, {len(q['queued'])} queued now, "
        f"{len(q['failed'])} failed earlier" + (" (re-run them with --retry-failed)" if q["failed"] else "")
        + missing)
    code = _sweep_outcome(Queue(ref, spec.name).study)
    if code:
        say("fix the cause, then re-run the same command with --retry-failed", file=sys.stderr)
    if out["failed_workers"]:
        say(f"{out['failed_workers']} worker(s) stopped with an error (see above); re-run the same command to "
            "finish their trials", file=sys.stderr)
        return 1
    return code


@command("worker")
def _worker(args: argparse.Namespace) -> int:
    """Join a running study or ablation: everything but the storage, the tracking URI and the devices is read
    from the queue (trials carry their specs; the study its spec)."""
    import os

    from .queue.engine import StorageRef
    from .queue.workqueue import TRACKING_URI, Queue

    workers, gpus = args.workers, _worker_gpus(args.gpus)
    check_specs([], workers=workers, gpus=gpus)  # the specs' own devices are checked where they were launched
    ref = StorageRef.resolve(args.storage, args.name, "worker")
    _preflight(storage=ref.url, must_exist=True)
    queue = _existing_queue(ref, args.name)
    kind, stored_uri = queue.study.user_attrs.get(ATTR_QUEUE_KIND), queue.study.user_attrs.get(TRACKING_URI)
    if kind not in ("ablation", "study"):
        raise SpecError([f"{args.name!r} in {mask_url(ref.url)} was not launched by `sal ablate` or `sal study run` "
                         "(no sal.kind); fix: launch it first, then join it with sal worker"])
    uri = getattr(args, "tracking_uri", None) or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None and stored_uri is not None and not has_mask(stored_uri):  # sal never stores a password
        uri = stored_uri
    if uri is None:
        raise SpecError([f"the {kind} {args.name!r} stores no usable tracking URI ({stored_uri!r}); fix: pass "
                         "--tracking-uri, the one its launcher used (e.g. http://mlflow-host:5000)"])
    _preflight(uri=uri)
    _check_artifacts(uri, joining=True)
    say(f"worker for the {kind} {args.name}: queue {mask_url(ref.url)}; MLflow {mask_url(uri)}; {workers} "
        f"process(es) on {', '.join('cuda:' + g for g in gpus) if gpus else 'the spec device'}")
    kwargs = dict(ref=ref, uri=uri, checkpoint_dir=_checkpoint_dir(args))
    if kind == "ablation":
        from .sweeps.ablation import ablation_worker

        target = ablation_worker
        kwargs.update(study_name=args.name, metric=_stored(queue, ATTR_METRIC, kind), wait=not args.no_wait)
    else:
        import json

        from .sweeps.study import study_worker

        target = study_worker
        kwargs.update(spec_json=json.dumps(_stored(queue, ATTR_STUDY_SPEC, kind)))
    if workers == 1:
        target(worker_index=0, device=f"cuda:{gpus[0]}" if gpus else None, **kwargs)
        failed = 0
    else:
        from .queue.engine import spawn_workers

        failed = spawn_workers(target, workers, gpus=gpus, **kwargs)
    code = _sweep_outcome(Queue(ref, args.name).study)
    if failed:
        say(f"{failed} worker process(es) stopped with an error (see above)", file=sys.stderr)
        return 1
    return code


def _stored(queue, key: str, kind: str):
    """What the launcher stored with the queue for its workers; an older sal's queue lacks it."""
    value = queue.study.user_attrs.get(key)
    if value is None:
        command = "sal ablate FILE" if kind == "ablation" else "sal study run FILE"
        raise SpecError([f"the {kind} {queue.name!r} was queued by an older sal (no {key}); fix: run `{command} "
                         "--storage ...` once with this version, then join it"])
    return value


def _existing_queue(ref, name: str):
    import optuna

    from .queue.workqueue import Queue

    if name not in {s.study_name for s in optuna.get_all_study_summaries(ref.open())}:
        raise SpecError([f"no study or ablation {name!r} in {mask_url(ref.url)}; fix: check the name and --storage "
                         "(the launcher's `sal ablate`/`sal study run` prints both)"])
    return Queue(ref, name)


def _worker_gpus(value: str | None) -> list[str] | None:
    """--gpus, else every device CUDA_VISIBLE_DEVICES shows (numbered from 0 inside it), else None."""
    import os

    if value:
        return parse_gpus(value)
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return [str(i) for i in range(len(visible))] or None


@command("study")
def _study(args: argparse.Namespace) -> int:
    return {"run": _study_run, "status": _study_status, "best": _study_best}[args.study_command](args)


def _study_run(args: argparse.Namespace) -> int:
    from .queue.engine import StorageRef
    from .spec.config import parse_overrides
    from .spec.study_spec import corner_specs, load_study_spec
    from .sweeps.study import run_study
    from .sweeps.study_summary import log_study_summary

    _check_finite(args, "timeout")
    spec = load_study_spec(args.file, parse_overrides(args.set), n_trials=args.n_trials, timeout=args.timeout,
                           seeds=args.seeds)
    workers, gpus = args.workers, parse_gpus(args.gpus)
    check_specs(study_specs(spec), workers=workers, gpus=gpus)
    if args.dry_run:  # the base spec stands for every trial (the space moves knobs, rarely the cost)
        trials = spec.n_trials or 1
        return _print_estimate(spec.name, [(corner_specs(spec)[0], trials * len(spec.seed_list))],
                               note="" if spec.n_trials else " (per trial: n_trials is not set)")
    ref, uri = StorageRef.resolve(args.storage, spec.name, "study"), _uri(args)
    check_stores(ref, spec.name, uri, new_store=args.new_tracking_store)
    say(f"study {spec.name}: {spec.n_trials} trials x {len(spec.seed_list)} seeds, sampler {spec.sampler.name}, "
        f"pruner {spec.pruner.name}, objective " + ", ".join(f"{o.aggregate}({o.metric}) {o.direction}"
                                                            for o in spec.objectives))
    say(f"storage {mask_url(ref.url)}; MLflow {mask_url(uri)}")
    objective = ", ".join(f"{o.aggregate}({o.metric})" for o in spec.objectives)
    with _progress(ref, spec.name, label=spec.name, total=spec.n_trials or 0, value_name=objective):
        study = run_study(spec, ref=ref, uri=uri, workers=workers, gpus=gpus, force_new=args.force_new,
                          checkpoint_dir=_checkpoint_dir(args))
    run_id, summary = log_study_summary(study, uri)
    code = _print_status(study)
    say(f"summary run {run_id}")
    return code


def _open_existing(args: argparse.Namespace):
    import optuna

    from .queue.engine import StorageRef

    ref = StorageRef.resolve(args.storage, args.name, "study")
    if ref.is_journal and not Path(ref.url).is_file():
        raise SpecError([f"no study {args.name!r}: {ref.url} does not exist; fix: run `sal study run` first or "
                         "pass its --storage"])
    _preflight(storage=ref.url, must_exist=True)
    try:
        return optuna.load_study(study_name=args.name, storage=ref.open())
    except KeyError:
        raise SpecError([f"no study {args.name!r} in {mask_url(ref.url)}; fix: check the name or --storage"]) from None


def _print_status(study) -> int:
    """The study's trials by outcome and its best trial; 1 when trials failed."""
    from .queue.workqueue import trials_by_state
    from .sweeps.study import best_trial

    say(f"study {study.study_name}")
    code = _sweep_outcome(study)
    if trials_by_state(study).get("COMPLETE"):
        best = best_trial(study)
        say(f"best trial {best.number}: value {best.values}")
        for k, v in best.params.items():
            say(f"  {k} = {v}")
        for k, v in best.user_attrs.items():
            if k.startswith(ATTR_PER_SEED):
                say(f"  per seed {k.removeprefix(ATTR_PER_SEED + '.')}: {v}")
    return code


def _study_status(args: argparse.Namespace) -> int:
    _print_status(_open_existing(args))  # a query: failed trials are shown, not an error of this command
    return 0


def _study_best(args: argparse.Namespace) -> int:
    from .queue.workqueue import trials_by_state
    from .report.outputs import check_output_file, write_text_atomic
    from .spec.config import to_yaml
    from .sweeps.study import best_spec

    header = "# best trial of study "  # sal replaces a file only when its first line says sal wrote it
    out = check_output_file(args.out, header=header)
    study = _open_existing(args)
    if not trials_by_state(study).get("COMPLETE"):
        raise SpecError([f"study {args.name!r} has no complete trial yet; fix: let `sal study run` finish some"])
    text = to_yaml(best_spec(study))
    write_text_atomic(out, f"{header}{args.name}; train it with: sal train --config {args.out}\n" + text)
    say(f"wrote {args.out}")
    return 0


@command("report")
def _report(args: argparse.Namespace) -> int:
    from .report.outputs import check_output_folder
    from .tracking.store import check_filter

    _check_finite(args, "rope", "alpha")
    if args.alpha is not None and not 0 < args.alpha < 1:
        raise SpecError([f"--alpha={args.alpha} must be in (0, 1); fix: e.g. --alpha 0.05"])
    if args.rope is not None and args.rope < 0:
        raise SpecError([f"--rope={args.rope} must be >= 0; fix: e.g. --rope 0.002 (0.2 accuracy points)"])
    if args.filter:
        check_filter(args.filter)
    out = Path(args.out or Path("reports") / args.name)
    check_output_folder(out)  # before any work: a folder of the user's own files is never written into
    _preflight(uri=_uri(args), must_exist=True)
    from .report.build import build_report  # seaborn and matplotlib: imported once the inputs are known to be good

    folder, summary = build_report(
        _uri(args), args.name, out, baseline=args.baseline, metrics=args.metric, rope=args.rope, alpha=args.alpha,
        correction=args.correction, family=args.family, allow_unpaired=args.allow_unpaired,
        random_state=args.random_state, filter_string=args.filter or "", draw_figures=not args.no_figures)
    compared = summary[summary["verdict"] != "reference"]
    primary = compared[compared["metric"] == compared["metric"].iloc[0]] if len(compared) else compared
    for _, r in primary.iterrows():
        where = f"{r['dataset']} {r['context']}".strip()
        exploratory = " (exploratory)" if r["exploratory"] is True else ""
        ci = "no interval" if r["delta_ci_low"] != r["delta_ci_low"] else \
            f"[{r['delta_ci_low']:+.4f}, {r['delta_ci_high']:+.4f}]"
        say(f"  {where:16s} {r['method'] + ' vs ' + r['baseline']:30s} delta {r['delta']:+.4f} {ci}  "
            f"p_{r['correction']} {r['p_adj']:.3g}  {r['verdict']}{exploratory}")
    say(f"report: {folder / 'report.html'} (also report.md, summary.csv, table.tex)")
    return 0


@command("compare")
def _compare(args: argparse.Namespace) -> int:
    from .queue.engine import StorageRef
    from .report.outputs import check_output_folder
    from .spec.config import parse_overrides
    from .sweeps.compare import load_compare, looks_of, run_compare
    from .sweeps.compare_report import write_compare_report

    spec = load_compare(args.file, parse_overrides(args.set))
    from .spec.study_spec import corner_specs
    from .sweeps.compare import tuning_spec

    workers, gpus = args.workers, parse_gpus(args.gpus)
    check_specs(compare_specs(spec), workers=workers, gpus=gpus)
    ref, uri = StorageRef.resolve(args.storage, spec.name, "compare"), _uri(args)
    t, e = spec.tuning, spec.evaluation
    say(f"compare {spec.name}: {len(spec.methods)} methods ({', '.join(spec.methods)}), each tuned with "
        f"{t.trials} trials x {len(t.seed_list)} seeds; evaluated on seeds from {e.seed_list[0]} "
        + (f"at looks {looks_of(e)}" if e.sequential else f"({len(e.seed_list)} seeds)"))
    if args.dry_run:  # tuning trials x seeds, then the evaluation's seeds (all looks), per method
        per_method = t.trials * len(t.seed_list) + len(e.seed_list)
        return _print_estimate(spec.name, [(corner_specs(tuning_spec(spec, cell))[0], per_method)
                                           for cell in spec.methods], note=" (the evaluation at its most seeds)")
    out = Path(args.out or Path("reports") / spec.name)
    check_output_folder(out)
    check_stores(ref, spec.name, uri, recorded=False)
    say(f"storage {mask_url(ref.url)}; MLflow {mask_url(uri)}")
    result = run_compare(spec, ref=ref, uri=uri, workers=workers, gpus=gpus, checkpoint_dir=_checkpoint_dir(args))
    for look in result.looks:
        decided = sum(v in ("better", "worse", "equivalent") for v in look.verdicts.values())
        say(f"  look at {look.seeds} seeds (p threshold {look.threshold:.4g}): {decided} of "
            f"{len(look.verdicts)} contrasts decided")
    say(f"stopped: {result.stop_reason}")
    folder, analysis = write_compare_report(result, uri, out, draw_figures=not args.no_figures)
    for r in analysis.summary[analysis.summary["verdict"] != "reference"].itertuples():
        say(f"  {r.dataset:10s} {r.metric:10s} {r.method + ' vs ' + r.baseline:24s} delta {r.delta:+.4f}  "
            f"{r.verdict}")
    say(f"report: {folder / 'report.html'}")
    return 0


@command("landscape")  # ---- sharpness and connectivity of an ablation's saved final weights
def _landscape(args: argparse.Namespace) -> int:
    from .sweeps.flatness import check_options, measure_ablation, parse_what

    opts = LandscapeOptions(what=parse_what(args.what), device=args.device, samples=args.samples,
                            probes=args.probes, fourier_steps=args.fourier_steps, slice_steps=args.slice_steps)
    check_options(opts)
    from .queue.preflight import check_device

    check_device(opts.device, setting="--device")  # before the store is read and any weights are loaded
    _preflight(uri=_uri(args), must_exist=True)  # as for a report: reading a store never creates an empty one
    out = measure_ablation(_uri(args), args.name, opts, filter_string=args.filter or "")
    runs, pairs = out["runs"], out["pairs"]
    shown = [c for c in runs.columns if c.startswith("landscape/") and "/vs" not in c and "_vs/" not in c]
    for _, r in runs.iterrows():
        values = ", ".join(f"{c.removeprefix('landscape/')}={r[c]:.4g}" for c in shown if r[c] == r[c])
        say(f"  {r['cell']:18s} seed {r['seed']:<3d} {values}")
    if len(pairs):
        for (kind, path), part in pairs.groupby(["kind", "path"]):
            say(f"  {path} {kind}: mean {part['barrier'].mean():.4g} over {len(part)} pairs "
                  f"({part['seconds'].mean():.3g} s each)")
    say(f"logged to {len(runs)} runs in {mask_url(_uri(args))} (metrics landscape/*, time/landscape_*_s"
          + (", figures" if out["figures"] else "") + ")")
    return 0


@command("data")
def _data(args: argparse.Namespace) -> int:
    if args.data_command == "prepare":
        from .dataprep import prepare

        n = prepare(args.layout, args.source, args.out)
        say(f"linked {n} images of {args.source} into {args.out} (class-per-folder; the source is unchanged)")
        return 0
    from .sweeps.datacheck import data_reports, preset_path, preset_specs

    path = preset_path(args.preset)
    reports, weights = data_reports(preset_specs(path))
    say(f"{path}: {len(reports)} data set(s)")
    for r in reports:
        counts = ", ".join(f"{split} {n}" for split, n in r.classes.items())
        expected = f", expected {r.expected}" if r.expected else ""
        say(f"  {r.label:14s} {r.root}  {r.layout or '-'}  classes: {counts or '-'}{expected}  "
            + ("ready" if r.ready else "NOT READY"))
        for problem, fix in zip(r.problems, r.fixes):
            say(f"    {problem}; fix: {fix}")
    for problem, fix in weights:
        say(f"  weights: {problem}; fix: {fix}")
    ready = all(r.ready for r in reports) and not weights
    say("ready" if ready else "not ready: run the fixes above, then check again")
    return 0 if ready else 1


def _print_estimate(name: str, runs, *, note: str = "") -> int:
    """--dry-run: the compute of the sweep, from one timed epoch per model, data and device; writes nothing."""
    from .queue.estimate import estimate, format_estimate

    for line in format_estimate(name, estimate(list(runs)), note=note):
        say(line)
    return 0


@command("ui")
def _ui(args: argparse.Namespace) -> int:
    if not 1 <= args.port <= 65535:
        raise SpecError([f"--port={args.port} must be in 1..65535; fix: e.g. --port 5000"])
    from .tracking.uiproc import check_port_free

    check_port_free(args.port)  # mlflow's server would fail to bind, and `mlflow ui` still exit 0
    uri = _uri(args)
    _preflight(uri=uri)
    if uri.startswith("sqlite:///"):
        from .tracking.store import client_for

        client_for(uri).search_experiments()  # creates the store (and its tables) if this is a first start
    # MLflow 3.17's UI opens every experiment in its GenAI view unless the URL asks for model training
    # (the choice is then remembered by the browser); sal's runs belong in the training view.
    say(f"MLflow UI on http://127.0.0.1:{args.port}/#/experiments?workflowType=machine_learning "
        f"(store {mask_url(uri)}); Ctrl-C stops it")
    from .tracking.uiproc import serve

    return serve(uri, port=args.port)


def _add_engine_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=1, help="local worker processes (default 1)")
    p.add_argument("--storage", help="Optuna storage: a .journal file (default optuna/KIND-NAME.journal), "
                   "sqlite:///file.db, or postgresql://... shared by several machines")
    p.add_argument("--gpus", help="comma-separated GPU numbers; worker i uses the (i mod n)-th")
    p.add_argument("--no-wait", action="store_true",
                   help="stop when the queue is empty instead of waiting for other workers' running trials")
    p.add_argument("--new-tracking-store", action="store_true",
                   help="the queue was run with another --tracking-uri: train every run again into this one (without "
                   "it, such a launch is refused)")
    p.add_argument("--checkpoint-dir", help="where runs with train.checkpoint_every > 0 keep their checkpoints, "
                   "from which a retried trial resumes (default checkpoints/ in the repository); shared by the "
                   "machines of a cluster when it is on a shared file system")


def _common(*, suppress: bool) -> argparse.ArgumentParser:
    """--tracking-uri and -v, accepted before and after the subcommand. After it they default to SUPPRESS,
    so a subcommand that is not given them keeps what was given before it."""
    c = argparse.ArgumentParser(add_help=False)
    default = {"default": argparse.SUPPRESS} if suppress else {}
    c.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or "
                   "sqlite:///mlflow/mlflow.db)", **default)
    c.add_argument("-v", "--verbose", action="store_true", help="log progress of every run", **default)
    return c


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sal", description="Sweeps, ablations and significance reports for "
                                "Stress-Aware Learning", parents=[_common(suppress=False)])
    sub = p.add_subparsers(dest="command", required=True)
    common = [_common(suppress=True)]  # every subcommand takes them too

    t = sub.add_parser("train", help="train one run and log it to MLflow", parents=common)
    t.add_argument("--config", help="YAML run spec (defaults apply to what it leaves out)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key, e.g. method.rho=1e-3")
    t.add_argument("--experiment", help="MLflow experiment (default sal-train)")

    a = sub.add_parser("ablate", help="run an ablation grid (cells x seeds), resumable, on Optuna's queue",
                       parents=common)
    a.add_argument("file", help="ablation YAML, e.g. ablations/quick.yaml")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key of the base spec")
    a.add_argument("--seeds", type=int, help="number of seeds (overrides the file)")
    _add_engine_args(a)
    a.add_argument("--retry-failed", action="store_true", help="run again the cells whose run crashed")
    a.add_argument("--dry-run", action="store_true", help="print the cells, their count and the compute (one timed "
                   "epoch per model, data and device), write nothing")

    st = sub.add_parser("study", help="Optuna studies over SAL's knobs, multi-seed trials", parents=common)
    ssub = st.add_subparsers(dest="study_command", required=True)
    sr = ssub.add_parser("run", help="run (or resume) a study from its YAML spec", parents=common)
    sr.add_argument("file", help="study YAML, e.g. studies/quick.yaml")
    sr.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key of the base spec")
    sr.add_argument("--n-trials", type=int, help="finished trials to reach (overrides the file)")
    sr.add_argument("--timeout", type=float, help="seconds for this invocation")
    sr.add_argument("--seeds", type=int, help="seeds per trial (overrides the file)")
    sr.add_argument("--dry-run", action="store_true", help="print the compute (one timed epoch), write nothing")
    sr.add_argument("--force-new", action="store_true", help="start a fresh study when the stored one was run with "
                    "another base spec or space (the old one is kept as NAME@time)")
    _add_engine_args(sr)
    for name, text in (("status", "trials by state and the best so far"),
                       ("best", "write the best trial's run spec (for sal train or an ablation cell)")):
        sp = ssub.add_parser(name, help=text, parents=common)
        sp.add_argument("name", help="study name")
        sp.add_argument("--storage", help="the study's storage (default optuna/study-NAME.journal)")
        if name == "best":
            sp.add_argument("--out", required=True, help="YAML file to write")

    r = sub.add_parser("report", help="significance report of an ablation (tables, tests, figures)", parents=common)
    r.add_argument("name", help="ablation name (the `name:` of its YAML)")
    r.add_argument("--baseline", help="compare every cell with this one instead of the plan's contrasts")
    r.add_argument("--metric", action="append", help="metric to compare (repeatable; default: the plan's)")
    r.add_argument("--family", choices=["plan", "metric", "dataset"], default="plan",
                   help="correction families: the plan's (default, across data sets), all contrasts of a metric, "
                   "or per data set")
    r.add_argument("--correction", choices=["holm", "bh"], help="default: the plan's; bh only for exploratory grids")
    r.add_argument("--rope", type=float, help="equivalence margin for accuracies (fraction; default: the plan's)")
    r.add_argument("--alpha", type=float, help="default: the plan's")
    r.add_argument("--out", help="report folder (default reports/NAME)")
    r.add_argument("--filter", help="extra MLflow filter, e.g. \"tags.dataset = 'digits'\"")
    r.add_argument("--allow-unpaired", action="store_true", help="compare on the seeds both methods have")
    r.add_argument("--random-state", type=int, default=0, help="seed of the bootstrap intervals")
    r.add_argument("--no-figures", action="store_true")

    c = sub.add_parser("compare", help="the fair protocol: tune every method with one budget, evaluate the "
                       "best of each on fresh seeds (until decided), report", parents=common)
    c.add_argument("file", help="compare YAML, e.g. compare/quick.yaml")
    c.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a dotted key of the base spec")
    _add_engine_args(c)
    c.add_argument("--out", help="report folder (default reports/NAME)")
    c.add_argument("--no-figures", action="store_true")
    c.add_argument("--dry-run", action="store_true", help="print the compute (one timed epoch per model, data and "
                   "device), write nothing")

    ls = sub.add_parser("landscape", help="sharpness, slices and barriers of an ablation's saved final weights",
                        parents=common)
    ls.add_argument("name", help="ablation name (its runs need analysis.save_weights: true)")
    ls.add_argument("--what", help=f"comma-separated: {','.join(MEASURES)} (default {','.join(DEFAULT_WHAT)})")
    ls.add_argument("--device", default="auto", help="where to measure (auto, cpu, cuda:N)")
    ls.add_argument("--samples", type=int, help="training samples per measure (default: each run's analysis.samples)")
    ls.add_argument("--probes", type=int, default=LandscapeOptions.probes, help="Hutchinson probes of the trace "
                    "(default %(default)s)")
    ls.add_argument("--fourier-steps", type=int, default=LandscapeOptions.fourier_steps,
                    help="Adam steps of each Fourier path (default %(default)s)")
    ls.add_argument("--slice-steps", type=int, default=LandscapeOptions.slice_steps,
                    help="grid points per side of the 2-D slice, odd (default %(default)s)")
    ls.add_argument("--filter", help="extra MLflow filter, e.g. \"tags.dataset = 'digits'\"")

    w = sub.add_parser("worker", help="join a running study or ablation from this machine: claim its queued "
                       "trials until none is left", parents=common)
    w.add_argument("name", help="the study's or ablation's name")
    w.add_argument("--storage", required=True, help="the queue's storage, as the launcher gave it (e.g. "
                   "postgresql://user@host/db)")
    w.add_argument("--workers", type=int, default=1, help="worker processes on this machine (default 1)")
    w.add_argument("--gpus", help="comma-separated GPU numbers, worker i uses the (i mod n)-th (default: the "
                   "devices CUDA_VISIBLE_DEVICES shows, else the run spec's device)")
    w.add_argument("--no-wait", action="store_true",
                   help="stop when the queue is empty instead of waiting for other workers' running trials")
    w.add_argument("--checkpoint-dir", help="as for ablate and study run (default checkpoints/ in the repository)")

    d = sub.add_parser("data", help="is the data of a preset ready (check), convert a known layout (prepare)",
                       parents=common)
    dsub = d.add_subparsers(dest="data_command", required=True)
    dc = dsub.add_parser("check", help="what a preset needs, what is found, classes per split, the fix of each",
                         parents=common)
    dc.add_argument("preset", help="a spec file or a preset name (paper_table2, paper_degraded, ...)")
    dp = dsub.add_parser("prepare", help="link a known layout into the class-per-folder tree sal reads",
                         parents=common)
    dp.add_argument("layout", choices=["pacs", "tiny_imagenet", "corel1k"])
    dp.add_argument("source", help="the unpacked archive (only read)")
    dp.add_argument("out", help="a new folder for the converted tree (symbolic links to the source's images)")

    u = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the tracking store", parents=common)
    u.add_argument("--port", type=int, default=5000)
    return p


def _resumes(args: argparse.Namespace) -> bool:
    """Whether the command is a sweep that keeps its finished runs and resumes when run again."""
    return args.command in ("ablate", "compare", "worker") or getattr(args, "study_command", None) == "run"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    interrupts.install()
    handler = logging.StreamHandler()
    handler.setFormatter(MaskingFormatter("%(asctime)s %(message)s", "%H:%M:%S"))  # no log line shows a password
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("sal").setLevel(logging.INFO)  # progress of sweeps: one line per run
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.INFO if args.verbose else optuna.logging.WARNING)
    if not args.verbose:
        quiet_library_tracebacks()
    if not args.verbose:  # Optuna flags options it may change (TPE's group); they are ours to pin, not news
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    try:
        code = _COMMANDS[args.command](args)
        interrupts.check()  # a Ctrl-C some library swallowed still ends the command as interrupted
        return code
    except SpecError as err:
        say("error: invalid input\n" + "\n".join(f"  {line}" for line in err.problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        say("interrupted" + ("; finished runs are kept, re-run the same command to resume" if _resumes(args) else ""),
            file=sys.stderr)
        return 130
    except QueueLost as err:
        say(f"error: {err}; finished runs are kept, re-run the same command to resume", file=sys.stderr)
        return 1
    except Exception as err:  # an unexpected failure (a server's error, a bug): one line; -v shows the traceback
        if interrupts.requested():  # Ctrl-C, turned into another error by a library on its way out
            say("interrupted" + ("; finished runs are kept, re-run the same command to resume" if _resumes(args)
                                 else ""), file=sys.stderr)
            return 130
        if args.verbose:
            raise
        from .core.diskfull import disk_full

        if disk_full(err):
            say("error: a store could not be written: the disk is full (or over a quota or a file-size limit, or "
                f"failing) ({(str(err).strip().splitlines() or [''])[0][:300]})\n  fix: free space or move the store, "
                + ("then re-run the same command to resume (finished runs are kept)" if _resumes(args) else
                   "then run it again"), file=sys.stderr)
            return 1
        first = (str(err).strip().splitlines() or [""])[0][:500]
        again = ("finished runs are kept; re-run the same command to resume, with -v for the traceback"
                 if _resumes(args) else "run it again with -v for the traceback")
        say(f"error: {type(err).__name__}: {first}\n  {again}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
