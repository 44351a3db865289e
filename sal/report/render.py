"""Text of the report: one document (``report_document``, a list of blocks) rendered as Markdown and as
self-contained HTML (figures embedded), and the summary as a LaTeX table (pandas' Styler)."""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pandas as pd

from ..metrics.scoring import worst_value
from ..stats.factorial import factorial_sentence
from ..stats.hierarchical import PRIOR_DOMINATED_BELOW, SIGMA0_BOUND
from ..stats.summary import ReportOptions

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

__all__ = ["Section", "report_document", "to_markdown", "to_html", "render_latex", "table_frame", "factorial_frame",
           "format_p", "hierarchical_sentence"]


@dataclass
class Section:
    """An extra part of a report (e.g. `sal compare`'s protocol): text, tables and figures."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)  # (caption, table)
    figures: dict[str, plt.Figure] = field(default_factory=dict)  # title -> figure
    data: dict[str, pd.DataFrame] = field(default_factory=dict)  # file name -> the unformatted rows, as CSV

def _num(v: float, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}"


def format_p(v: float) -> str:
    """The report's one p-value format: four decimals, "<0.0001" below, empty for none."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return "<0.0001" if v < 1e-4 else f"{v:.4f}"


def _signed(v: float) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.4f}"


def _verdict_label(verdict: str, exploratory) -> str:
    return f"{verdict} (exploratory)" if exploratory is True and verdict != "reference" else verdict


def table_frame(summary: pd.DataFrame, metric: str, correction: str = "holm") -> pd.DataFrame:
    """The columns a reader scans first, formatted, for one metric: one row per contrast, then the
    cells that are only references. Adjusted p-values are named after their correction (p_holm, p_bh)."""
    s = summary[summary["metric"] == metric]
    out = pd.DataFrame({
        "dataset": s["dataset"], "context": s["context"], "family": s["family"].fillna(""),
        "method": s["method"], "vs": s["baseline"].fillna(""), "n": s["n"].astype(int),
        "diverged": s["n_diverged"].fillna(0).astype(int),
        "mean": s["mean"].map(_num), "ci": [f"[{_num(a)}, {_num(b)}]" if a == a else "" for a, b in
                                            zip(s["ci_low"], s["ci_high"])],
        "delta": s["delta"].map(_signed),
        "delta_ci": ["" if math.isnan(a) else f"[{a:+.4f}, {b:+.4f}]" for a, b in zip(s["delta_ci_low"],
                                                                                      s["delta_ci_high"])],
        "p_ttest": s["p_ttest"].map(format_p), f"p_{correction}": s["p_adj"].map(format_p),
        f"p_signflip_{correction}": s["p_signflip_adj"].map(format_p),
        "effect_dz": s["effect_dz"].map(lambda v: _num(v, 2)),
        "cliffs_delta": s["cliffs_delta"].map(lambda v: _num(v, 2)),
        "win_rate": s["win_rate"].map(lambda v: _num(v, 2)), "mde": s["mde"].map(_num),
        # the Bayesian correlated t-test's P(worse) / P(within the ROPE) / P(better)
        "bayes w/r/b": ["" if w != w else f"{w:.2f}/{r:.2f}/{b:.2f}"
                        for w, r, b in zip(s["bayes_p_worse"], s["bayes_p_rope"], s["bayes_p_better"])],
        "verdict": [_verdict_label(v, e) for v, e in zip(s["verdict"], s["exploratory"])],
    })
    if "paper" in s:
        out.insert(7, "paper (1 run)", s["paper"].map(_num))
    if (out["context"] == "").all():
        out = out.drop(columns="context")
    return out


def factorial_frame(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    t = table[table["metric"] == metric]
    correction = t["correction"].iloc[0] if "correction" in t and len(t) else "holm"
    out = pd.DataFrame({
        "dataset": t["dataset"], "context": t["context"], "effect": t["effect"], "n": t["n"].astype(int),
        "estimate": t["estimate"].map(lambda v: f"{v:+.4f}"),
        "ci": ["" if math.isnan(a) else f"[{a:+.4f}, {b:+.4f}]" for a, b in zip(t["ci_low"], t["ci_high"])],
        "p_ttest": t["p_ttest"].map(format_p), f"p_{correction}": t["p_adj"].map(format_p),
        f"p_signflip_{correction}": t["p_signflip_adj"].map(format_p),
        "verdict": [_verdict_label(v, n <= 5) for v, n in zip(t["verdict"], t["n"])],
    })
    if "scale" in t and (t["scale"] == "ranks").any():  # rank-based rows (a diverged seed) say so in the table
        out.insert(3, "scale", t["scale"])
    return out


def interventions_frame(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "cell": table["cell"], "dataset": table["dataset"], "method": table["method"], "seeds": table["seeds"],
        "noise / seed": table["noise_per_seed"].map(lambda v: f"{v:.1f}"),
        "deform / seed": table["deform_per_seed"].map(lambda v: f"{v:.1f}"),
        "revert / seed": table["revert_per_seed"].map(lambda v: f"{v:.1f}"),
        "seeds with none": table["idle_seeds"],
    })


_CORRECTION = {"holm": "Holm", "bh": "Benjamini-Hochberg"}


def _setup_lines(name, opts: ReportOptions, n_runs, families, uri, departures) -> list[str]:
    """The Setup list: what was read, the plan, the families, the correction and the verdict rules."""
    plan = opts.plan
    fam = ", ".join(f"{k} (m={m})" for k, m in families.items())
    correction = _CORRECTION[opts.correction]
    if plan.source == "legacy":
        status = "no analysis plan was stored with this ablation (launched before plans existed): every cell " \
                 f"is compared with {opts.reference!r}" + ("; departures: " + "; ".join(departures) if departures
                                                           else "")
    elif departures:
        status = f"departs from the plan (hash {plan.hash}, {plan.source}): " + "; ".join(departures)
    else:
        status = f"as planned (plan hash {plan.hash}, {plan.source})"
    treatment = f"; treatment **{plan.treatment}**" if plan.treatment else ""
    return [
        f"ablation `{name}`: {n_runs} runs read from `{uri}`{treatment}",
        f"analysis: {status}",
        f"metrics: {', '.join(opts.metrics)}; pairs are matched on seed (same init, same batches); only finished "
        "runs are results, and a diverged seed counts with the metric's worst score "
        f"({'; '.join(_worst_words(m) for m in opts.metrics)})",
        f"families for multiplicity ({opts.family}): {fam}; correction: {correction} (column "
        f"p_{opts.correction}), within each family across data sets and contexts, every declared contrast "
        f"counted; alpha = {opts.alpha}",
        f"ROPE used for accuracies: +-{opts.rope:g} ({opts.rope * 100:g} points); intervals are "
        f"{opts.level * 100:g}% t-intervals, clipped to the range of the metric (bootstrap BCa as a check in "
        f"summary.csv, seeded {opts.random_state})",
        f"verdict, first rule that holds: equivalent = the delta CI inside the ROPE (with no spread: the delta "
        f"itself); better/worse = the {correction}-adjusted paired t-test p < alpha and the whole CI beyond the "
        "ROPE (excluding 0 where there is no ROPE; with fewer than 10 seeds the adjusted exact sign-flip p too; "
        "with no spread in the differences or an infinite one, the sign-flip or sign test, with the delta at "
        "least the ROPE); else inconclusive. effect_dz = mean(d)/sd(d) "
        "(Cohen's d_z, the sign of delta); mde = smallest delta detectable at power 0.8 with these seeds and "
        "alpha/m; win rate (ties half), Cliff's delta and P(A>B) read 'higher favours the method' for every "
        "metric (a lower loss is a win). Rules: docs/statistics.md.",
    ]


def _worst_words(metric: str) -> str:
    worst = worst_value(metric)
    return f"{metric}: {worst:g}" if math.isfinite(worst) else f"{metric}: {'+' if worst > 0 else '-'}inf"


def _cross_blocks(cross: dict) -> list[Block]:
    blocks: list[Block] = []
    for metric, c in cross.items():
        lines: list[str] = []
        for method, d in c["deltas"].items():
            p = "" if math.isnan(d["p_wilcoxon"]) else f", Wilcoxon over sets p = {d['p_wilcoxon']:.3g}"
            caveat = "" if d["can_reject"] else " (fewer than 6 sets: the Wilcoxon test cannot reject)"
            lines.append(f"{method}: mean normalised delta {d['norm_delta']:+.4f} "
                         f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] (stratified bootstrap){p}{caveat}; scores "
                         "normalised per data set, 1 = its best run, 0 = its worst (runs that did not diverge), "
                         "a diverged seed 0")
        table = c.get("hierarchical_table")
        if table is not None:
            lines += [hierarchical_sentence(contrast, rows) for contrast, rows in table.groupby("contrast", sort=False)]
        for method, q in c["iqm"].items():
            lines.append(f"IQM {method}: {q['iqm']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]")
        if "friedman" in c:
            f = c["friedman"]
            lines.append(f"Friedman chi2 = {f['chi2']:.3f}, Iman-Davenport F = {f['ff']:.3f} (p = {f['p_ff']:.3g}),"
                         f" Nemenyi CD = {f['cd']:.3f}; average ranks: "
                         + ", ".join(f"{m} {r:.2f}" for m, r in f["avg_ranks"].items()))
        blocks += [Heading(3, f"Across {c['n_sets']} data sets: {metric}"), Items(lines)]
    return blocks


def hierarchical_sentence(contrast: str, rows: pd.DataFrame) -> str:
    """One contrast's rows of sal.stats.summary.hierarchical_table in words (the report's and the findings'
    sentence): the hierarchical model's two answers, each with its Monte Carlo error; with fewer data sets than
    PRIOR_DOMINATED_BELOW, the answer at each bound on sigma_0 instead, and no posterior presented as evidence."""
    head = (f"{contrast}, Bayesian hierarchical model across {int(rows['n_sets'].iloc[0])} data sets "
            "(docs/statistics.md, \"Second opinions\"): ")
    if rows["prior_dominated"].iloc[0]:
        at = "; ".join(f"{r.p_worse:.2f} / {r.p_rope:.2f} / {r.p_better:.2f} at {r.sigma0_bound:g}"
                       for r in rows.sort_values("sigma0_bound").itertuples())
        se = rows[["p_worse_se", "p_rope_se", "p_better_se"]].to_numpy().max()
        return (head + f"not evidence: with fewer than {PRIOR_DOMINATED_BELOW} data sets the answer is the prior's "
                "bound on the spread between data sets (sigma_0, in the seeds' sd). P(worse) / P(within the ROPE) / "
                f"P(better) on a new data set at each bound: {at} (Monte Carlo error at most {se:.3f})")
    r = rows[rows["sigma0_bound"] == SIGMA0_BOUND].iloc[0]
    return (head + f"a new data set of this kind is worse with probability {r.p_worse:.2f} ± {r.p_worse_se:.3f}, "
            f"within the ROPE {r.p_rope:.2f} ± {r.p_rope_se:.3f}, better {r.p_better:.2f} ± {r.p_better_se:.3f} "
            f"(posterior mean of the predictive); worse is the most probable outcome in {r.share_worse:.3f} "
            f"± {r.share_worse_se:.3f} of the posterior draws, within the ROPE in {r.share_rope:.3f} ± "
            f"{r.share_rope_se:.3f}, better in {r.share_better:.3f} ± {r.share_better_se:.3f} (the share of draws, "
            "baycomp's and IDSIA's number; ± one Monte Carlo standard error)")


def _factorial_intro(factorial: pd.DataFrame) -> str:
    cells = factorial["cells"].iloc[0].split("/")
    yoked = (f"; the trigger effect is {cells[3]} minus {cells[4]}, a yoked control with as many interventions as "
             f"{cells[3]}'s run of the same seed at random epochs") if len(cells) > 4 else ""
    effects = factorial["effect"].nunique()
    return (f"The 2x2 factorial of the cells {cells[0]} (neither part), {cells[1]} (noise), {cells[2]} "
            f"(deformation) and {cells[3]} (both){yoked}, paired by seed; "
            f"{_CORRECTION.get(factorial['correction'].iloc[0], 'Holm') if 'correction' in factorial else 'Holm'} "
            f"across the {effects} effects and data sets.")


# ------------------------------------------------------------------ one document, two formats


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str
    bold: bool = False


@dataclass
class Items:
    items: list[str]
    warning: bool = False  # drawn as a warning box in HTML


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""


@dataclass
class Figure:
    title: str
    file: str  # under figures/


Block = Heading | Para | Items | Table | Figure


def report_document(*, name, summary, opts, notes, cross, figures, n_runs, families, uri, departures, factorial,
                    interventions, sections=()) -> list[Block]:
    """The report once, as blocks; report.md and report.html are two renderings of this list."""
    doc: list[Block] = [Heading(1, f"Significance report: {name}"), Heading(2, "Setup"),
                        Items(_setup_lines(name, opts, n_runs, families, uri, departures))]
    if notes:
        doc += [Heading(2, "Warnings"), Items(list(notes), warning=True)]
    for metric in opts.metrics:
        doc += [Heading(2, metric), Table(table_frame(summary, metric, opts.correction))]
        if not factorial.empty and metric in set(factorial["metric"]):
            doc += [Heading(3, f"Which part of SAL matters ({metric})"), Para(_factorial_intro(factorial)),
                    Table(factorial_frame(factorial, metric)), Para(factorial_sentence(factorial, metric), bold=True)]
    if not interventions.empty:
        doc += [Heading(2, "Interventions per stress-aware cell"), Table(interventions_frame(interventions))]
    if cross:
        doc += [Heading(2, "Across data sets"), *_cross_blocks(cross)]
    for section, files in sections:
        doc += [Heading(2, section.title), *[Para(p) for p in section.paragraphs],
                *[Table(table, caption) for caption, table in section.tables],
                *[Figure(title, f) for title, f in files.items()]]
    if figures:
        doc += [Heading(2, "Figures"), *[Figure(title, f) for title, f in figures.items()]]
    return doc


def _md_table(df: pd.DataFrame) -> str:
    # Not DataFrame.to_markdown: it needs tabulate and pads every cell to its column's width, so a row can
    # no longer be found by its text ("| sal | 3 |").
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def to_markdown(doc: list[Block]) -> str:
    out = []
    for b in doc:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(f"**{b.text}**" if b.bold else b.text)
        elif isinstance(b, Items):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            out.append((f"**{b.caption}**\n\n" if b.caption else "") + _md_table(b.frame))
        else:
            out.append(f"### {b.title}\n\n![{b.title}](figures/{b.file})")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
.better{color:#1f5fbf;font-weight:600}.worse{color:#c0392b;font-weight:600}.equivalent{color:#1e8449}
.warn{background:#fff4e0;border-left:4px solid #e69500;padding:.5em 1em}
img{max-width:100%;display:block;margin:1em 0}"""


def _inline(text: str) -> str:
    """Escaped text with the report's two inline marks, **bold** and `code`, as HTML."""
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


_VERDICT_CLASSES = ("better", "worse", "equivalent")  # coloured by _CSS


def _html_table(df: pd.DataFrame, key: str) -> str:
    """pandas' Styler, cells escaped; a verdict cell carries its verdict as a class (its colour in _CSS)."""
    classes = df.astype(str).map(lambda v: v.split(" ")[0] if v.split(" ")[0] in _VERDICT_CLASSES else "")
    # the key keeps the ids Styler writes unique across the tables of one page
    styler = df.style.hide(axis="index").format(escape="html").set_td_classes(classes).set_uuid(key)
    return styler.to_html(cell_ids=False)


def _img(title: str, data: str) -> str:
    # onload marks a decoded image, so a browser test can check that every figure rendered
    return (f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{data}' "
            "onload=\"this.dataset.loaded='1'\">")


def to_html(doc: list[Block], *, images: dict[str, str]) -> str:
    """Self-contained HTML: ``images`` maps each figure's file to its PNG, base64-encoded."""
    title = next((b.text for b in doc if isinstance(b, Heading) and b.level == 1), "report")
    tables = 0
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_CSS}</style></head><body>"]
    for b in doc:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            parts.append(f"<p><b>{_inline(b.text)}</b></p>" if b.bold else f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Items):
            items = "".join(f"<li>{_inline(item)}</li>" for item in b.items)
            parts.append(f"<div class='warn'><ul>{items}</ul></div>" if b.warning else f"<ul>{items}</ul>")
        elif isinstance(b, Table):
            tables += 1
            caption = f"<p><b>{_inline(b.caption)}</b></p>" if b.caption else ""
            parts.append(caption + _html_table(b.frame, f"t{tables}"))
        else:
            parts.append(_img(b.title, images[b.file]))
    parts.append("</body></html>")
    return "\n".join(parts)


def render_latex(summary: pd.DataFrame, opts: ReportOptions) -> str:
    """One booktabs table per metric (pandas' Styler, cells escaped for LaTeX): mean +- sd, delta with its
    CI, corrected p, verdict."""
    out = []
    correction = _CORRECTION[opts.correction]
    for metric in opts.metrics:
        s = summary[summary["metric"] == metric]
        table = pd.DataFrame({
            "Data set": s["dataset"], "Context": s["context"], "Method": s["method"],
            "vs": [b if isinstance(b, str) else "" for b in s["baseline"]], "$n$": s["n"].astype(int).astype(str),
            # one seed has no SD: none is printed
            "Mean $\\pm$ SD": [f"{m:.4f}" + ("" if math.isnan(sd) else f" ± {sd:.4f}")
                                for m, sd in zip(s["mean"], s["sd"])],
            "$\\Delta$": s["delta"].map(_signed),
            f"{opts.level * 100:g}\\% CI of $\\Delta$": ["" if math.isnan(a) else f"[{a:+.4f}, {b:+.4f}]"
                                                      for a, b in zip(s["delta_ci_low"], s["delta_ci_high"])],
            f"$p_\\mathrm{{{correction}}}$": s["p_adj"].map(_num),
            "Verdict": [_verdict_label(v, e) for v, e in zip(s["verdict"], s["exploratory"])],
        })
        latex = (table.style.hide(axis="index").format(escape="latex")
                 .to_latex(column_format="llllrlrlrl", hrules=True))
        out += [f"% {metric}; {correction} within each family ({opts.family}); plan {opts.plan.hash}",
                latex.replace(" ± ", " $\\pm$ ")]
    return "\n".join(out)
