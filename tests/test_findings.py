"""The campaign's findings (scripts/findings.py): every number in docs/findings/README.md and in README.md's
generated summary traces to a committed CSV under docs/findings, and the headline is the campaign's family
(docs/statistics.md, "The campaign's family"), recomputed here from the per-seed CSVs with scipy and numpy
(not with the generator's code)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
FINDINGS = REPO / "docs" / "findings"
sys.path.insert(0, str(REPO / "scripts"))
from findings import BEGIN, END, _never_acted, replace_block  # noqa: E402

DATASETS = ("digits", "mnist1d")
NUMBER = re.compile(r"(?<![\w.+-])[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?(?![\w])")


def _block() -> str:
    text = (REPO / "README.md").read_text()
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def _holm(p: np.ndarray) -> np.ndarray:
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1, np.maximum.accumulate(p[order] * (len(p) - np.arange(len(p)))))
    out = np.empty(len(p))
    out[order] = adjusted
    return out


def _t_interval(d: np.ndarray, level: float) -> tuple[float, float]:
    half = stats.t.ppf((1 + level) / 2, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return d.mean() - half, d.mean() + half


def _family() -> list[dict]:
    """The campaign's family from the committed per-seed CSVs: Holm over every data set's primary contrasts at
    each look, each p against the look's threshold; a contrast is decided at its first deciding look."""
    designs = {ds: pd.read_csv(FINDINGS / ds / "compare_design.csv") for ds in DATASETS}
    seeds = {ds: pd.read_csv(FINDINGS / ds / "compare_seeds.csv").pivot(index="seed", columns="cell",
                                                                          values="test_acc") for ds in DATASETS}
    plans = {ds: pd.read_csv(FINDINGS / ds / "compare" / "summary.csv") for ds in DATASETS}
    contrasts = [(ds, r.method, r.baseline, r.rope) for ds in DATASETS for r in plans[ds].itertuples()
                 if r.verdict != "reference" and r.metric == "test/acc"]
    assert len(contrasts) == 6
    decided: dict[tuple, dict] = {}
    for k in range(len(designs[DATASETS[0]])):
        threshold = designs[DATASETS[0]]["threshold"].iloc[k]
        assert all(d["threshold"].iloc[k] == threshold for d in designs.values())
        diffs = [seeds[ds].loc[[int(s) for s in designs[ds]["seeds"].iloc[k].split()]].eval(f"{m} - {b}").to_numpy()
                 for ds, m, b, _ in contrasts]
        # no spread (every seed the same difference): no t-test, p = 1 in the family, the difference known exactly
        p = _holm(np.array([1.0 if d.std() == 0 else stats.ttest_1samp(d, 0).pvalue for d in diffs]))
        for c, d, ph in zip(contrasts, diffs, p):
            low, high = _t_interval(d, 1 - threshold) if d.std() > 0 else (math.nan, math.nan)
            rope = c[3]
            if d.std() == 0:  # docs/statistics.md, "The verdict": within the ROPE it is equivalent
                verdict = "equivalent" if abs(d.mean()) < rope else "inconclusive"
            else:  # equivalent inside the ROPE; better/worse: significant and the whole interval beyond the ROPE
                verdict = ("equivalent" if -rope < low and high < rope else
                           ("worse" if high <= -rope else "better") if ph < threshold and (high <= -rope or low >= rope)
                           else "inconclusive")
            if c not in decided or decided[c]["verdict"] == "inconclusive":
                decided[c] = {"look": k + 1, "n": len(d), "p_holm": ph, "threshold": threshold, "low": low,
                              "high": high, "level": 1 - threshold, "verdict": verdict}
    out = []
    for (ds, m, b, _), r in decided.items():
        d = seeds[ds].eval(f"{m} - {b}").to_numpy()
        low, high = _t_interval(d, 0.95) if d.std() > 0 else (math.nan, math.nan)
        out.append({**r, "dataset": ds, "contrast": f"{m} vs {b}", "n_all": len(d), "delta": d.mean(),
                    "low95": low, "high95": high})
    return out


def _pts(v: float) -> str:
    return f"{100 * v:+.2f}"


def _interval(low: float, high: float) -> str:
    return "no interval" if math.isnan(low) else f"[{_pts(low)}, {_pts(high)}]"


def test_the_headline_is_the_campaigns_family_recomputed_from_the_per_seed_csvs():
    block = _block()
    rows = {tuple(cells[:2]): cells for cells in ([c.strip() for c in line.strip("|").split("|")]
                                                   for line in block.splitlines() if line.startswith("| ")
                                                   and line.count("|") == 12) if cells[0] in DATASETS}
    family = _family()
    assert len(rows) == len(family) == 6
    for r in family:
        cells = rows[(r["dataset"], r["contrast"])]
        assert cells[2] == str(r["n_all"]) and cells[3] == _pts(r["delta"])[:-3] + _pts(r["delta"])[-3:]
        assert cells[4] == _interval(r["low95"], r["high95"])  # the 95% interval, labelled 95%
        assert cells[5] == f"{r['look']} ({r['n']})"
        assert cells[6] == f"{_interval(r['low'], r['high'])} ({100 * r['level']:.2f}%)"  # its own level
        assert cells[7] == f"{r['p_holm']:.2g}" and cells[8] == f"{r['threshold']:.3g}"
        assert cells[9] == r["verdict"]
    # the headline names exactly the contrasts the family decides (not those a data set alone decides)
    said = {"better": "better than", "worse": "worse than", "equivalent": "equivalent to"}
    decided = [f"{said[r['verdict']]} {r['contrast'].split(' vs ')[1]} on {r['dataset']}" for r in family
               if r["verdict"] != "inconclusive"]
    head = re.search(r"\*\*(SAL [^*]+)\*\*", block).group(1)
    assert head == ("SAL is " + "; ".join(decided) + "; no other contrast is decided." if decided else
                    "SAL is not shown to differ from any baseline on any data set.")


def test_every_decided_secondary_contrast_is_stated_and_no_false_no_effect_sentence():
    block = _block()
    for ds in DATASETS:
        for name in ("robustness.csv", "per_class_f1.csv"):
            frame = pd.read_csv(FINDINGS / ds / "compare" / name)
            for r in frame[frame["verdict"].isin(["better", "worse"])].itertuples():
                label = r.context if name == "per_class_f1.csv" else r.metric.split("/")[2]
                assert re.search(rf"{ds} {r.method} vs {r.baseline} [^;]*\b{re.escape(label)}\b", block), (ds, label)
    assert "no class differs" not in block.lower() and "no contrast on the mean" not in block.lower()
    # SAL's events per seed that had one, counted from the committed per-epoch table (13 on 9 seeds is 1.44)
    for ds in DATASETS:
        epochs = pd.read_csv(FINDINGS / ds / "attribution_epochs.csv")
        per_seed = epochs[epochs["cell"] == "sal"].groupby("seed")["deform"].sum()
        acting = int((per_seed > 0).sum())
        if acting:
            n = int(per_seed.sum())
            assert f"{n} deformations on {acting} of {len(per_seed)} seeds ({n / acting:.2f}" in block


def _allowed() -> set[str]:
    """Every number the committed CSVs under docs/findings hold (and the design's levels), as the findings
    print them: raw, in points (x100), as a percentage change (log ratios), at the precisions used."""
    values: list[float] = [95, 0.8, 100, 2017, 2019]  # the 95% level, power 0.8, x100, the cited papers' years
    for path in FINDINGS.rglob("*.csv"):
        frame = pd.read_csv(path)
        values += [len(frame), *frame.nunique().tolist()]
        for col in frame:
            numeric = pd.to_numeric(frame[col], errors="coerce")
            values += numeric.dropna().tolist()
            for text in frame[col].dropna().astype(str):
                values += [float(t) for t in re.findall(r"\d+(?:\.\d+)?(?:e-?\d+)?", text)]  # class 5, noise_2e-7
        if path.name.endswith("_epochs.csv"):  # SAL's events per seed that had one
            for flag in ("deform", "revert", "noise"):
                per_seed = frame.groupby(["cell", "seed"])[flag].sum()
                counts = per_seed.groupby("cell").agg(["sum", lambda v: (v > 0).sum()])
                values += [c for row in counts.itertuples(index=False) for c in (row[0], row[1])
                           ] + [row[0] / row[1] for row in counts.itertuples(index=False) if row[1]]
        if path.name == "compare_design.csv":
            values += (100 * (1 - frame["threshold"])).tolist()
    values += [r[key] for r in _family() for key in ("look", "n", "p_holm", "delta", "low95", "high95", "low", "high")]
    out = set()
    for v in values:
        if not math.isfinite(v):
            continue
        forms = {f"{v:g}", f"{v:.0f}", f"{v:.1f}", f"{v:.2f}", f"{v:.3g}", f"{v:.2g}", f"{v:.4g}", f"{v:.4f}",
                 f"{100 * v:.2f}", f"{100 * v:+.2f}", f"{100 * v:g}", f"{v:+.3g}", f"{100 * v:.0f}"}
        if abs(v) < 50:
            forms.add(f"{math.expm1(v) * 100:+.1f}")
        out |= forms | {f.lstrip("+") for f in forms}
    return out


def _numbers(text: str) -> list[str]:
    return NUMBER.findall(text)


@pytest.mark.parametrize("where", ["README block", "findings page"])
def test_every_number_in_the_findings_traces_to_a_committed_csv(where):
    if where == "README block":
        left = _unexplained(_block())
        assert not left, f"numbers in README.md's findings block that no committed CSV explains: {left[:20]}"
        return
    else:  # the page, less the hierarchical model's posteriors (an MCMC of sal.stats.hierarchical, not a CSV)
        text = (FINDINGS / "README.md").read_text()
        start = text.index("Across the data sets (test accuracy")
        text = text[:start] + text[text.index("## ", start):]
        # the interventions table is the attribution report's (a committed file sal wrote, no CSV holds it);
        # its last column counts the seed ids the report lists
        acted = set()
        for ds in DATASETS:
            report = (FINDINGS / ds / "attribution" / "report.md").read_text()
            table = report.split("## Interventions per stress-aware cell")[1].split("## ")[0]
            acted |= set(_numbers(table))
            acted |= {str(len(row.split("|")[8].split(","))) for row in table.splitlines()
                      if row.startswith("| ") and row.split("|")[8].strip()}
        lines = text.splitlines()
        table = [i for i, line in enumerate(lines) if line.startswith("| cell | noise | deformations")]
        for i in table:
            for j in range(i + 2, len(lines)):
                if not lines[j].startswith("| "):
                    break
                assert set(_numbers(lines[j])) <= acted | {"0"}, lines[j]
                lines[j] = ""
        text = "\n".join(lines)
    allowed = _allowed()
    stray = [n for n in _numbers(text) if n.lstrip("+") not in allowed and n not in allowed]
    assert not stray, f"numbers in the {where} that no committed CSV holds: {stray[:20]}"


def _level(ds: str, n: int) -> str:
    design = pd.read_csv(FINDINGS / ds / "compare_design.csv")
    return f"{100 * (1 - design.loc[design['n_seeds'] == n, 'threshold'].iloc[0]):.2f}%"


def _unexplained(block: str) -> list[str]:
    """The numbers of README.md's block left once every statement recomputed from the CSVs is taken out of it."""
    family = _family()
    design = pd.read_csv(FINDINGS / DATASETS[0] / "compare_design.csv")
    spans = [", ".join(f"{t:.3g} at {n} seeds" for n, t in zip(design["n_seeds"], design["threshold"])),
             f"the {len(family)} primary contrasts of the {len(DATASETS)} data sets, Holm over all {len(family)}",
             "95%"]
    for r in family:
        spans.append(f"| {r['dataset']} | {r['contrast']} | {r['n_all']} | {_pts(r['delta'])} | "
                     f"{_interval(r['low95'], r['high95'])} | {r['look']} ({r['n']}) | "
                     f"{_interval(r['low'], r['high'])} ({100 * r['level']:.2f}%) | {r['p_holm']:.2g} | "
                     f"{r['threshold']:.3g} |")
    for ds in DATASETS:
        # a tuned SAL that never intervened: the compare report's interventions row lists every seed as idle
        n = int((pd.read_csv(FINDINGS / ds / "compare_seeds.csv")["cell"] == "sal").sum())
        report = (FINDINGS / ds / "compare" / "report.md").read_text()
        row = next((line for line in report.splitlines() if line.startswith("| sal | ")), "")
        if row and len([s for s in row.split("|")[8].split(",") if s.strip()]) == n:
            spans.append(f"never intervened on any of its {n} evaluation seeds")
        for name in ("robustness.csv", "per_class_f1.csv"):
            frame = pd.read_csv(FINDINGS / ds / "compare" / name)
            for r in frame[frame["verdict"].isin(["better", "worse"])].itertuples():
                spans.append(f"{r.verdict}, {_pts(r.delta)} points, {_level(ds, r.n)} CI "
                             f"[{_pts(r.delta_ci_low)}, {_pts(r.delta_ci_high)}], p (Holm) {r.p_adj:.2g}")
                if name == "per_class_f1.csv":
                    spans.append(r.context)
        factorial = pd.read_csv(FINDINGS / ds / "attribution" / "factorial.csv")
        spans.append(f"Holm across its {len(factorial)} effects")
        spans += [f"{r.effect} {_pts(r.estimate)} [{_pts(r.ci_low)}, {_pts(r.ci_high)}] ({r.verdict})"
                  for r in factorial.itertuples()]
        epochs = pd.read_csv(FINDINGS / ds / "attribution_epochs.csv")
        for kind, word in (("deform", "deformations"), ("revert", "reverts")):
            per_seed = epochs[epochs["cell"] == "sal"].groupby("seed")[kind].sum()
            n, acting = int(per_seed.sum()), int((per_seed > 0).sum())
            if acting:
                spans.append(f"{n} {word} on {acting} of {len(per_seed)} seeds ({n / acting:.2f} per seed")
        dose = pd.read_csv(FINDINGS / ds / "dose" / "summary.csv")
        spans += [f"{float(c.split('_')[1]):g}" for c in dose["method"] if c.startswith("noise_")]
    times = pd.read_csv(FINDINGS / "times.csv")
    spans += [f"took {seconds:.0f} s" for seconds in times.loc[times["dataset"] == "all", "seconds"]]
    for span in sorted(spans, key=len, reverse=True):
        block = block.replace(span, " ")
    return _numbers(block)


def test_a_number_of_a_discarded_run_is_caught():
    sentence = "\n- Tuned on the lcb, SAL beat Adam by +5.03 points [+3.61, +6.44] at lr 0.0059.\n"
    assert _unexplained(_block() + sentence) == ["+5.03", "+3.61", "+6.44", "0.0059"]
    # a wrong rate (the old README's "1.3 deformations each" for 13 on 9 seeds): the whole statement no longer traces
    said = re.search(r"(\d+) deformations on (\d+) of (\d+) seeds \((\d+\.\d\d) per seed", _block())
    wrong = _block().replace(said.group(0), said.group(0).replace(f"({said.group(4)} per", "(1.3 per"))
    assert _unexplained(wrong) == [said.group(1), said.group(2), said.group(3), "1.3"]


def test_the_never_acted_column_is_a_count_and_the_readme_block_is_replaced_between_its_markers():
    assert _never_acted("9") == "1 (seed 9)" and _never_acted("") == "0"
    assert _never_acted("1004,1006, 1007").startswith("3 (seeds ")
    text = f"intro\n{BEGIN}\nold claim\n{END}\noutro\n"
    assert replace_block(text, ["new"]) == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    with pytest.raises(ValueError, match="findings:begin"):
        replace_block("no markers", ["new"])
