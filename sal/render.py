"""Text of the report: Markdown, self-contained HTML (figures embedded) and a LaTeX table."""

from __future__ import annotations

import html
import math

import pandas as pd

from .compare import ReportOptions

__all__ = ["render_markdown", "render_html", "render_latex", "table_frame"]

_SHOWN = ["dataset", "context", "method", "n", "mean", "ci", "delta", "delta_ci", "p_ttest", "p_holm", "p_wilcoxon",
          "effect_dz", "cliffs_delta", "win_rate", "mde", "verdict"]


def _num(v: float, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.{digits}f}"


def _p(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return "<0.0001" if v < 1e-4 else f"{v:.4f}"


def table_frame(summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The columns a reader scans first, formatted, for one metric."""
    s = summary[summary["metric"] == metric]
    out = pd.DataFrame({
        "dataset": s["dataset"], "context": s["context"], "method": s["method"], "n": s["n"].astype(int),
        "mean": s["mean"].map(_num), "ci": [f"[{_num(a)}, {_num(b)}]" for a, b in zip(s["ci_low"], s["ci_high"])],
        "delta": s["delta"].map(lambda v: "" if math.isnan(v) else f"{v:+.4f}"),
        "delta_ci": ["" if math.isnan(a) else f"[{a:+.4f}, {b:+.4f}]" for a, b in zip(s["delta_ci_low"],
                                                                                      s["delta_ci_high"])],
        "p_ttest": s["p_ttest"].map(_p), "p_holm": s["p_holm"].map(_p), "p_wilcoxon": s["p_wilcoxon"].map(_p),
        "effect_dz": s["effect_dz"].map(lambda v: _num(v, 2)),
        "cliffs_delta": s["cliffs_delta"].map(lambda v: _num(v, 2)),
        "win_rate": s["win_rate"].map(lambda v: _num(v, 2)), "mde": s["mde"].map(_num), "verdict": s["verdict"],
    })
    if "paper" in s:
        out.insert(5, "paper (1 run)", s["paper"].map(_num))
    if (out["context"] == "").all():
        out = out.drop(columns="context")
    return out


def _md_table(df: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _setup_lines(name, opts: ReportOptions, n_runs, families, uri) -> list[str]:
    fam = ", ".join(f"{k} (m={m})" for k, m in families.items())
    return [
        f"- ablation `{name}`: {n_runs} runs read from `{uri}`; baseline **{opts.baseline}**",
        f"- metrics: {', '.join(opts.metrics)}; pairs are matched on seed (same init, same batches)",
        f"- family for multiplicity: {opts.family} -> {fam}; correction: {opts.correction}; alpha = {opts.alpha}",
        f"- ROPE for accuracies: +-{opts.rope} ({opts.rope * 100:g} points); intervals are 95% t-intervals "
        f"(bootstrap BCa as a check in summary.csv, seeded {opts.random_state})",
        "- verdict: better/worse = Holm-adjusted paired t-test p < alpha and the delta CI excludes 0; equivalent ="
        " the delta CI inside the ROPE; otherwise inconclusive. effect_dz = mean(d)/sd(d) (Cohen's d_z); "
        "mde = smallest delta detectable at power 0.8 with these seeds and alpha/m.",
    ]


def _cross_lines(cross: dict) -> list[str]:
    lines = []
    for metric, c in cross.items():
        lines.append(f"### Across {c['n_sets']} data sets: {metric}")
        for method, d in c["deltas"].items():
            p = "" if math.isnan(d["p_wilcoxon"]) else f", Wilcoxon over sets p = {d['p_wilcoxon']:.3g}"
            caveat = "" if d["can_reject"] else " (fewer than 6 sets: the Wilcoxon test cannot reject)"
            lines.append(f"- {method}: mean normalised delta {d['norm_delta']:+.4f} "
                         f"[{d['ci_low']:+.4f}, {d['ci_high']:+.4f}] (stratified bootstrap){p}{caveat}")
        for method, q in c["iqm"].items():
            lines.append(f"- IQM {method}: {q['iqm']:.4f} [{q['ci_low']:.4f}, {q['ci_high']:.4f}]")
        if "friedman" in c:
            f = c["friedman"]
            lines.append(f"- Friedman chi2 = {f['chi2']:.3f}, Iman-Davenport F = {f['ff']:.3f} (p = {f['p_ff']:.3g}),"
                         f" Nemenyi CD = {f['cd']:.3f}; average ranks: "
                         + ", ".join(f"{m} {r:.2f}" for m, r in f["avg_ranks"].items()))
        lines.append("")
    return lines


def render_markdown(*, name, summary, opts, notes, cross, figures, n_runs, families, uri) -> str:
    lines = [f"# Significance report: {name}", "", "## Setup", *_setup_lines(name, opts, n_runs, families, uri), ""]
    if notes:
        lines += ["## Warnings", *[f"- {n}" for n in notes], ""]
    for metric in opts.metrics:
        lines += [f"## {metric}", "", _md_table(table_frame(summary, metric)), ""]
    if cross:
        lines += ["## Across data sets", *_cross_lines(cross)]
    if figures:
        lines += ["## Figures", *[f"### {title}\n![{title}](figures/{f})\n" for title, f in figures.items()]]
    return "\n".join(lines) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td:first-child,td:nth-child(2),td:nth-child(3){text-align:left}
.better{color:#1f5fbf;font-weight:600}.worse{color:#c0392b;font-weight:600}.equivalent{color:#1e8449}
.warn{background:#fff4e0;border-left:4px solid #e69500;padding:.5em 1em}
img{max-width:100%;display:block;margin:1em 0}"""


def render_html(*, name, summary, opts, notes, cross, figures, images, n_runs, families, uri) -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(name)}: significance report</title>",
             f"<style>{_CSS}</style></head><body>", f"<h1>Significance report: {esc(name)}</h1>", "<h2>Setup</h2><ul>"]
    parts += [f"<li>{esc(line[2:])}</li>" for line in _setup_lines(name, opts, n_runs, families, uri)]
    parts.append("</ul>")
    if notes:
        items = "".join(f"<li>{esc(n)}</li>" for n in notes)
        parts.append(f"<div class='warn'><b>Warnings</b><ul>{items}</ul></div>")
    for metric in opts.metrics:
        table = table_frame(summary, metric)
        rows = "".join("<tr>" + "".join(f"<td class='{esc(str(v))}'>{esc(str(v))}</td>" for v in r) + "</tr>"
                       for r in table.itertuples(index=False))
        head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
        parts.append(f"<h2>{esc(metric)}</h2><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    if cross:
        parts.append("<h2>Across data sets</h2>")
        parts += [f"<p>{esc(line)}</p>" for line in _cross_lines(cross) if line]
    if figures:
        parts.append("<h2>Figures</h2>")
        for title, f in figures.items():
            # onload marks a decoded image, so a browser test can check that every figure rendered
            parts.append(f"<h3>{esc(title)}</h3><img alt='{esc(title)}' src='data:image/png;base64,{images[f]}' "
                         "onload=\"this.dataset.loaded='1'\">")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_latex(summary: pd.DataFrame, opts: ReportOptions) -> str:
    """One booktabs table per metric: mean +- sd, delta with its CI, Holm p, d_z, verdict."""
    out = []
    for metric in opts.metrics:
        s = summary[summary["metric"] == metric]
        out += [f"% {metric}; baseline {opts.baseline}; {opts.correction} over family '{opts.family}'",
                "\\begin{tabular}{lllrlrlrl}", "\\toprule",
                "Data set & Context & Method & $n$ & Mean $\\pm$ SD & $\\Delta$ & 95\\% CI of $\\Delta$ & "
                "$p_\\mathrm{Holm}$ & Verdict \\\\", "\\midrule"]
        for _, r in s.iterrows():
            delta = "" if math.isnan(r["delta"]) else f"{r['delta']:+.4f}"
            ci = "" if math.isnan(r["delta_ci_low"]) else f"[{r['delta_ci_low']:+.4f}, {r['delta_ci_high']:+.4f}]"
            p = "" if math.isnan(r["p_holm"]) else f"{r['p_holm']:.4f}"
            cells = [r["dataset"], r["context"], r["method"], str(int(r["n"])),
                     f"{r['mean']:.4f} $\\pm$ {0 if math.isnan(r['sd']) else r['sd']:.4f}", delta, ci, p, r["verdict"]]
            out.append(" & ".join(str(c).replace("_", "\\_") for c in cells) + " \\\\")
        out += ["\\bottomrule", "\\end{tabular}", ""]
    return "\n".join(out)
