"""`sal compare`: the fair protocol in one command.

1. Tune: one Optuna study per method with the same budget (trials x seeds, sampler, pruner, objective),
   over that method's own knobs plus the shared optimizer knobs (sal.methods.default_space), unless the
   spec's ``tuning.space`` overrides a method's space.
2. Select: each method's best trial by the declared (pessimistic) aggregate on validation data; the
   configuration that trial trained is what goes on.
3. Evaluate: an ablation of the selected configurations on fresh seeds (disjoint from the tuning seeds),
   paired by seed, with the declared analysis plan; optionally adding seeds until every contrast is
   decided, with group-sequential thresholds (sal.stats.inference.sequential_alphas) so the repeated looks keep
   the family's error rate.
4. Report: the ablation's report plus a protocol section (see protocol_report).

Every step is resumable and idempotent: the studies and the ablation are the ordinary sal ones, keyed by
configuration, so re-running the command only does what is missing.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import Field, field_validator, model_validator

from ..core.names import RECORD_COMPARE_DESIGN, TAG_CELL, TAG_COMPARE, TAG_STAGE
from ..core.spec_base import MAX_SEEDS, Seeds, Strict, name_problem, seed_list
from ..methods import default_space
from ..queue import engine
from ..spec.analysis import AnalysisSpec
from ..spec.config import (
    SpecError,
    apply_overrides,
    configuration,
    flatten,
    read_sweep_spec,
    validate_run,
    with_base_overrides,
)
from ..spec.study_spec import Objective, ParamSpace, PrunerSpec, SamplerSpec, StudySpec, check_study_spec
from ..stats import inference as stats
from ..tracking.store import end_compare_parents, experiment_name, get_experiment_record, set_experiment_record
from .ablation import AblationSpec, expand, plan_of, run_ablation
from .study import best_spec, run_study

__all__ = ["CompareSpec", "load_compare", "run_compare", "Look", "CompareResult", "tuning_spec", "looks_of",
           "check_design", "record_design", "design_of", "take_look"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_DECIDED = {"better", "worse", "equivalent"}


class TuningSpec(Strict):
    trials: int = Field(20, ge=1, description="trials per method: the same budget for every method")
    seeds: Seeds = Field(3, description="seeds per trial (a count: 1..n, or a list)")
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    objective: Objective = Objective(metric="val/acc", aggregate="lcb")
    space: dict[str, dict[str, ParamSpace]] = Field(
        default_factory=dict, description="method cell -> search space replacing that method's default space")

    @property
    def seed_list(self) -> list[int]:
        return seed_list(self.seeds)


class EvaluationSpec(Strict):
    seeds: int | list[int] = Field(10, description="a count (fresh seeds from first_seed on) or a list")
    first_seed: int = Field(1001, ge=1, description="the first evaluation seed when seeds is a count")
    max_seeds: int | None = Field(None, ge=2, le=MAX_SEEDS, description="add seeds until decided, up to this many")
    step: int = Field(5, ge=1, description="seeds added per look")
    stop: Literal["decided", "max"] = Field("decided", description="decided: stop once every contrast is decided")

    @field_validator("seeds")
    @classmethod
    def _seeds_a_run_can_have(cls, v: int | list[int]) -> int | list[int]:
        # checked here, not when the evaluation grid is built after every method was tuned
        count = v if isinstance(v, int) else len(v)
        if count > MAX_SEEDS:
            raise ValueError(f"evaluation.seeds={count} is more than sal runs (at most {MAX_SEEDS}); fix: e.g. "
                             "evaluation.seeds: 10")
        if isinstance(v, int) and v < 1:
            raise ValueError(f"evaluation.seeds={v} must be a count >= 1 (fresh seeds from first_seed on); fix: "
                             "e.g. evaluation.seeds: 10")
        if isinstance(v, list) and (not v or min(v) < 1 or len(set(v)) != len(v)):
            raise ValueError(f"evaluation.seeds={v!r} must be distinct seeds >= 1; fix: list each seed once, e.g. "
                             "evaluation.seeds: [1001, 1002, 1003], or give a count")
        return v

    @property
    def seed_list(self) -> list[int]:
        if isinstance(self.seeds, list):
            return list(self.seeds)
        return list(range(self.first_seed, self.first_seed + (self.max_seeds or self.seeds)))

    @property
    def sequential(self) -> bool:
        return self.max_seeds is not None


class CompareSpec(Strict):
    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    methods: dict[str, dict[str, Any]] = Field(description="cell name -> dotted overrides of the base")
    tuning: TuningSpec = TuningSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    analysis: AnalysisSpec | None = None

    @model_validator(mode="after")
    def _consistent(self):
        problems = []
        bad_name = name_problem(self.name, _NAME, kind="comparison", allowed="letters, digits, '_' or '-'")
        if bad_name:
            problems.append(bad_name)
        if not self.methods:
            problems.append("methods is empty; fix: name at least two methods to compare, e.g. adam and sal")
        overlap = sorted(set(self.tuning.seed_list) & set(self.evaluation.seed_list))
        if overlap:
            problems.append(f"evaluation seeds {overlap} are also tuning seeds; fix: evaluate on fresh seeds "
                            "(evaluation.first_seed above the tuning seeds, or a disjoint list)")
        e = self.evaluation
        if e.sequential and isinstance(e.seeds, int) and e.max_seeds < e.seeds:
            problems.append(f"evaluation.max_seeds={e.max_seeds} is below evaluation.seeds={e.seeds}; fix: raise it")
        if e.sequential and isinstance(e.seeds, list):
            problems.append("evaluation.seeds must be a count when max_seeds is set; fix: e.g. seeds: 10")
        elif e.sequential and e.seeds < 2:
            # checked here, not after every method was tuned: a look needs a paired t-test (2 seeds at least)
            problems.append(f"evaluation.seeds={e.seeds} with max_seeds={e.max_seeds}: the first look needs at "
                            "least 2 seeds; fix: seeds: 2 or more (10 for claims)")
        metrics = (self.analysis or AnalysisSpec()).metrics
        split = self.tuning.objective.metric.split("/")[0] + "/"
        on_selection = [m for m in metrics if m.startswith(split)]
        if on_selection:
            problems.append(f"analysis.metrics={on_selection} evaluates on the split used for selection "
                            f"(tuning.objective.metric={self.tuning.objective.metric!r}): the selected "
                            "configurations were chosen for their score there; fix: evaluate on held-out data, "
                            "e.g. analysis.metrics: [test/acc]")
        unknown = sorted(set(self.tuning.space) - set(self.methods))
        if unknown:
            problems.append(f"tuning.space names {unknown}, which are not methods; fix: use {sorted(self.methods)}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def load_compare(path: str | Path, base_overrides: dict[str, Any] | None = None) -> CompareSpec:
    """Read and check a compare spec: every method's study and the evaluation grid are validated here."""
    spec = with_base_overrides(read_sweep_spec(path, CompareSpec, kind="compare"), base_overrides)
    _check_budget(spec)
    for cell in spec.methods:
        check_study_spec(tuning_spec(spec, cell))
    # the evaluation grid and its analysis plan, at the spec's own settings (the tuned ones come later)
    grid = _ablation_spec(spec, spec.base, spec.methods, spec.evaluation.seed_list[:1])
    plan_of(grid, expand(grid))
    return spec


BUDGET_KEYS = ("train.epochs",)  # what every method must spend alike (trials and seeds are one setting already)


def _check_budget(spec: CompareSpec) -> None:
    """Equal budget (docs/statistics.md, "Equal budget"): every method trains the same epochs, and no method's
    search space moves them; trials and seeds per trial are one setting for all (tuning.trials, .seeds)."""
    problems = []
    for key in BUDGET_KEYS:
        section, field = key.split(".")
        values = {cell: getattr(getattr(validate_run(apply_overrides(spec.base, over)), section), field)
                  for cell, over in spec.methods.items()}
        if len(set(values.values())) > 1:
            shown = ", ".join(f"{c}: {v}" for c, v in values.items())
            problems.append(f"{key} differs between methods ({shown}): a comparison needs the same budget for every "
                            f"method; fix: set {key} in base only, not in methods")
        for cell, space in spec.tuning.space.items():
            if key in space:
                problems.append(f"tuning.space.{cell} tunes {key}, which is part of the budget (equal for every "
                                f"method); fix: remove {key} from the space and set it in base")
    if problems:
        raise SpecError(problems)


def design_of(spec: CompareSpec) -> dict[str, Any]:
    """The evaluation design a compare's error rate rests on: its looks (seed counts), seeds and alpha."""
    e = spec.evaluation
    return {"looks": looks_of(e), "seeds": e.seed_list, "alpha": (spec.analysis or AnalysisSpec()).alpha,
            "sequential": e.sequential}


def check_design(spec: CompareSpec, uri: str) -> None:
    """Refuse a re-run whose evaluation design differs from the one stored when its first look was taken.

    A group-sequential design is fixed at its first look (docs/statistics.md, "Adding seeds until decided"):
    re-running with a larger max_seeds (or other looks, seeds or alpha) re-uses looks already taken under
    another spending plan and inflates the false-positive rate (simulated: 0.051 for looks 10-15-20, 0.081
    when re-run to 40). Called before any tuning.
    """
    stored = get_experiment_record(uri, experiment_name("ablation", spec.name), RECORD_COMPARE_DESIGN)
    if not stored or not stored.get("looks_taken"):
        return
    wanted = design_of(spec)
    changed = [k for k in ("looks", "seeds", "alpha") if stored.get(k) != wanted[k]]
    if changed:
        raise SpecError([
            f"compare {spec.name!r}: its evaluation design is fixed at its first look: looks {stored['looks']} at "
            f"alpha {stored['alpha']}, and {stored['looks_taken']} look(s) were taken; this run asks for looks "
            f"{wanted['looks']} at alpha {wanted['alpha']} ({', '.join(changed)} changed). Looking again under a "
            "new design re-uses the looks already taken and inflates the false-positive rate above alpha; fix: "
            "restore evaluation.seeds, max_seeds, step, first_seed and analysis.alpha, or run the new design "
            "under a new name"])


def record_design(spec: CompareSpec, uri: str, *, looks_taken: int) -> None:
    """Store the design and how many looks were taken (never fewer than already stored)."""
    experiment = experiment_name("ablation", spec.name)
    stored = get_experiment_record(uri, experiment, RECORD_COMPARE_DESIGN) or {}
    taken = max(int(stored.get("looks_taken", 0)), looks_taken)
    set_experiment_record(uri, experiment, RECORD_COMPARE_DESIGN, {**design_of(spec), "looks_taken": taken})


def tuning_spec(spec: CompareSpec, cell: str) -> StudySpec:
    """The study that tunes one method: the same budget as every other method's."""
    base = apply_overrides(spec.base, spec.methods[cell])
    method = validate_run(base).method.name
    space = spec.tuning.space.get(cell) or {k: ParamSpace(**v) for k, v in default_space(method).items()}
    t = spec.tuning
    return StudySpec(name=f"{spec.name}.{cell}", base=base, space=space, seeds=t.seeds, objectives=[t.objective],
                     sampler=t.sampler, pruner=t.pruner, n_trials=t.trials,
                     tags={TAG_COMPARE: spec.name, TAG_STAGE: "tune", TAG_CELL: cell})


def _ablation_spec(spec: CompareSpec, base: dict[str, Any], cells: dict[str, dict[str, Any]],
                   seeds: list[int]) -> AblationSpec:
    # the plan declares every seed the design may add, so a later look is the same plan, not a departure
    return AblationSpec(name=spec.name, base=base, cells=cells, seeds=seeds, analysis=spec.analysis,
                        tags={TAG_COMPARE: spec.name, TAG_STAGE: "evaluate"},
                        metric=spec.tuning.objective.metric, planned_seeds=spec.evaluation.seed_list)


def looks_of(e: EvaluationSpec) -> list[int]:
    """Seed counts at which the evaluation is looked at: seeds, seeds + step, ..., max_seeds."""
    if not e.sequential:
        return [len(e.seed_list)]
    looks = list(range(e.seeds, e.max_seeds, e.step))
    return looks + [e.max_seeds]


@dataclass
class Look:
    seeds: int
    threshold: float  # nominal two-sided p threshold of this look
    verdicts: dict[str, str]  # "dataset|context|metric|method vs baseline" -> verdict
    analysis: Any = None  # the look's sal.report.build.Analysis: the report of the last look is this one


@dataclass
class CompareResult:
    spec: CompareSpec
    studies: dict[str, optuna.Study]
    selected: dict[str, dict[str, Any]]  # cell -> the flattened configuration its best trial trained
    looks: list[Look] = field(default_factory=list)
    stop_reason: str = ""


def _selected(study: optuna.Study) -> dict[str, Any]:
    return configuration(flatten(best_spec(study)), drop=("train.device",))


def take_look(uri: str, name: str, threshold: float, seeds: list[int]) -> Look:
    """The evaluation analysed on exactly ``seeds`` (even when a longer earlier run logged more), judged at
    the look's nominal threshold with intervals at 1 - threshold. The one analysis of the look: its verdicts
    are what the console counts, and the report of the last look is written from it, never re-analysed."""
    from ..report.build import analyse

    a = analyse(uri, name, alpha=threshold, level=1 - threshold, seeds=seeds)
    # the look's nominal threshold is the plan's (sequential) design, not a departure from it
    a.departures = [d for d in a.departures if not d.startswith("alpha:")]
    compared = a.summary[a.summary["verdict"] != "reference"]
    if (compared["n"] < len(seeds)).any():
        raise SpecError([f"compare {name!r}: a contrast has fewer than {len(seeds)} paired seeds after the look; "
                         "fix: re-run `sal compare` to finish the missing runs"])
    verdicts = {f"{r.dataset}|{r.context}|{r.metric}|{r.method} vs {r.baseline}": r.verdict
                for r in compared.itertuples()}
    return Look(len(seeds), threshold, verdicts, a)


def run_compare(spec: CompareSpec, *, ref: engine.StorageRef, uri: str, workers: int = 1,
                gpus: list[str] | None = None, checkpoint_dir: str | None = None) -> CompareResult:
    """Tune every method with one budget, select, evaluate on fresh seeds (until decided), and return
    what happened at each step; the report is written by the caller (protocol_report)."""
    check_design(spec, uri)  # before any compute: a stored design that differs is refused
    studies = {}
    for cell in spec.methods:
        log.info("compare %s: tuning %s", spec.name, cell)
        studies[cell] = run_study(tuning_spec(spec, cell), ref=ref, uri=uri, workers=workers, gpus=gpus,
                                  checkpoint_dir=checkpoint_dir)
    selected = {cell: _selected(study) for cell, study in studies.items()}
    result = CompareResult(spec, studies, selected)
    e = spec.evaluation
    looks = looks_of(e)
    alpha = (spec.analysis or AnalysisSpec()).alpha
    thresholds = stats.sequential_alphas(looks, alpha) if e.sequential else [alpha]
    for n, threshold in zip(looks, thresholds):
        ablation = _ablation_spec(spec, {}, selected, e.seed_list[:n])
        run_ablation(ablation, expand(ablation), ref=ref, uri=uri, workers=workers, gpus=gpus,
                     checkpoint_dir=checkpoint_dir)
        look = take_look(uri, spec.name, threshold, e.seed_list[:n])
        result.looks.append(look)
        record_design(spec, uri, looks_taken=len(result.looks))
        undecided = [k for k, v in look.verdicts.items() if v not in _DECIDED]
        if not e.sequential:
            result.stop_reason = f"fixed design: {n} evaluation seeds"
            break
        if e.stop == "decided" and not undecided:
            result.stop_reason = f"every contrast decided at look {len(result.looks)} ({n} seeds)"
            break
    else:
        result.stop_reason = f"max_seeds ({looks[-1]}) reached with {len(undecided)} contrast(s) undecided"
    end_compare_parents(uri, [experiment_name("study", s.study_name) for s in studies.values()]
                        + [experiment_name("ablation", spec.name)], spec.name)
    return result
