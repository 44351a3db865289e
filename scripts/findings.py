"""The campaign's findings, the one generator of every sentence about them: the page
(docs/findings/README.md) and the summary in the repository's README.md (between the marker comments
<!-- findings:begin --> and <!-- findings:end -->).

Reads, per data set, <out>/<ds>/{compare,attribution,dose}/*.csv, the per-seed CSVs and each compare
stage's looks (compare_design.csv), and states every verdict in words with its interval, labelled with the
interval's level, and the smallest effect its seeds could have seen (summary.csv's mde: the delta detectable
at power 0.8 after the family's correction). The headline is the campaign's family (scripts/campaign_family.py,
docs/statistics.md "The campaign's family"). "No effect" is a finding like any other and is written as one.
Accuracies are fractions in the CSVs, points (x100) here. Writes only files the campaign owns
(scripts/campaign_outputs.py).

    .venv/bin/python scripts/findings.py docs/findings --readme README.md   # regenerate both from the CSVs
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sal.core.spec_base import SpecError  # noqa: E402
from sal.report.event_sharpness import event_counts, findings_lines  # noqa: E402
from sal.report.outputs import write_text_atomic  # noqa: E402

from campaign_family import CampaignFamily, campaign_family, level_label, read_design  # noqa: E402
from campaign_outputs import write_owned  # noqa: E402

__all__ = ["write_findings", "verdict_sentence", "dose_of", "summary_lines", "replace_block", "BEGIN", "END"]

BEGIN, END = "<!-- findings:begin -->", "<!-- findings:end -->"  # README.md's generated block
ABLATION_LEVEL = 0.95  # sal report's default level: the campaign passes no --level to its ablation reports

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
                     n: int, mde: float, level: str = "95%") -> str:
    """One plain sentence for one contrast; deltas in accuracy points, the interval labelled with its level."""
    what = f"{method} - {baseline} = {_pts(delta)} points, {level} CI {_ci(lo, hi)}, on {n} paired seeds"
    seen = "" if mde != mde else f"; these seeds could have detected a difference of {100 * mde:.2f} points"
    return {"better": f"{method} beats {baseline}: {what}.",
            "worse": f"{method} is worse than {baseline}: {what}.",
            "equivalent": f"{method} ties {baseline} within the ROPE: {what}.",
            "same by construction": f"{method} trained exactly as {baseline} (same by construction: it never "
                                    f"intervened at this scale, so it cannot differ): {what}.",
            }.get(verdict, f"No difference shown between {method} and {baseline} ({verdict}): {what}{seen}.")


_EFFECT_WORDS = {"better": "shown, positive", "worse": "shown, negative",
                 "equivalent": "none within the ROPE (equivalent)", "inconclusive": "not shown (inconclusive)"}


def effect_sentence(effect: str, verdict: str, *, estimate: float, lo: float, hi: float, n: int,
                    level: str = "95%") -> str:
    """One plain sentence for one factorial effect (an effect is a difference of differences, not a cell)."""
    words = _EFFECT_WORDS.get(verdict, verdict)
    return f"{effect} effect: {words}; {_pts(estimate)} points, {level} CI {_ci(lo, hi)}, on {n} paired seeds."


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


def _never_acted(seeds: str) -> str:
    """The report's "seeds with none" cell (seed ids, comma-separated) as a count, with the ids."""
    ids = [s for s in re.split(r"[,\s]+", seeds.strip()) if s]
    return "0" if not ids else f"{len(ids)} (seed{'s' if len(ids) > 1 else ''} {', '.join(ids)})"


def dose_of(cell: str) -> float:
    """noise_1e-3 -> 0.001 (the campaign's dose cells are named by their noise std at the yield point)."""
    m = re.fullmatch(r"noise_([0-9.]+e-?[0-9]+)", cell)
    return float(m.group(1)) if m else math.nan


def _contrasts(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[(summary["verdict"] != "reference") & (summary["metric"] == "test/acc")]


def _table(rows: pd.DataFrame, first: str, level: str) -> list[str]:
    out = [f"| {first} | delta (points) | {level} CI | p (Holm) | n | mde (points) | verdict |",
           "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows.itertuples():
        out.append(f"| {r.label} | {_pts(r.delta)} | {_ci(r.delta_ci_low, r.delta_ci_high)} | "
                   f"{r.p_holm:.3g} | {int(r.n)} | {_mde(r.mde)} | {r.verdict} |")
    return out


def _read(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    return pd.read_csv(path) if path.is_file() else None


def _compare_lines(folder: Path, level: str) -> list[str]:
    s = _read(folder, "summary.csv")
    if s is None:
        return ["Not run (no summary.csv)."]
    c = _contrasts(s).assign(label=lambda d: d["method"] + " vs " + d["baseline"])
    report = folder / "report.md"
    stop = re.search(r"(Stopped|Fixed design): (.+?)\.(\s|$)", report.read_text()) if report.is_file() else None
    head = [f"Evaluation seeds: {stop.group(2)} (sal compare's protocol section).", ""] if stop else []
    lines = head + [f"- {verdict_sentence(r.method, r.baseline, r.verdict, delta=r.delta, lo=r.delta_ci_low, hi=r.delta_ci_high, n=int(r.n), mde=r.mde, level=level)}"  # noqa: E501
             for r in c.itertuples()]
    return lines + [""] + _table(c, "contrast", level)


def _attribution_lines(folder: Path, level: str) -> list[str]:
    s, f = _read(folder, "summary.csv"), _read(folder, "factorial.csv")
    if s is None:
        return ["Not run (no summary.csv)."]
    lines = []
    if f is not None and not f.empty:
        f = f[f["metric"] == "test/acc"]
        lines += ["Factorial effects (paired per seed; trigger = sal - yoked random timing at equal count):", ""]
        lines += [f"| effect | estimate (points) | {level} CI | p (Holm across the {len(f)} effects) | n | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in f.itertuples():
            lines.append(f"| {r.effect} | {_pts(r.estimate)} | {_ci(r.ci_low, r.ci_high)} | {r.p_holm:.3g} | "
                         f"{int(r.n)} | {r.verdict} |")
        stated = ["- " + effect_sentence(r.effect, r.verdict, estimate=r.estimate, lo=r.ci_low, hi=r.ci_high,
                                         n=int(r.n), level=level) for r in f.itertuples()]
        lines += ["", *stated, ""]
    else:
        lines += ["No factorial table (a cell of the 2x2 is missing or has fewer than 2 seeds).", ""]
    acted = interventions(folder / "report.md")
    if acted:
        lines += ["How often each stress-aware cell acted (mean per seed over all its seeds, from the report; an "
                  "effect can only come from epochs where a part acted):", "",
                  "| cell | noise | deformations | reverts | seeds that never acted |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {cell} | {n:.1f} | {d:.1f} | {r:.1f} | {_never_acted(none)} |"
                  for cell, (n, d, r, none) in acted.items()]
        lines += [""]
    c = _contrasts(s).assign(label=lambda d: d["method"] + " vs " + d["baseline"])
    return lines + ["Contrasts of the plan:", ""] + _table(c, "contrast", level)


def _dose_lines(folder: Path, level: str) -> list[str]:
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
    equivalent = c[c["verdict"] == "equivalent"]
    if len(equivalent):
        head += (" Equivalent to Adam within the ROPE (the " + level + " interval inside +-" +
                 f"{100 * float(equivalent['rope'].iloc[0]):g} points): " +
                 ", ".join(f"{d:g}" for d in equivalent["dose"]) + ".")
    return [head, ""] + _table(c, "noise std at yield", level)


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


def _secondary_lines(folder: Path, level: str) -> list[str]:
    """The report's secondary families (sal.report.secondary, sal.report.event_sharpness) and the budget curves,
    short."""
    lines = []
    budget = _read(folder, "budget.csv")
    if budget is not None and not budget.empty:
        # descriptive, at one n for every method: the fewest complete trials any method has (docs/statistics.md)
        common = int(budget.groupby("method")["trials n"].max().min())
        at = budget[budget["trials n"] == common]
        lines += [f"Expected best tuning objective at n = {common} complete trials (Dodge et al. 2019; descriptive: "
                  "the trials are TPE's, not independent draws): " + ", ".join(
                      f"{r['method']} {r['E[best objective]']:.4f}" for _, r in at.iterrows()) + ".", ""]
    rob = _read(folder, "robustness.csv")
    if rob is not None and not rob.empty:
        worst = rob[rob["metric"].isin(["test/robust/worst/acc", "test/robust/mean/acc"])]
        lines += ["Accuracy on perturbed test inputs (mean and worst over perturbations):", "",
                  f"| contrast | metric | delta (points) | {level} CI | p (Holm) | verdict |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r.method} vs {r.baseline} | {r.metric.split('/')[2]} | {_pts(r.delta)} | "
                  f"{_ci(r.delta_ci_low, r.delta_ci_high)} | {r.p_adj:.3g} | {r.verdict} |" for r in worst.itertuples()]
        lines += [""]
    lines += findings_lines(_read(folder, "event_sharpness.csv"))
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

        lines += [f"Cost (paired, lower is better, {level} intervals; seeds packed into one model share its time, "
                  "so a packed cell's "
                  "seeds have no spread; on the CPU mem/peak_mb is the process's peak, not the run's, see the "
                  "report): " + "; ".join(f"{r.method} vs {r.baseline} {r.metric} {r.delta:+.3g} {interval(r)}"
                                          for r in cost.itertuples()) + ".", ""]
    return lines


def hierarchical_rows(out: Path, datasets: list[str]) -> pd.DataFrame | None:
    """The fair comparison's contrasts across the data sets (sal.stats.summary.hierarchical_table): the
    Bayesian hierarchical model's answer for a new data set of this kind, from each data set's per-seed test
    accuracies, with Monte Carlo errors and, below PRIOR_DOMINATED_BELOW data sets, one row per prior bound."""
    from sal.stats.summary import hierarchical_table

    seeds = {ds: _read(out / ds, "compare_seeds.csv") for ds in datasets}
    plans = {ds: _read(out / ds / "compare", "summary.csv") for ds in datasets}
    seeds = {ds: s for ds, s in seeds.items() if s is not None and plans[ds] is not None}
    if len(seeds) < 2:
        return None
    first = next(iter(seeds))
    if "rope" not in plans[first]:
        return None  # a summary.csv written before it named its ROPE
    rope = float(_contrasts(plans[first])["rope"].iloc[0])
    tidy = pd.concat([pd.DataFrame({"dataset": ds, "context": "", "method": s["cell"], "seed": s["seed"],
                                    "value": s["test_acc"]}) for ds, s in seeds.items()])
    return hierarchical_table(tidy, list(_contrasts(plans[first]).itertuples()), rope=rope).assign(rope=rope)


def _hierarchical_lines(table: pd.DataFrame | None) -> list[str]:
    """hierarchical_rows' table in the report's words (sal.report.render.hierarchical_sentence)."""
    from sal.report.render import hierarchical_sentence

    if table is None or table.empty:
        return []
    head = (f"Across the data sets (test accuracy, ROPE {table['rope'].iloc[0] * 100:g} points; the numbers are "
            "in hierarchical.csv):")
    return [head, "", *(f"- {hierarchical_sentence(contrast, rows)}."
                        for contrast, rows in table.groupby("contrast", sort=False)), ""]


def _p(v: float) -> str:
    return "n/a" if v != v else f"{v:.2g}"


def _family_lines(family: CampaignFamily) -> list[str]:
    """The headline: the campaign's family (scripts/campaign_family.py), with the 95% interval beside the
    sequential one."""
    if family.problem:
        return [f"No campaign-level family: {family.problem}. Each data set's verdicts below are corrected within "
                "that data set alone, so they are not a joint statement about the data sets.", ""]
    rows, looks = family.rows, family.looks
    decided = rows[rows["verdict"].isin(["better", "worse", "equivalent"])]
    said = {"better": "better than", "worse": "worse than", "equivalent": "equivalent to"}
    if decided.empty:
        head = "SAL is not shown to differ from any baseline on any data set."
    else:
        head = "SAL is " + "; ".join(f"{said[r.verdict]} {r.baseline} on {r.dataset}" for r in decided.itertuples())
        head += "; no other contrast is decided."
    thresholds = ", ".join(f"{t:.3g} at {n} seeds" for n, t in zip(looks["n_seeds"], looks["threshold"]))
    lines = [f"**{head}** Judged as one family: the {family.m} primary contrasts of the {rows['dataset'].nunique()} "
             f"data sets, Holm over all {family.m} at each look of the group-sequential design, against the look's "
             f"nominal threshold ({thresholds}; docs/statistics.md, \"The campaign's family\"). Deltas in test "
             "accuracy points over every evaluation seed, with their 95% interval; the repeated interval at the "
             "deciding look's level is the one the verdict uses.", "",
             "| data set | contrast | n | delta (points) | 95% CI | look (seeds) | repeated CI (level) "
             "| p (Holm, campaign) | threshold | verdict (campaign) | verdict (data set alone) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows.itertuples():
        lines.append(f"| {r.dataset} | {r.method} vs {r.baseline} | {int(r.n_all)} | {_pts(r.delta_all)} | "
                     f"{_ci(r.ci95_low, r.ci95_high)} | {int(r.look)} ({int(r.n)}) | "
                     f"{_ci(r.seq_ci_low, r.seq_ci_high)} "
                     f"({level_label(r.level)}) | {_p(r.p_holm)} | {r.threshold:.3g} | {r.verdict} | "
                     f"{r.verdict_alone} |")
    return lines + [""]


def _inactive_sal(out: Path, datasets: list[str]) -> list[str]:
    """Where the tuned SAL never intervened on any evaluation seed, it trained as its base optimizer: its
    contrasts there measure the tuning of the shared knobs (a tie with Adam at the same learning rate is the same
    training), not SAL's interventions (the compare report's "Interventions" table and warning)."""
    lines = []
    for ds in datasets:
        acted = interventions(out / ds / "compare" / "report.md").get("sal")
        seeds = _read(out / ds, "compare_seeds.csv")
        if acted is None or seeds is None:
            continue
        n = int((seeds["cell"] == "sal").sum())
        idle = [s for s in re.split(r"[,\s]+", acted[3].strip()) if s]
        if n and len(idle) == n:
            lines.append(f"- On {ds} the tuned SAL never intervened on any of its {n} evaluation seeds (with its "
                         "tuned warm-up and thresholds none of its interventions fired): it ran as its base "
                         "optimizer with its own tuned optimizer settings, so its contrasts there measure the tuning, "
                         "not SAL's interventions.")
    return lines


def _decided_rows(frame: pd.DataFrame | None) -> pd.DataFrame:
    if frame is None or frame.empty:
        return pd.DataFrame()
    return frame[frame["verdict"].isin(["better", "worse"])]


def _secondary_summary(out: Path, datasets: list[str]) -> list[str]:
    """One sentence per secondary family of the compare stages: what is decided there, or that nothing is."""
    lines = []
    for name, what in (("robustness.csv", "Robustness (accuracy on perturbed test inputs, mean and worst over "
                                          "perturbations)"),
                       ("per_class_f1.csv", "Per-class F1")):
        parts, ran = [], []
        for ds in datasets:
            frame = _read(out / ds / "compare", name)
            if frame is None:
                continue
            ran.append(ds)
            level = level_label(stage_level(out, ds, "compare") or math.nan)
            decided = _decided_rows(frame)
            if name == "robustness.csv":  # the pooled mean and worst in full; single perturbations by name
                pooled = decided["metric"].isin(["test/robust/mean/acc", "test/robust/worst/acc"])
                single = decided[~pooled]
                decided = decided[pooled]
                for (method, baseline, verdict), g in single.groupby(["method", "baseline", "verdict"], sort=False):
                    parts.append(f"{ds} {method} vs {baseline} {verdict} on "
                                 + ", ".join(m.split("/")[2] for m in g["metric"]))
            for r in decided.itertuples():
                label = r.context if name == "per_class_f1.csv" else r.metric.split("/")[2] + " accuracy"
                parts.append(f"{ds} {r.method} vs {r.baseline} {label}: {r.verdict}, {_pts(r.delta)} points, "
                             f"{level} CI {_ci(r.delta_ci_low, r.delta_ci_high)}, p (Holm) {_p(r.p_adj)}")
        if ran:
            lines.append(f"- {what}, sal compare's stage: " + ("; ".join(parts) if parts else
                         f"no contrast is decided on {' or '.join(ran)}") + ".")
    return lines


def _attribution_summary(out: Path, datasets: list[str]) -> list[str]:
    lines = []
    for ds in datasets:
        f = _read(out / ds / "attribution", "factorial.csv")
        if f is None or f.empty:
            continue
        f = f[f["metric"] == "test/acc"]
        effects = ", ".join(f"{r.effect} {_pts(r.estimate)} {_ci(r.ci_low, r.ci_high)} ({r.verdict})"
                            for r in f.itertuples())
        decided = f[f["verdict"].isin(["better", "worse"])]
        lines.append(f"- Which part matters, {ds} (factorial, 95% CIs, Holm across its {len(f)} effects): "
                     + ("no effect is shown" if decided.empty else
                        "shown: " + ", ".join(f"{r.effect} {r.verdict}" for r in decided.itertuples()))
                     + f"; {effects}." + _acting(out, ds))
    return lines


def _acting(out: Path, ds: str) -> str:
    """How often SAL deformed and reverted: every event of its runs, from the committed per-epoch table
    (the sharpness table counts only events with a measurement some epochs later)."""
    epochs = _read(out / ds, "attribution_epochs.csv")
    if epochs is None or epochs.empty:
        return ""
    counts = event_counts(epochs)
    parts = []
    for kind, word in (("deform", "deformations"), ("revert", "reverts")):
        row = counts[(counts["cell"] == "sal") & (counts["event"] == kind)]
        if len(row) and int(row["events"].iloc[0]):
            n, acting, total = (int(row[c].iloc[0]) for c in ("events", "seeds_acting", "seeds"))
            parts.append(f"{n} {word} on {acting} of {total} seeds ({n / acting:.2f} per seed that had one)")
    return (" SAL made " + " and ".join(parts) + ".") if parts else ""


def _dose_summary(out: Path, datasets: list[str]) -> list[str]:
    parts = []
    for ds in datasets:
        s = _read(out / ds / "dose", "summary.csv")
        if s is None:
            continue
        c = _contrasts(s)
        c = c.assign(dose=c["method"].map(dose_of)).sort_values("dose")
        decided = c[c["verdict"].isin(["better", "worse"])]
        equivalent = c[c["verdict"] == "equivalent"]
        text = (f"{ds}: no dose from {c['dose'].min():g} to {c['dose'].max():g} changes test accuracy against Adam"
                if decided.empty else f"{ds}: " + ", ".join(f"{r.dose:g} {r.verdict}" for r in decided.itertuples()))
        if len(equivalent):
            text += " (equivalent within the ROPE: " + ", ".join(f"{d:g}" for d in equivalent["dose"]) + ")"
        parts.append(text)
    return [f"- Noise dose-response (noise-only vs Adam, Holm across the doses): {'; '.join(parts)}."] if parts else []


def summary_lines(out: Path, datasets: list[str], *, family: CampaignFamily | None = None) -> list[str]:
    """The findings in short, every number from the CSVs under ``out``: the README's block and the page's
    first section."""
    family = family if family is not None else campaign_family(out, datasets)
    lines = [*_family_lines(family), *_inactive_sal(out, datasets), *_secondary_summary(out, datasets),
             *_attribution_summary(out, datasets), *_dose_summary(out, datasets)]
    t = _read(out, "times.csv")
    if t is not None and (t["dataset"] == "all").any():
        row = t[t["dataset"] == "all"].iloc[0]
        lines.append(f"- The campaign took {row['seconds']:.0f} s ({row['stage']}).")
    return lines


def _times(out: Path) -> list[str]:
    t = _read(out, "times.csv")  # written by scripts/campaign.py: dataset, stage, seconds (stage "all": total)
    if t is None:
        return ["No times.csv (the reports were not written by scripts/campaign.py)."]
    rows = ["| data set | stage | wall time (s) |", "| --- | --- | --- |"]
    return rows + [f"| {r.dataset} | {r.stage} | {r.seconds:.0f} |" for r in t.itertuples()]


def stage_level(out: Path, ds: str, stage: str) -> float | None:
    """The level of a stage's intervals: an ablation report's 95%; a compare report's 1 - the nominal threshold
    of its last look taken (sal compare judges and reports at that look), from compare_design.csv."""
    if stage != "compare":
        return ABLATION_LEVEL
    design, summary = read_design(out / ds), _read(out / ds / "compare", "summary.csv")
    if design is None or summary is None:
        return None
    taken = design[design["n_seeds"] == int(_contrasts(summary)["n"].max())]
    return float(1 - taken["threshold"].iloc[0]) if len(taken) else None


def page_lines(out: Path, *, scale: str, what: str, hierarchical: pd.DataFrame | None = None) -> list[str]:
    out = Path(out)
    datasets = sorted(p.name for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    lines = ["# What sal found: SAL on MNIST-1D and digits", "",
             f"Written by `scripts/findings.py` from the files of `./scripts/campaign.sh"
             f"{'' if scale == 'cpu' else ' --scale ' + scale}` (scale `{scale}`). Deltas are test-accuracy points "
             "(x100), paired by seed. Every interval is labelled with its level: a compare stage's are at its last "
             "look's level (1 - that look's nominal threshold: the repeated confidence interval of the "
             "group-sequential design), the ablations' at 95%. p is Holm-corrected within each family of the "
             "stage's declared plan, and the verdict uses that corrected p, while each interval is the contrast's "
             "own (uncorrected), so an interval that just excludes 0 can still be inconclusive; mde is the "
             "smallest delta those seeds detect with power 0.8 after the correction. `inconclusive` means no "
             "difference was shown: the true difference may still be anywhere in the interval. The headline "
             "judges both data sets' primary contrasts as one family (below).", "",
             f"What this scale can and cannot show: {what}.", "",
             "## In short", "", *summary_lines(out, datasets), "", *_hierarchical_lines(hierarchical)]
    for ds in datasets:
        lines += [f"## {ds}", ""]
        for stage, title in STAGE_TITLES.items():
            folder = out / ds / stage
            if not folder.is_dir():
                continue
            level = stage_level(out, ds, stage)
            label = "level not recorded" if level is None else level_label(level)
            body = {"compare": _compare_lines, "attribution": _attribution_lines, "dose": _dose_lines}[stage](
                folder, label)
            body += ["", *_bayes_lines(folder), *_secondary_lines(folder, label)]
            lines += [f"### {title}", "", f"Report: [{ds}/{stage}/report.md]({ds}/{stage}/report.md)", "",
                      *body, ""]
    return lines + ["## Stage times", "", *_times(out), ""]


def replace_block(text: str, block: list[str], *, where: str = "README.md") -> str:
    """``text`` with everything between the BEGIN and END marker lines replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise SpecError([f"{where} needs one {BEGIN} line and one {END} line after it around the findings' summary; "
                         "fix: put them back where the summary goes"])
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + BEGIN + "\n" + "\n".join(block).strip("\n") + "\n" + END + tail


def readme_block(out: Path, datasets: list[str], *, link: str, scale: str) -> list[str]:
    """The README's summary: the same sentences as the page's "In short", generated, with where they come from."""
    return [f"<!-- generated by scripts/findings.py from {link}; edit the generator, not this block -->",
            f"**What it found** (scale `{scale}`; every number from the CSVs in [{link}]({link}/README.md)):", "",
            *summary_lines(out, datasets)]


def write_findings(out: Path, *, scale: str, what: str, summary_into: Path | None = None) -> Path:
    """Write <out>/README.md from the CSVs under ``out`` (a file the campaign owns) and, with ``summary_into``
    (the repository's README.md), its summary between the marker comments there; returns the page's path."""
    out = Path(out)
    datasets = sorted(p.name for p in out.iterdir() if p.is_dir()) if out.is_dir() else []
    if summary_into is not None:  # checked before anything is written: the markers must be there
        summary_into = Path(summary_into)
        text = summary_into.read_text()
        link = Path(out.resolve()).relative_to(summary_into.resolve().parent).as_posix() \
            if out.resolve().is_relative_to(summary_into.resolve().parent) else str(out)
        updated = replace_block(text, readme_block(out, datasets, link=link, scale=scale), where=str(summary_into))
    hierarchical = hierarchical_rows(out, datasets)
    if hierarchical is not None:  # committed, so every probability the page states traces to a CSV
        hierarchical = hierarchical.round(4)
        write_owned(out, "hierarchical.csv", hierarchical.to_csv(index=False))
    path = write_owned(out, "README.md", "\n".join(page_lines(out, scale=scale, what=what,
                                                               hierarchical=hierarchical)))
    if summary_into is not None:
        write_text_atomic(summary_into, updated)
    return path


def main(argv: list[str] | None = None) -> int:
    from campaign import SCALES

    p = argparse.ArgumentParser(description="Write the campaign's findings page and the README's summary from "
                                "the CSVs of a findings folder.")
    p.add_argument("out", type=Path, help="the findings folder, e.g. docs/findings")
    p.add_argument("--readme", type=Path, help="also replace the summary between the findings markers of this "
                   "file (README.md)")
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu", help="the scale the folder was run at")
    a = p.parse_args(argv)
    try:
        print(write_findings(a.out, scale=a.scale, what=SCALES[a.scale].what, summary_into=a.readme))
    except (SpecError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
