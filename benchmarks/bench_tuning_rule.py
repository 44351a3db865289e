"""Benchmark: which tuning objective picks the best configuration for a fixed budget of seed runs.

A tuning stage ranks each trial by an aggregate of its k seeds' validation scores (sal.sweeps.objectives:
mean, worst, or lcb, the lower end of the 95% t-interval) and evaluates the best trial on fresh seeds,
where what counts is the configuration's mean score. This simulation gives every rule the same budget of
16 seed runs (8 configurations x 2 seeds, 5 x 3, 3 x 5; the campaign's 8 trials x 2 seeds) and measures its
regret: the true mean of the best configuration it tried minus the true mean of the one it chose, in
accuracy points (the rules at one k see the same draws, so their differences are paired).

The seed noise is the campaign's (docs/findings/*/compare_seeds.csv: the sd over 20 evaluation seeds is
0.6 points for Adam and SAM on digits, 1.7-2.2 points for every method on MNIST-1D). Configurations sit
below the landscape's best by an exponential gap (mean 1 point on digits, 4 on MNIST-1D: the spread of
the campaign's trial values, docs/findings/*/compare/budget.csv). Four scenarios:

- digits: seed sd 0.6 points;
- mnist1d: seed sd 1.8 points;
- unequal noise: the MNIST-1D landscape, each configuration's seed sd drawn from 0.5 to 4 points (SAL's
  and SWA's digits seeds spread 2.4-2.8 points, one bad seed in 20);
- divergence: the MNIST-1D landscape, a quarter of the configurations diverge on each seed with
  probability 0.25; a diverged seed scores 0 (sal.metrics.scoring) and a configuration's true value is
  its expected score, diverged seeds included, as the evaluation counts them.

The rules are computed vectorised and checked against sal.sweeps.objectives.trial_value on the first
replications; ties go to the first configuration, as Optuna's best_trial does.

    python benchmarks/bench_tuning_rule.py                 # 4,000 replications, a few seconds
    python benchmarks/bench_tuning_rule.py --full          # 40,000 replications (docs/statistics.md)
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from scipy import stats

from sal.sweeps.objectives import trial_value

BUDGET = 16  # seed runs per method: the campaign's 8 trials x 2 seeds
SEEDS = (2, 3, 5)
RULES = ("mean", "worst", "lcb")
SCENARIOS = {
    "digits": {"top": 0.97, "gap": 0.01, "sd": (0.006, 0.006), "diverging": 0.0, "p_diverge": 0.0},
    "mnist1d": {"top": 0.90, "gap": 0.04, "sd": (0.018, 0.018), "diverging": 0.0, "p_diverge": 0.0},
    "unequal noise": {"top": 0.90, "gap": 0.04, "sd": (0.005, 0.04), "diverging": 0.0, "p_diverge": 0.0},
    "divergence": {"top": 0.90, "gap": 0.04, "sd": (0.018, 0.018), "diverging": 0.25, "p_diverge": 0.25},
}


def draw(scenario: dict, replications: int, rng: np.random.Generator) -> dict:
    """One pool per replication: BUDGET configurations x max(SEEDS) seeds; each rule uses its first part."""
    shape, seeds = (replications, BUDGET), max(SEEDS)
    mu = scenario["top"] - rng.exponential(scenario["gap"], shape)
    sd = rng.uniform(*scenario["sd"], shape)
    p = np.where(rng.random(shape) < scenario["diverging"], scenario["p_diverge"], 0.0)
    diverged = rng.random((*shape, seeds)) < p[..., None]
    scores = np.clip(mu[..., None] + sd[..., None] * rng.standard_normal((*shape, seeds)), 0.0, 1.0)
    return {"true": (1 - p) * mu, "scores": np.where(diverged, 0.0, scores), "diverged": diverged}


def rule_values(rule: str, scores: np.ndarray, diverged: np.ndarray) -> np.ndarray:
    """sal's trial value (sal.sweeps.objectives.trial_value, maximised) over the last axis, vectorised."""
    k = scores.shape[-1]
    if rule == "mean":
        value = scores.mean(-1)
    elif rule == "worst":
        value = scores.min(-1)
    else:
        value = scores.mean(-1) - stats.t.ppf(0.975, k - 1) * scores.std(-1, ddof=1) / math.sqrt(k)
    return np.where(diverged.all(-1), -np.inf, value)  # every seed diverged: infinitely bad


def check_against_sal(pool: dict, rows: int = 10) -> None:
    """The vectorised rules give sal's own trial values."""
    for k in SEEDS:
        scores, diverged = pool["scores"][:rows, :, :k], pool["diverged"][:rows, :, :k]
        for rule in RULES:
            mine = rule_values(rule, scores, diverged)
            theirs = np.array([[trial_value(rule, list(s), list(d), metric="val/acc", maximize=True)
                                for s, d in zip(rs, rd)] for rs, rd in zip(scores, diverged)])
            assert np.allclose(mine, theirs), (rule, k)


def regrets(pool: dict) -> dict[tuple[str, int], np.ndarray]:
    """Per rule and k: each replication's regret in points (best true value tried - true value chosen)."""
    out = {}
    for k in SEEDS:
        configs = BUDGET // k
        true = pool["true"][:, :configs]
        best = true.max(1)
        for rule in RULES:
            values = rule_values(rule, pool["scores"][:, :configs, :k], pool["diverged"][:, :configs, :k])
            chosen = np.take_along_axis(true, values.argmax(1)[:, None], 1)[:, 0]  # argmax: first of ties
            out[rule, k] = 100 * (best - chosen)
    return out


def simulate(replications: int, seed: int) -> list[dict]:
    rows = []
    for i, (name, scenario) in enumerate(SCENARIOS.items()):
        pool = draw(scenario, replications, np.random.default_rng([seed, i]))
        check_against_sal(pool)
        result = regrets(pool)
        for (rule, k), r in result.items():
            diff = r - result["mean", k]  # paired: the same draws
            se = lambda x: float(x.std(ddof=1) / math.sqrt(len(x)))  # noqa: E731
            rows.append({"scenario": name, "rule": rule, "k": k, "configurations": BUDGET // k,
                         "regret": float(r.mean()), "se": se(r), "minus_mean": float(diff.mean()),
                         "minus_mean_se": se(diff)})
    return rows


def table(rows: list[dict]) -> str:
    head = f"{'scenario':<14} {'rule':<6}" + "".join(f"{f'k={k} ({BUDGET // k} configs)':>30}" for k in SEEDS)
    lines = [head, "-" * len(head)]
    for name in SCENARIOS:
        for rule in RULES:
            cells = [next(r for r in rows if (r["scenario"], r["rule"], r["k"]) == (name, rule, k)) for k in SEEDS]
            lines.append(f"{name:<14} {rule:<6}" + "".join(
                f"{c['regret']:>10.2f} ({c['minus_mean']:+.3f} +-{c['minus_mean_se']:.3f})" for c in cells))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replications", type=int, default=4000)
    ap.add_argument("--full", action="store_true", help="40,000 replications (the figures in docs/statistics.md)")
    ap.add_argument("--smoke", action="store_true", help="400 replications (the test suite)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    replications = 40_000 if args.full else 400 if args.smoke else args.replications
    rows = simulate(replications, args.seed)
    print(f"Regret in accuracy points (true mean of the best configuration tried - of the one chosen), "
          f"{replications} replications, a budget of {BUDGET} seed runs; in brackets the paired difference "
          f"from mean-of-k +- its Monte Carlo standard error.")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"replications": replications, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
