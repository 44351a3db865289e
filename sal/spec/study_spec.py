"""The study spec: base run spec, search space over dotted keys, objectives over seeds, sampler, pruner.

Everything is checked before the first trial: a bad range, a log scale with low <= 0, an unknown key,
a test metric as the objective (never select on test data) all fail with the key and the fix.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Literal

import optuna
from pydantic import Field, field_validator, model_validator

from ..core.spec_base import Seeds, Strict, name_problem, seed_list
from ..metrics.scoring import direction as scoring_direction
from ..metrics.scoring import higher_is_better
from .config import (
    RunSpec,
    SpecError,
    apply_overrides,
    check_required_paths,
    missing_data_root,
    read_sweep_spec,
    validate_run,
    with_base_overrides,
)

__all__ = ["ParamSpace", "Objective", "SamplerSpec", "PrunerSpec", "StudySpec", "load_study_spec", "build_sampler",
           "build_pruner", "ordered_space", "check_study_spec", "corner_specs"]

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class ParamSpace(Strict):
    """One searched setting: float or int in [low, high] (optionally log or stepped), or categorical."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _infer_categorical(cls, raw):
        if isinstance(raw, dict) and "choices" in raw and "type" not in raw:
            raw = {**raw, "type": "categorical"}
        return raw

    def check(self, key: str) -> list[str]:
        where = f"space.{key}"
        if self.type == "categorical":
            return [] if self.choices else [f"{where}.choices is empty; fix: list at least one value"]
        if self.low is None or self.high is None:
            return [f"{where} needs low and high; fix: e.g. {{low: 1e-4, high: 1e-2, log: true}}"]
        problems = []
        if self.low >= self.high:
            problems.append(f"{where}: low={self.low} is not below high={self.high}; fix: swap or widen them")
        if self.log and self.low <= 0:
            problems.append(f"{where}: log scale needs low > 0, got low={self.low}; fix: a positive low or log: false")
        if self.log and self.step is not None:
            problems.append(f"{where}: log and step cannot be combined; fix: drop one")
        return problems

    def contains(self, value: Any) -> bool:
        """Whether a trial of this space can take ``value`` (the base spec's default, enqueued first)."""
        if self.type == "categorical":
            return value in (self.choices or [])
        return isinstance(value, (int, float)) and not isinstance(value, bool) and self.low <= value <= self.high

    def edge_values(self) -> list[Any]:
        if self.type == "categorical":
            return list(self.choices or [])
        cast = int if self.type == "int" else float
        return [cast(self.low), cast(self.high)]


class Objective(Strict):
    metric: str = Field("val/acc", description="a per-epoch metric (last epoch) or a final one, never test/*")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="default: the metric's own (sal.metrics.scoring.direction); another one is refused")
    aggregate: Literal["mean", "worst", "cvar", "lcb"] = Field("mean", description="over the trial's seeds")
    cvar_alpha: float = Field(0.25, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _natural_direction(self):
        if self.direction is None:  # one rule for every part of sal: the metric decides (sal.metrics.scoring)
            self.direction = scoring_direction(self.metric)
        return self

    @field_validator("metric")
    @classmethod
    def _metric_logged(cls, v: str) -> str:  # a typo would be found only after every trial trained
        from ..metrics.metricnames import unknown_metric

        problem = unknown_metric(v)
        if problem:
            raise ValueError(problem)
        return v


class SamplerSpec(Strict):
    name: Literal["tpe", "cmaes", "gp", "random", "qmc", "grid", "nsga2"] = "tpe"
    seed: int = Field(0, ge=0, description="worker i uses seed + i")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the sampler")


class PrunerSpec(Strict):
    name: Literal["none", "median", "successive_halving", "hyperband", "wilcoxon"] = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class StudySpec(Strict):
    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    space: dict[str, ParamSpace]
    seeds: Seeds = 3
    objectives: list[Objective] = Field(default_factory=lambda: [Objective()])
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    n_trials: int | None = Field(20, ge=1)
    timeout: float | None = Field(None, gt=0, description="seconds per invocation")
    enqueue_defaults: bool = Field(True, description="first trial = the base spec's values (the paper's)")
    requires: list[str] = Field(default_factory=list, description="folders that must exist (data sets)")
    tags: dict[str, str] = Field(default_factory=dict, description="extra MLflow tags on every run (sal compare)")

    @property
    def seed_list(self) -> list[int]:
        return seed_list(self.seeds)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        """What each objective value is, e.g. ``cvar(val/acc)``: Optuna's plots and optuna-dashboard show it."""
        return [f"{o.aggregate}({o.metric})" for o in self.objectives]

    @property
    def prunes_per_seed(self) -> bool:
        return self.pruner.name == "wilcoxon"


def ordered_space(space: dict[str, ParamSpace]) -> list[tuple[str, ParamSpace]]:
    """S_yield before S_noise, so S_noise's upper bound can be S_yield (S_noise < S_yield by construction)."""
    keys = sorted(space, key=lambda k: 1 if k == "method.s_noise" and "method.s_yield" in space else 0)
    return [(k, space[k]) for k in keys]


def _corners(spec: StudySpec) -> list[dict[str, Any]]:
    lows = {k: p.edge_values()[0] for k, p in spec.space.items()}
    corners = [lows, {k: p.edge_values()[-1] for k, p in spec.space.items()}]
    return corners + [{**lows, k: c} for k, p in spec.space.items() if p.type == "categorical" for c in p.choices]


def corner_specs(spec: StudySpec) -> list[RunSpec]:
    """Run specs at the corners a trial can reach (for checks before compute, e.g. of plug-ins)."""
    return [validate_run(apply_overrides(spec.base, corner)) for corner in _corners(spec)]


def _check(spec: StudySpec) -> list[str]:
    problems = []
    bad_name = name_problem(spec.name, _NAME, kind="study", allowed="letters, digits, '_', '-' or '.'")
    if bad_name:
        problems.append(bad_name)
    if not spec.space:
        problems.append("space is empty; fix: list at least one dotted key to search, e.g. method.rho")
    for key, p in spec.space.items():
        problems += p.check(key)
    if problems:
        return problems
    try:  # the base spec itself first, so its own errors are not blamed on the space
        validate_run(spec.base, prefix="base.")
    except SpecError as err:
        return err.problems
    # Every key at its low end together, then at its high end, then each choice: the spec must be valid
    # at every corner a trial can reach (S_noise and S_yield move together, so they are checked jointly).
    for corner in _corners(spec):
        try:
            root_problem = missing_data_root(validate_run(apply_overrides(spec.base, corner)))
            if root_problem and f"base.{root_problem}" not in problems:
                problems.append(f"base.{root_problem}")
        except SpecError as err:
            problems += [f"space.{line}" for line in err.problems if f"space.{line}" not in problems]
    if "method.s_noise" in spec.space and "method.s_yield" in spec.space:
        noise, yld = spec.space["method.s_noise"], spec.space["method.s_yield"]
        if noise.type != "categorical" and yld.type != "categorical" and noise.low >= yld.low:
            problems.append(f"space.method.s_noise: low={noise.low} must be below space.method.s_yield low={yld.low}, "
                            "since S_noise < S_yield; fix: lower it")
    seeds = spec.seed_list
    if not seeds or min(seeds) < 1 or len(set(seeds)) != len(seeds):
        problems.append(f"seeds={spec.seeds!r} must be a count >= 1 or distinct seeds >= 1; fix: e.g. seeds: 3")
    runs = [] if problems else corner_specs(spec)
    for i, o in enumerate(spec.objectives):
        unscored = _unscored_robustness(o.metric, runs)
        if unscored:
            problems.append(f"objectives.{i}.metric={o.metric!r} {unscored}")
        if o.metric.startswith("test/"):
            problems.append(f"objectives.{i}.metric={o.metric!r} selects on test data; "
                            "fix: use a val/ or train/ metric")
        natural = "maximize" if higher_is_better(o.metric) else "minimize"
        if o.direction != natural:
            # A diverged seed scores the metric's worst value; that only ranks last in its natural direction.
            problems.append(f"objectives.{i}.direction={o.direction!r} for {o.metric!r}, which is better "
                            f"{'higher' if natural == 'maximize' else 'lower'}; fix: direction: {natural}")
    if len(spec.objectives) > 1 and spec.pruner.name != "none":
        problems.append(f"pruner.name={spec.pruner.name!r}: Optuna cannot prune multi-objective studies; "
                        "fix: pruner: {name: none}")
    if spec.n_trials is None and spec.timeout is None:
        problems.append("n_trials and timeout are both unset; fix: set n_trials (or a timeout in seconds)")
    if spec.sampler.name == "grid":
        for key, p in spec.space.items():
            if p.type == "float" and p.step is None:
                problems.append(f"space.{key}: the grid sampler needs choices or a step; fix: add step or choices")
    return problems


_ROBUST = re.compile(r"^(val|test)/robust/(.+)/acc$")


def _unscored_robustness(metric: str, runs: list[RunSpec]) -> str | None:
    """Why a trial's runs (its corners) would not log the robustness ``metric``, or None: without it every
    trial would train and then score NaN."""
    from ..metrics.metricnames import robust_labels

    match = _ROBUST.match(metric)
    if not match:
        return None
    for run in runs:
        r = run.robustness
        if not r.enabled:
            return ("is logged only when robustness is scored, and base.robustness is off; fix: set "
                    "base.robustness.noise (e.g. [0.1, 0.5]) or choose a plain metric such as val/acc")
        images = run.data.images is not False  # a loader's data: known once loaded, so not refused here
        logged = robust_labels(r.noise, r.corruptions, r.levels, images=images)
        if match.group(2) in logged:
            continue
        names = ", ".join(f"{match.group(1)}/robust/{name}/acc" for name in logged)
        if match.group(2) in robust_labels(r.noise, r.corruptions, r.levels):  # it would be logged on images
            only = f"the runs score only {names}" if names else "the runs score no perturbation"
            return (f"needs image inputs, but base.data.name={run.data.name!r} holds 1-D signals, not images: image "
                    f"corruptions are not applied to them, so {only} and every trial would score NaN; fix: "
                    + ("choose one of those, or image data" if names else
                       "set base.robustness.noise (e.g. [0.1, 0.5]) and use its metric, or image data"))
        return f"is not a perturbation the runs score ({names}); fix: choose one of those"
    return None


def check_study_spec(spec: StudySpec) -> None:
    """Every check of a study spec before its first trial; SpecError lists what is wrong."""
    problems = _check(spec)
    if problems:
        raise SpecError(problems)


def load_study_spec(path: str | Path, base_overrides: dict[str, Any] | None = None, **fields: Any) -> StudySpec:
    def one_objective(raw: dict) -> None:  # one objective may be written without the list
        if "objective" in raw:
            raw["objectives"] = [raw.pop("objective")]

    spec = read_sweep_spec(path, StudySpec, kind="study", fields=fields, prepare=one_objective)
    spec = with_base_overrides(spec, base_overrides)
    check_required_paths(f"study {spec.name!r}", spec.requires)
    check_study_spec(spec)
    if spec.prunes_per_seed and len(spec.seed_list) < 5:
        log.warning("WilcoxonPruner compares per-seed scores: with %d seeds it can never reach significance and "
                    "will not prune; use 5 or more seeds", len(spec.seed_list))
    return spec


def sampler_seed(base: int, worker_index: int, history: int) -> int:
    """A worker's sampler seed: ``base + worker_index`` for a new study; for one that already has ``history``
    trials (resumed or extended) a seed drawn from all three, so a restart continues with new draws instead of
    repeating the first launch's (and two launches' workers do not share one)."""
    import numpy as np

    if history == 0:
        return base + worker_index
    return int(np.random.SeedSequence([base, worker_index, history]).generate_state(1)[0])


def build_sampler(spec: StudySpec, worker_index: int = 0, history: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler with its options set explicitly; each worker gets its own seed, and so does each launch
    of a study with ``history`` trials. QMC keeps its seed: it takes its place in its one scrambled sequence
    from the trials stored, and a new seed would start another sequence."""
    s = spec.sampler
    seed = sampler_seed(s.seed, worker_index, 0 if s.name == "qmc" else history)
    if s.name == "tpe":
        opts = {"n_startup_trials": 5, "multivariate": True, "group": True, "constant_liar": True, **s.options}
        return optuna.samplers.TPESampler(seed=seed, **opts)
    if s.name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, **{"n_startup_trials": 3, **s.options})
    if s.name == "gp":
        return optuna.samplers.GPSampler(seed=seed, **s.options)
    if s.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, **{"scramble": True, **s.options})
    if s.name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **s.options)
    grid = {}
    for key, p in spec.space.items():
        if p.type == "categorical":
            grid[key] = list(p.choices)
        else:
            step = p.step or 1
            n = int(round((p.high - p.low) / step)) + 1
            grid[key] = [(int if p.type == "int" else float)(p.low + i * step) for i in range(n)]
    return optuna.samplers.GridSampler(grid, seed=seed)


def build_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    p = spec.pruner
    if p.name == "median":
        return optuna.pruners.MedianPruner(**{"n_startup_trials": 5, "n_warmup_steps": 3, **p.options})
    if p.name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(**p.options)
    if p.name == "hyperband":
        return optuna.pruners.HyperbandPruner(**p.options)
    if p.name == "wilcoxon":
        return optuna.pruners.WilcoxonPruner(**{"p_threshold": 0.1, **p.options})
    return optuna.pruners.NopPruner()
