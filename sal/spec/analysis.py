"""The analysis plan of an ablation, declared before the runs (docs/statistics.md): which pairs of
cells are compared (contrasts), how they are grouped for the multiplicity correction (families), on
which metrics and seeds, with which alpha, ROPE and correction.

The plan is resolved against the ablation's cells at every launch and stored with a hash on the queue, on
the MLflow experiment (every plan ever launched, by hash) and on every run, so a report can analyse the
plan in force (the one the runs were launched with) and list every later change as a departure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pydantic import Field, field_validator

from ..core.spec_base import Strict
from ..methods import names_with_role
from .config import SpecError

__all__ = ["AnalysisSpec", "Contrast", "Plan", "resolve_plan", "legacy_plan", "override_plan", "BASELINE_METHODS",
           "ABLATION_METHODS", "STANDARD_FAMILIES", "plan_changes"]

# The default family layout for SAL (docs/statistics.md), by the roles the method modules declare.
BASELINE_METHODS = names_with_role("base", "baseline")
ABLATION_METHODS = names_with_role("ablation")
STANDARD_FAMILIES = "standard"


class AnalysisSpec(Strict):
    """The ``analysis:`` block of an ablation YAML."""

    treatment: str = Field("sal", description="the cell every default contrast puts first")
    contrasts: list[tuple[str, str]] | None = Field(None, description="pairs [a, b]: a compared with b")
    families: dict[str, list[str | tuple[str, str]]] | Literal["standard"] | None = Field(
        None, description="name -> contrasts (a cell c means [treatment, c]); 'standard' = baselines + ablations")
    metrics: list[str] = Field(default_factory=lambda: ["test/acc"])
    alpha: float = Field(0.05, gt=0.0, lt=1.0)
    rope: float = Field(0.002, ge=0.0, description="equivalence margin for accuracies (fraction: 0.002 = 0.2 points)")
    correction: Literal["holm", "bh"] = Field("holm", description="bh only for exploratory grids")

    @field_validator("metrics")
    @classmethod
    def _some_metric(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("analysis.metrics is empty; fix: list at least one metric, e.g. [test/acc]")
        return v


@dataclass(frozen=True)
class Contrast:
    family: str
    method: str  # delta = method - baseline
    baseline: str


@dataclass
class Plan:
    """A resolved plan: every contrast named, with the statistics' settings."""

    contrasts: list[Contrast]
    metrics: list[str]
    alpha: float = 0.05
    rope: float = 0.002
    correction: str = "holm"
    treatment: str | None = None
    source: str = "declared"  # declared | default | legacy (no plan stored: every cell vs the baseline)
    extra: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None  # the seeds the plan declares (None: a plan stored before seeds were)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Plan:
        raw = dict(raw)
        raw["contrasts"] = [Contrast(**c) for c in raw["contrasts"]]
        return cls(**raw)

    @property
    def hash(self) -> str:
        # a plan without seeds hashes as before seeds were part of plans, so stored hashes stay valid
        body = {k: v for k, v in self.to_json().items() if k != "extra" and not (k == "seeds" and v is None)}
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(c.family for c in self.contrasts))


def _standard_families(treatment: str, methods: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {"baselines": [], "ablations": [], "other": []}
    for cell, method in methods.items():
        if cell == treatment:
            continue
        family = "baselines" if method in BASELINE_METHODS else "ablations" if method in ABLATION_METHODS else "other"
        out[family].append((treatment, cell))
    return {k: v for k, v in out.items() if v}


def resolve_plan(spec: AnalysisSpec | None, methods: dict[str, str], *, baseline: str | None = None) -> Plan:
    """Name every contrast of the plan; ``methods``: cell -> method.name.

    Without an ``analysis:`` block the treatment (``sal``) is compared with every other cell in one
    family per metric; an ablation without a ``sal`` cell compares every cell with its ``baseline``.
    """
    cells = list(methods)
    declared = spec is not None
    spec = spec or AnalysisSpec()
    problems = []
    if spec.families == STANDARD_FAMILIES or (spec.families is None and spec.contrasts is None):
        if spec.treatment not in methods:
            if declared:
                raise SpecError([f"analysis.treatment={spec.treatment!r} is not a cell; fix: set analysis.treatment "
                                 f"to one of {cells} or declare analysis.contrasts"])
            # No sal cell and no plan: every cell against the baseline; with no baseline either, a grid of several
            # cells would train and compare nothing (its report had no family to show): refused before it runs.
            # One cell (the base spec alone) is a run repeated over seeds, with nothing to compare by design.
            if baseline not in methods and len(cells) > 1:
                raise SpecError([f"cells {cells}: nothing to compare (no baseline, no {spec.treatment!r} cell, no "
                                 "analysis plan); fix: declare analysis.contrasts, e.g. [[" + cells[1] + ", " + cells[0]
                                 + "]], or in an ablation set baseline: NAME (every other cell is compared with it)"])
            contrasts = [Contrast("all", c, baseline) for c in cells if c != baseline] if baseline in methods else []
            return Plan(contrasts, spec.metrics, spec.alpha, spec.rope, spec.correction, None, "default")
        if spec.families == STANDARD_FAMILIES:
            families = _standard_families(spec.treatment, methods)
        else:
            families = {"all": [(spec.treatment, c) for c in cells if c != spec.treatment]}
    elif spec.families is not None:
        families = {name: [(spec.treatment, e) if isinstance(e, str) else tuple(e) for e in entries]
                    for name, entries in spec.families.items()}
    else:
        families = {"all": [tuple(c) for c in spec.contrasts]}
    contrasts = []
    for family, pairs in families.items():
        for a, b in pairs:
            for cell in (a, b):
                if cell not in methods:
                    problems.append(f"analysis: family {family!r} names cell {cell!r}, which the ablation does not "
                                    f"have; fix: use one of {cells}")
            if a == b:
                problems.append(f"analysis: family {family!r} compares {a!r} with itself; fix: name two cells")
            contrasts.append(Contrast(family, a, b))
    if not contrasts and not problems:
        problems.append("analysis: the plan has no contrast; fix: declare analysis.contrasts or add cells")
    seen = set()
    for c in contrasts:
        if (c.method, c.baseline) in seen:
            problems.append(f"analysis: {c.method} vs {c.baseline} is declared twice; fix: keep it in one family")
        seen.add((c.method, c.baseline))
    if problems:
        raise SpecError(list(dict.fromkeys(problems)))
    treatment = spec.treatment if spec.treatment in methods else None
    return Plan(contrasts, spec.metrics, spec.alpha, spec.rope, spec.correction, treatment,
                "declared" if declared else "default")


def legacy_plan(cells: list[str], baseline: str, metrics: list[str]) -> Plan:
    """Runs logged before plans were stored: every cell against the ablation's baseline."""
    return Plan([Contrast("all", c, baseline) for c in cells if c != baseline], metrics, source="legacy")


def override_plan(plan: Plan, *, cells: list[str], baseline: str | None = None, metrics: list[str] | None = None,
                  rope: float | None = None, alpha: float | None = None,
                  correction: str | None = None) -> tuple[Plan, list[str]]:
    """The plan with a report's command-line overrides applied, and how the result departs from the plan."""
    departures = []
    contrasts = plan.contrasts
    if baseline is not None:
        if baseline not in cells:
            raise SpecError([f"--baseline={baseline!r} has no runs; fix: use one of {sorted(cells)}"])
        contrasts = [Contrast("all", c, baseline) for c in cells if c != baseline]
        if [(c.method, c.baseline) for c in contrasts] != [(c.method, c.baseline) for c in plan.contrasts]:
            departures.append(f"contrasts: every cell against {baseline!r} (--baseline) instead of the plan's "
                              f"{len(plan.contrasts)} contrasts")
    changed = {"metrics": metrics, "rope": rope, "alpha": alpha, "correction": correction}
    new = Plan(contrasts, plan.metrics, plan.alpha, plan.rope, plan.correction,
               None if baseline is not None else plan.treatment, plan.source, seeds=plan.seeds)
    for name, value in changed.items():
        if value is not None and value != getattr(plan, name):
            departures.append(f"{name}: {value} (command line) instead of the plan's {getattr(plan, name)}")
            setattr(new, name, value)
    return new, departures


def plan_changes(old: Plan, new: Plan) -> list[str]:
    """What ``new`` changes in ``old``, one phrase per setting (``alpha: 0.05 -> 0.1``); empty if nothing."""
    out = []
    for name in ("alpha", "rope", "correction", "metrics", "treatment"):
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            out.append(f"{name}: {a} -> {b}")
    pairs = [[(c.family, c.method, c.baseline) for c in p.contrasts] for p in (old, new)]
    if pairs[0] != pairs[1]:
        show = [", ".join(f"{f}: {m} vs {b}" for f, m, b in p) for p in pairs]
        out.append(f"contrasts: [{show[0]}] -> [{show[1]}]")
    if old.seeds is not None and new.seeds is not None and old.seeds != new.seeds:
        added = sorted(set(new.seeds) - set(old.seeds))
        out.append(f"seeds: {len(old.seeds)} -> {len(new.seeds)}"
                   + (f" (seeds {', '.join(map(str, added))} added)" if added else ""))
    return out
