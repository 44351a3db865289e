"""Benchmark: what streaming per-epoch metrics to MLflow costs an epoch, measured side by side in one run.

Two runs of one spec train alternately epoch by epoch (A, B, A, B, ...) on a real SQLite tracking store
in a temporary folder: A logs nothing, B streams every epoch through ``tracking.LiveRun`` (a buffer
that a background thread writes every ``flush_s``). Printed, as ratios to the median epoch time:

- ``log_epoch / epoch``: the time the training thread spends in ``log_epoch`` (the target: <= 1%);
- ``flush / epoch``: the background thread's store writes, per epoch (off the training thread);
- ``epoch B / epoch A``: the whole effect on an epoch, thread included (median of per-pair ratios);
- ``sync log_batch / epoch``: for comparison, one synchronous ``log_batch`` per epoch.

    python benchmarks/bench_logging.py                 # small CNN on digits (the quick start's workload)
    python benchmarks/bench_logging.py --epochs 60 --flush-s 0.5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sal.spec.config import validate_run
from sal.tracking.store import LiveRun, client_for, ensure_experiment
from sal.training.run import TrainingRun


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--flush-s", type=float, default=2.0)
    p.add_argument("--width", type=int, default=8)
    args = p.parse_args()
    spec = validate_run({"data": {"name": "digits"}, "model": {"name": "cnn", "width": args.width},
                         "method": {"name": "sal", "warmup": 4}, "train": {"epochs": args.epochs + 1}})
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        ensure_experiment(uri, "bench")  # the store's migrations are not part of an epoch
        plain, streamed = TrainingRun(spec), TrainingRun(spec)
        live = LiveRun(uri, "bench", kind="train", flush_s=args.flush_s)
        live.start(spec)
        flush_s = []
        flush = live._flush

        def timed_flush() -> None:
            t0 = time.perf_counter()
            flush()
            flush_s.append(time.perf_counter() - t0)

        live._flush = timed_flush
        plain.step(), streamed.step()  # warm-up epoch each
        t_plain, t_streamed, t_log = [], [], []
        for _ in range(args.epochs):
            t0 = time.perf_counter()
            plain.step()
            t_plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            row = streamed.step()
            t1 = time.perf_counter()
            live.log_epoch(streamed.epoch, row)
            t_log.append(time.perf_counter() - t1)
            t_streamed.append(time.perf_counter() - t0)
        live.finish(streamed.finish())
        # For comparison: one synchronous write per epoch, as a naive live logger would do.
        sync_run = LiveRun(uri, "bench", kind="train")
        sync_run.start(spec)
        sync_run._stop_streaming()
        t_sync = []
        for row in streamed.result.history[1:]:
            t0 = time.perf_counter()
            sync_run.log_epoch(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})
            sync_run._flush()
            t_sync.append(time.perf_counter() - t0)
        client_for(uri).set_terminated(sync_run.run_id, "FINISHED")
    epoch = statistics.median(t_plain)
    pairs = statistics.median(b / a for a, b in zip(t_plain, t_streamed))
    per_epoch_flush = sum(flush_s) / args.epochs
    print(f"workload: cnn width {args.width} on digits, {args.epochs} epochs, flush every {args.flush_s} s; "
          f"median epoch {epoch * 1e3:.1f} ms")
    print(f"log_epoch / epoch (training thread): {statistics.median(t_log) / epoch:.5f} "
          f"({statistics.median(t_log) * 1e6:.0f} us)")
    print(f"flush / epoch (background thread):   {per_epoch_flush / epoch:.4f} "
          f"({len(flush_s)} batches, {per_epoch_flush * 1e3:.2f} ms per epoch)")
    print(f"epoch B / epoch A (streamed / plain): {pairs:.3f}")
    print(f"sync log_batch / epoch (comparison): {statistics.median(t_sync) / epoch:.4f} "
          f"({statistics.median(t_sync) * 1e3:.1f} ms)")


if __name__ == "__main__":
    main()
