"""Benchmark: what each of the paper's remaining measurements costs a run, measured side by side in one run.

The workload is the quick start's SAL cell (ablations/quick.yaml: digits, small CNN width 8, 15 epochs).
Variants train in turn, ``--repeats`` rounds of (plain, grad norm, robustness), one torch thread, and each
is the median over its rounds. Printed per addition: seconds per run and percent of the plain run.

- grad norm per epoch: ``analysis: {sharpness: [grad_norm], samples: 256}`` (also trains the seeds one at a
  time instead of packed: not counted here, see README "Packed seeds");
- robustness: ``robustness: {noise: [0.25, 0.5, 1.0], corruptions: [blur, contrast, translate], levels:
  [1, 3, 5]}`` on val and test (12 perturbations x 2 splits);
- per-class metrics: the confusion matrix in the test pass and its report (always on), timed directly;
- Bayesian columns and budget curves: report-time statistics per contrast / per method, timed directly.

    python benchmarks/bench_additions.py
    python benchmarks/bench_additions.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from sal.metrics.classmetrics import class_f1_metrics, class_report
from sal.spec.config import validate_run
from sal.stats import inference as stats
from sal.training.run import TrainingRun, _evaluate, train

BASE = {"data": {"name": "digits"}, "model": {"name": "cnn", "width": 8}, "optim": {"name": "adam", "lr": 0.003},
        "method": {"name": "sal", "warmup": 4, "recovery_patience": 2}, "train": {"epochs": 15, "batch_size": 64}}
VARIANTS = {
    "plain": {},
    "grad norm per epoch": {"analysis": {"sharpness": ["grad_norm"], "samples": 256}},
    "robustness": {"robustness": {"noise": [0.25, 0.5, 1.0], "corruptions": ["blur", "contrast", "translate"],
                                  "levels": [1, 3, 5]}},
}


def _seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    specs = {name: validate_run({**BASE, **extra}) for name, extra in VARIANTS.items()}
    times: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(args.repeats):  # interleaved rounds: a slow spell of the machine hits every variant
        for name, spec in specs.items():
            t0 = time.perf_counter()
            result = train(spec)
            times[name].append(time.perf_counter() - t0)
            assert result.ok, result.message
    plain = statistics.median(times["plain"])
    print(f"workload: the quick start's SAL cell, {BASE['train']['epochs']} epochs; plain run {plain:.2f} s "
          f"(median of {args.repeats})")
    for name in list(specs)[1:]:
        extra = statistics.median(times[name]) - plain
        print(f"{name:>22}: +{extra:6.3f} s per run  ({extra / plain * 100:+5.1f}% of the plain run)")

    run = TrainingRun(specs["plain"])
    model, test, classes = run.model, run.data.test, run.data.num_classes
    without = _seconds(lambda: torch.stack(_evaluate(model, test, run.eval_bs, run.autocast)[0]).tolist(), 20)
    with_classes = _seconds(lambda: class_f1_metrics(class_report(
        _evaluate(model, test, run.eval_bs, run.autocast, classes=classes)[1].numpy())[0]), 20)
    extra = with_classes - without
    print(f"{'per-class metrics':>22}: +{extra:6.4f} s per run  ({extra / plain * 100:+5.2f}% of the plain run)")

    rng = np.random.default_rng(0)
    d = rng.normal(0.003, 0.01, 20)
    bayes = _seconds(lambda: stats.bayes_correlated_ttest(d, rope=0.002), 200)
    scores = rng.normal(0.9, 0.02, 16)
    curve = _seconds(lambda: stats.expected_max_curve(scores, other=scores), 200)
    print(f"{'bayes columns':>22}: {bayes * 1e3:.3f} ms per contrast (report time, not per run)")
    print(f"{'budget curves':>22}: {curve * 1e3:.3f} ms per method of 16 trials (report time)")


if __name__ == "__main__":
    main()
