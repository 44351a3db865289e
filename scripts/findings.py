"""The campaign's findings page (docs/findings/README.md) from the reports it wrote.

Reads, per data set, <out>/<ds>/{compare,attribution,dose}/summary.csv (and attribution's factorial.csv)
and states every verdict in words with its interval and the smallest effect its seeds could have seen
(summary.csv's mde: the delta detectable at power 0.8 after the family's correction). "No effect" is a
finding like any other and is written as one. Accuracies are fractions in the CSVs, points (x100) here.

    python scripts/findings.py docs/findings      # rewrite the page from reports already there
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import pandas as pd

__all__ = ["write_findings", "verdict_sentence", "dose_of"]

STAGE_TITLES = {"compare": "SAL against tuned Adam, SAM and SWA (sal compare)",
                "attribution": "Which part of SAL matters (attribution ablation)",
                "dose": "Noise dose-response (noise-only vs Adam)"}


def _pts(v: float) -> str:
    return "n/a" if v != v else f"{100 * v:+.2f}"


def _mde(v: float) -> str:
    return "n/a (no spread)" if v != v else f"{100 * v:.2f}"


def _ci(lo: float, hi: float) -> str:
    return "no interval" if lo != lo else f"[{100 * lo:+.2f}, {100 * hi:+.2f}]"


def verdict_sentence(method: str, baseline: str, verdict: str, *, delta: float, lo: float, hi: float,
                     n: int, mde: float) -> str:
    """One plain sentence for one contrast; deltas in accuracy points."""
    what = f"{method} - {baseline} = {_pts(delta)} points {_ci(lo, hi)} on {n} paired seeds"
    seen = "" if mde != mde else f"; these seeds could have detected a difference of {100 * mde:.2f} points"
    return {"better": f"{method} beats {baseline}: {what}.",
            "worse": f"{method} is worse than {baseline}: {what}.",
            "equivalent": f"{method} ties {baseline} within the ROPE: {what}.",
            "same by construction": f"{method} trained exactly as {baseline} (same by construction: it never "
                                    f"intervened at this scale, so it cannot differ): {what}.",
            }.get(verdict, f"No difference shown between {method} and {baseline} ({verdict}): {what}{seen}.")


_EFFECT_WORDS = {"better": "shown, positive", "worse": "shown, negative",
                 "equivalent": "none within the ROPE (equivalent)", "inconclusive": "not shown (inconclusive)"}


def effect_sentence(effect: str, verdict: str, *, estimate: float, lo: float, hi: float, n: int) -> str:
    """One plain sentence for one factorial effect (an effect is a difference of differences, not a cell)."""
    words = _EFFECT_WORDS.get(verdict, verdict)
    return f"{effect} effect: {words}; {_pts(estimate)} points {_ci(lo, hi)} on {n} paired seeds."


def interventions(report: Path) -> dict[str, tuple[float, float, float, str]]:
    """cell -> (noise, deform, revert per seed, seeds with none) from a report's "Interventions" table."""
    if not report.is_file():
        return {}
    out, inside = {}, False
    for line in report.read_text().splitlines():
        if line.startswith("## "):
            inside = line.startswith("## Interventions per stress-aware cell")
        elif inside and line.startswith("| ") and not line.startswith("| cell"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            try:
                out[cells[0]] = (float(cells[4]), float(cells[5]), float(cells[6]), cells[7])
            except (IndexError, ValueError):
                continue
    return out


def dose_of(cell: str) -> float:
    """noise_1e-3 -> 0.001 (the campaign's dose cells are named by their noise std at the yield point)."""
    m = re.fullmatch(r"noise_([0-9.]+e-?[0-9]+)", cell)
    return float(m.group(1)) if m else math.nan


def _contrasts(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[(summary["verdict"] != "reference") & (summary["metric"] == "test/acc")]


def _table(rows: pd.DataFrame, first: str) -> list[str]:
    out = [f"| {first} | delta (points) | 95% CI | p (Holm) | n | mde (points) | verdict |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows.itertuples():
        out.append(f"| {r.label} | {_pts(r.delta)} | {_ci(r.delta_ci_low, r.delta_ci_high)} | "
                   f"{r.p_holm:.3g} | {int(r.n)} | {_mde(r.mde)} | {r.verdict} |")
    return out


def _read(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    return pd.read_csv(path) if path.is_file() else None


def _compare_lines(folder: Path) -> list[str]:
    s = _read(folder, "summary.csv")
    if s is None:
        return ["Not run (no summary.csv)."]
    c = _contrasts(s).assign(label=lambda d: d["method"] + " vs " + d["baseline"])
    report = folder / "report.md"
    stop = re.search(r"(Stopped|Fixed design): (.+?)\.(\s|$)", report.read_text()) if report.is_file() else None
    head = [f"Evaluation seeds: {stop.group(2)} (sal compare's protocol section).", ""] if stop else []
    lines = head + [f"- {verdict_sentence(r.method, r.baseline, r.verdict, delta=r.delta, lo=r.delta_ci_low, hi=r.delta_ci_high, n=int(r.n), mde=r.mde)}"  # noqa: E501
             for r in c.itertuples()]
    return lines + [""] + _table(c, "contrast")


def _attribution_lines(folder: Path) -> list[str]:
    s, f = _read(folder, "summary.csv"), _read(folder, "factorial.csv")
    if s is None:
        return ["Not run (no summary.csv)."]
    lines = []
    if f is not None and not f.empty:
        f = f[f["metric"] == "test/acc"]
        lines += ["Factorial effects (paired per seed; trigger = sal - yoked random timing at equal count):", ""]
        lines += ["| effect | estimate (points) | 95% CI | p (Holm) | n | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in f.itertuples():
            lines.append(f"| {r.effect} | {_pts(r.estimate)} | {_ci(r.ci_low, r.ci_high)} | {r.p_holm:.3g} | "
                         f"{int(r.n)} | {r.verdict} |")
        stated = ["- " + effect_sentence(r.effect, r.verdict, estimate=r.estimate, lo=r.ci_low, hi=r.ci_high,
                                         n=int(r.n)) for r in f.itertuples()]
        lines += ["", *stated, ""]
    else:
        lines += ["No factorial table (a cell of the 2x2 is missing or has fewer than 2 seeds).", ""]
    acted = interventions(folder / "report.md")
    if acted:
        lines += ["How often each stress-aware cell acted (per seed; an effect can only come from epochs where "
                  "a part acted):", "", "| cell | noise | deformations | reverts | seeds where it never acted |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {cell} | {n:.1f} | {d:.1f} | {r:.1f} | {none or 'none'} |"
                  for cell, (n, d, r, none) in acted.items()]
        lines += [""]
    c = _contrasts(s).assign(label=lambda d: d["method"] + " vs " + d["baseline"])
    return lines + ["Contrasts of the plan:", ""] + _table(c, "contrast")


def _dose_lines(folder: Path) -> list[str]:
    s = _read(folder, "summary.csv")
    if s is None:
        return ["Not run (no summary.csv)."]
    c = _contrasts(s)
    c = c.assign(dose=c["method"].map(dose_of)).sort_values("dose")
    c = c.assign(label=[f"{d:g}" for d in c["dose"]])
    decided = c[c["verdict"].isin(["better", "worse"])]
    if decided.empty:
        head = (f"No noise dose from {c['dose'].min():g} to {c['dose'].max():g} changes test accuracy "
                "significantly against Adam.")
    else:
        head = "Doses with a significant effect: " + ", ".join(
            f"{r.dose:g} ({r.verdict}, {_pts(r.delta)} points {_ci(r.delta_ci_low, r.delta_ci_high)})"
            for r in decided.itertuples()) + "."
    return [head, ""] + _table(c, "noise std at yield")


def _bayes_lines(folder: Path) -> list[str]:
    """The Bayesian correlated t-test beside each contrast of the stage's plan."""
    s = _read(folder, "summary.csv")
    if s is None or "bayes_p_better" not in s:
        return []
    c = _contrasts(s)
    rows = [f"| {r.method} vs {r.baseline} | {r.bayes_p_worse:.2f} | {r.bayes_p_rope:.2f} | {r.bayes_p_better:.2f} | "
            f"{r.verdict} |" for r in c.itertuples()]
    return ["Bayesian second opinion (correlated t-test, correlation 0, the plan's ROPE):", "",
            "| contrast | P(worse) | P(within ROPE) | P(better) | frequentist verdict |",
            "| --- | --- | --- | --- | --- |",
            *rows, ""]


def _secondary_lines(folder: Path) -> list[str]:
    """The report's secondary families (sal.report.secondary, sal.report.event_sharpness) and the budget curves,
    short."""
    lines = []
    budget = _read(folder, "budget.csv")
    if budget is not None and not budget.empty:
        last = budget.sort_values("trials n").groupby("method").tail(1)
        lines += ["Expected best tuning objective over each method's complete trials (Dodge et al. 2019): " + ", ".join(
            f"{r['method']} {r['E[best objective]']:.4f} (n = {int(r['trials n'])})" for _, r in last.iterrows())
            + ". " + str(budget["crossing"].iloc[0]) + ".", ""]
    rob = _read(folder, "robustness.csv")
    if rob is not None and not rob.empty:
        worst = rob[rob["metric"].isin(["test/robust/worst/acc", "test/robust/mean/acc"])]
        lines += ["Accuracy on perturbed test inputs (mean and worst over perturbations):", "",
                  "| contrast | metric | delta (points) | 95% CI | p (Holm) | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r.method} vs {r.baseline} | {r.metric.split('/')[2]} | {_pts(r.delta)} | "
                  f"{_ci(r.delta_ci_low, r.delta_ci_high)} | {r.p_adj:.3g} | {r.verdict} |" for r in worst.itertuples()]
        lines += [""]
    events = _read(folder, "event_sharpness.csv")
    if events is not None and not events.empty:
        lines += ["Grad norm around plastic events (log ratio from the epoch before to the epoch of the event, "
                  "per seed; effect = minus the baseline's change over the same epochs):", "",
                  "| cell | vs | event | seeds | events | change | effect vs baseline | 95% CI | p |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in events.itertuples():
            pct = lambda v: "" if v != v else f"{math.expm1(v) * 100:+.1f}%"  # noqa: E731
            low, high = getattr(r, "effect_ci_low", math.nan), getattr(r, "effect_ci_high", math.nan)
            lines.append(f"| {r.method} | {r.vs} | {r.event} | {r.seeds} | {r.events} | {pct(r.change)} | "
                         f"{pct(getattr(r, 'effect', math.nan))} | [{pct(low)}, {pct(high)}] | "
                         f"{getattr(r, 'p_ttest', math.nan):.3g} |")
        lines += [""]
    classes = _read(folder, "per_class_f1.csv")
    if classes is not None and not classes.empty:
        decided = classes[classes["verdict"].isin(["better", "worse"])]
        spread = f"{_pts(classes['delta'].min())} to {_pts(classes['delta'].max())} points"
        lines += [f"F1 per class ({classes['method'].iloc[0]} vs {classes['baseline'].iloc[0]}, Holm across "
                  f"{len(classes)} classes): deltas from {spread}; "
                  + (", ".join(f"{r.context} {r.verdict}" for r in decided.itertuples()) if len(decided)
                     else "no class differs significantly") + ".", ""]
    cost = _read(folder, "cost.csv")
    if cost is not None and not cost.empty:
        def interval(r) -> str:
            low, high = r.delta_ci_low, r.delta_ci_high
            return "no interval" if low != low else f"[{low:+.3g}, {high:+.3g}]"

        lines += ["Cost (paired, lower is better; seeds packed into one model share its time, so a packed cell's "
                  "seeds have no spread; on the CPU mem/peak_mb is the process's peak, not the run's, see the "
                  "report): " + "; ".join(f"{r.method} vs {r.baseline} {r.metric} {r.delta:+.3g} {interval(r)}"
                                          for r in cost.itertuples()) + ".", ""]
    return lines


def _hierarchical_lines(out: Path, datasets: list[str]) -> list[str]:
    """The fair comparison's contrasts across the data sets: the Bayesian hierarchical model's posterior for a
    new data set of this kind, from each data set's per-seed test accuracies (sal.stats.hierarchical)."""
    from sal.stats.summary import hierarchical_contrasts

    seeds = {ds: _read(out / ds, "compare_seeds.csv") for ds in datasets}
    plans = {ds: _read(out / ds / "compare", "summary.csv") for ds in datasets}
    seeds = {ds: s for ds, s in seeds.items() if s is not None and plans[ds] is not None}
    if len(seeds) < 2:
        return []
    first = next(iter(seeds))
    if "rope" not in plans[first]:
        return []  # a summary.csv written before it named its ROPE
    rope = float(_contrasts(plans[first])["rope"].iloc[0])
    tidy = pd.concat([pd.DataFrame({"dataset": ds, "context": "", "method": s["cell"], "seed": s["seed"],
                                    "value": s["test_acc"]}) for ds, s in seeds.items()])
    posteriors = hierarchical_contrasts(tidy, list(_contrasts(plans[first]).itertuples()), rope=rope)
    lines = [f"- {contrast}: P(worse) {worse:.2f}, P(within the ROPE) {within:.2f}, P(better) {better:.2f}"
             for contrast, (worse, within, better) in posteriors.items()]
    head = (f"Across the {len(seeds)} data sets (Bayesian hierarchical model, Benavoli et al. 2017; "
            "docs/statistics.md): the posterior for a new data set of this kind, test accuracy, ROPE "
            f"{rope * 100:g} points. With two data sets the spread between data sets is barely constrained, so "
            "the posterior for a new one stays near even odds even when both point the same way.")
    return [head, "", *lines, ""] if lines else []


def _headline(out: Path, datasets: list[str]) -> list[str]:
    """The answer first: per data set, every verdict of the fair comparison on one line."""
    lines = []
    for ds in datasets:
        s = _read(out / ds / "compare", "summary.csv")
        if s is None:
            continue
        parts = [f"{r.method} vs {r.baseline} {r.verdict} ({_pts(r.delta)} {_ci(r.delta_ci_low, r.delta_ci_high)}, "
                 f"n={int(r.n)})" for r in _contrasts(s).itertuples()]
        lines.append(f"- **{ds}**: " + "; ".join(parts) + ".")
    return ["## In short", "", *lines, "", *_hierarchical_lines(out, datasets)] if lines else []


def _times(out: Path) -> list[str]:
    t = _read(out, "times.csv")  # written by scripts/campaign.py: dataset, stage, seconds (stage "all": total)
    if t is None:
        return ["No times.csv (the reports were not written by scripts/campaign.py)."]
    rows = ["| data set | stage | wall time (s) |", "| --- | --- | --- |"]
    return rows + [f"| {r.dataset} | {r.stage} | {r.seconds:.0f} |" for r in t.itertuples()]


def write_findings(out: Path, *, scale: str, what: str) -> Path:
    """Write <out>/README.md from the reports and times.csv under ``out``; returns its path."""
    out = Path(out)
    datasets = sorted(p.name for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    lines = ["# What sal found: SAL on MNIST-1D and digits", "",
             f"Written by `./scripts/campaign.sh{'' if scale == 'cpu' else ' --scale ' + scale}` "
             f"(scale `{scale}`). Deltas are test-accuracy points (x100), paired by seed, with 95% t-intervals; "
             "p is Holm-corrected within each family of the stage's declared plan, and the verdict uses that "
             "corrected p, while each interval is the contrast's own (uncorrected), so an interval that just "
             "excludes 0 can still be inconclusive; mde is the smallest delta those seeds detect with power 0.8 "
             "after the correction. `inconclusive` means no difference was shown: the true difference may "
             "still be anywhere in the interval.", "",
             f"What this scale can and cannot show: {what}.", ""]
    lines += _headline(out, datasets)
    for ds in datasets:
        lines += [f"## {ds}", ""]
        for stage, title in STAGE_TITLES.items():
            folder = out / ds / stage
            if not folder.is_dir():
                continue
            body = {"compare": _compare_lines, "attribution": _attribution_lines, "dose": _dose_lines}[stage](folder)
            body += ["", *_bayes_lines(folder), *_secondary_lines(folder)]
            lines += [f"### {title}", "", f"Report: [{ds}/{stage}/report.md]({ds}/{stage}/report.md)", "",
                      *body, ""]
    lines += ["## Stage times", "", *_times(out), ""]
    path = out / "README.md"
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


if __name__ == "__main__":
    print(write_findings(Path(sys.argv[1]), scale="cpu", what="see the presets' comments"))
