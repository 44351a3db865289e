"""Benchmark: the report's multiplicity correction, sal's Holm and BH against statsmodels' multipletests,
measured side by side in one process that holds what a report's process holds (torch, mlflow, pandas).

statsmodels' Holm runs a full ``gc.collect()`` on every call, so its cost grows with the process's heap;
a report corrects once per family and metric, per data set's classes and per look. Printed: milliseconds
per call for each, their ratio, and the seconds a per-class family of a 10-class data set costs in
``summarize`` (the report's path).

    python benchmarks/bench_report_stats.py
    python benchmarks/bench_report_stats.py --calls 100
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch  # noqa: F401
from statsmodels.stats.multitest import multipletests

import mlflow  # noqa: F401 - the heap a report's process holds
from sal.report.secondary import secondary_summary
from sal.spec.analysis import Contrast, Plan
from sal.stats import inference as stats


def per_call_ms(fn, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e3


def per_class_family_s() -> float:
    """One per-class F1 family: 10 classes x 2 contrasts x 5 seeds, through summarize."""
    rng = np.random.default_rng(0)
    rows = [("digits", f"class {k}", "test/class_f1", m, s, rng.random(), False)
            for k in range(10) for m in ("sal", "adam", "sam") for s in range(1, 6)]
    tidy = pd.DataFrame(rows, columns=["dataset", "context", "metric", "method", "seed", "value", "diverged"])
    plan = Plan([Contrast("all", "sal", "adam"), Contrast("all", "sal", "sam")], ["test/acc"], alpha=0.05,
                rope=0.002, correction="holm", treatment="sal")
    secondary_summary(tidy, plan, plan.contrasts, family="warm-up", level=0.95)
    start = time.perf_counter()
    secondary_summary(tidy, plan, plan.contrasts, family="per class", level=0.95)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=30)
    args = ap.parse_args()
    p = np.random.default_rng(1).uniform(0, 0.2, 10)
    for method, theirs in (("holm", "holm"), ("bh", "fdr_bh")):
        assert np.allclose(stats.adjust(p, method), multipletests(p, method=theirs)[1])  # same answer
        ours = per_call_ms(lambda m=method: stats.adjust(p, m), args.calls)
        other = per_call_ms(lambda m=theirs: multipletests(p, method=m), args.calls)
        print(f"{method:4s}: sal {ours:8.3f} ms/call   statsmodels {other:8.3f} ms/call   ratio {other / ours:7.1f}x")
    print(f"one per-class F1 family (10 classes, 2 contrasts, 5 seeds) in summarize: {per_class_family_s():.3f} s")


if __name__ == "__main__":
    main()
