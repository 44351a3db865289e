"""Pydantic models of every run spec, YAML loading, dotted overrides and readable validation errors.

One dotted key names a setting everywhere (YAML, ``--set key=value``, Optuna params, ablation axes,
MLflow params): ``seed``, ``data.name``, ``optim.lr``, ``method.rho``, ``train.epochs``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from ..core.spec_base import SpecError, Strict
from ..core.yamlio import load_unique
from ..methods import METHOD_SPECS
from ..methods.sal import YOKED_EVENTS
from .speckind import check_kind

SpecT = TypeVar("SpecT", bound=BaseModel)  # a sweep spec model (ablation, study, compare)

__all__ = [
    "SpecError",
    "DataSpec",
    "ModelSpec",
    "OptimSpec",
    "TrainSpec",
    "RunSpec",
    "RunAnalysisSpec",
    "METHOD_NAMES",
    "parse_overrides",
    "apply_overrides",
    "configuration",
    "HOW_IT_RAN",
    "validate_run",
    "load_yaml",
    "load_run_spec",
    "flatten",
    "to_yaml",
    "config_hash",
    "format_validation_error",
    "DATA_ENV",
    "expand_data_env",
    "check_required_paths",
    "missing_data_root",
    "is_import_path",
    "IMPORT_PATH",
]


_Strict = Strict


# ---- plug-ins: ``model.name`` / ``data.name`` may be a ``module:function`` path (sal/training/plugins.py)
IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
DataName = Literal["digits", "mnist1d", "cifar10", "cifar100", "imagefolder", "synthetic"]
ModelName = Literal[
    "mlp", "cnn", "resnet18", "densenet121", "densenet201", "resnet50", "mobilenet_v2", "efficientnet_b2",
    "mnist1d_linear", "mnist1d_mlp", "mnist1d_cnn",  # MNIST-1D paper's models (sal/training/mnist1d_models.py)
]
# the torchvision backbones of the paper (sal/training/models.py): the only models model.weights loads into
BACKBONES = ("densenet121", "densenet201", "resnet50", "mobilenet_v2", "efficientnet_b2")


def is_import_path(name: str) -> bool:
    """``mypkg.models:build`` names a user's function; built-in names have no colon."""
    return ":" in name


def _builtin_or_import_path(section: str, builtins: tuple[str, ...], name: Any) -> Any:
    if isinstance(name, str) and name not in builtins and not IMPORT_PATH.match(name):
        example = "mypkg.models:build" if section == "model" else "mypkg.data:load"
        raise ValueError(f"{section}.name={name!r} is neither built in ({', '.join(builtins)}) nor a module:function "
                         f"path; fix: pick a built-in name or write e.g. {section}.name={example} (importable from "
                         "the working directory)")
    return name


def _args_only_for_import_paths(section: str, name: str, args: dict) -> None:
    if args and not is_import_path(name):
        raise ValueError(f"{section}.args={args!r} is set for the built-in {section}.name={name!r}, which takes no "
                         f"args; fix: remove {section}.args or use a module:function {section}.name")
# ---- end plug-ins


class DataSpec(_Strict):
    name: DataName | Annotated[str, Field(pattern=IMPORT_PATH.pattern)] = Field(
        "digits", description="a built-in data set or a module:function loader (see sal/training/plugins.py)")
    args: dict[str, Any] = Field({}, description="settings passed to a module:function loader")
    label: str | None = Field(None, description="name in tags and reports (e.g. imagenette); default: name")
    root: str | None = Field(None, description="folder of a torchvision or ImageFolder data set")
    resolution: int | None = Field(None, ge=4, description="resize images to this many pixels a side")
    val_fraction: float = Field(0.15, ge=0.0, lt=0.9, description="share of the training pool held out")
    test_fraction: float = Field(0.2, gt=0.0, lt=0.9, description="for sets without a test split")
    split_seed: int = Field(0, ge=0, description="fixed across run seeds so every run sees one split")
    train_subset: int | None = Field(None, ge=10, description="cap on training samples (quick runs)")
    num_samples: int = Field(4000, ge=100, description="size of generated sets (mnist1d, synthetic)")
    num_classes: int = Field(10, ge=2, description="classes of the synthetic set")
    augment: bool = Field(False, description="per-sample flip/translate on the device")
    flip: bool = True
    translate: int = Field(2, ge=0, description="max shift in pixels when augment is on")
    normalize: bool = Field(True, description="standardise channels with training-set statistics")
    workers: int = Field(0, ge=0, description="DataLoader worker processes reading a loader's torch Dataset "
                         "(streamed data); 0: the training process reads")


    @field_validator("name", mode="before")
    @classmethod
    def _name_known(cls, v: Any) -> Any:
        return _builtin_or_import_path("data", DataName.__args__, v)

    @model_validator(mode="after")
    def _args_for_plugins(self):
        _args_only_for_import_paths("data", self.name, self.args)
        return self

    @property
    def display_name(self) -> str:
        return self.label or self.name

    @property
    def images(self) -> bool | None:
        """Whether the inputs are images (C x H x W), which image corruptions need: every built-in set but
        mnist1d (1 x 40 signals; sal/training/data.py); None for a loader, whose shape is known once it loads."""
        if is_import_path(self.name):
            return None
        return self.name != "mnist1d"


class ModelSpec(_Strict):
    name: ModelName | Annotated[str, Field(pattern=IMPORT_PATH.pattern)] = Field(
        "cnn", description="a built-in model or a module:function builder (see sal/training/plugins.py)")
    args: dict[str, Any] = Field({}, description="settings passed to a module:function builder")
    width: int = Field(32, ge=1, description="hidden units (mlp) or base channels (cnn, resnet18)")
    depth: int = Field(2, ge=1, description="hidden layers of the mlp")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    weights: str | None = Field(None, description="local path to backbone weights; never downloaded")
    freeze_backbone: bool = False

    @field_validator("name", mode="before")
    @classmethod
    def _name_known(cls, v: Any) -> Any:
        return _builtin_or_import_path("model", ModelName.__args__, v)

    @model_validator(mode="after")
    def _args_for_plugins(self):
        _args_only_for_import_paths("model", self.name, self.args)
        return self

    @model_validator(mode="after")
    def _weights_for_backbones(self):
        # sal's own models (and a user's builder) have no pretrained form: a run would silently train from scratch
        if self.name in BACKBONES:
            return self
        own = "a user's builder (load weights inside it)" if is_import_path(self.name) else "one of sal's own models"
        if self.weights is not None:
            raise ValueError(f"model.weights={self.weights!r} with model.name={self.name!r}: weights load only into "
                             f"the torchvision backbones {list(BACKBONES)}, and {self.name!r} is {own}; fix: remove "
                             "model.weights, or choose one of those backbones")
        if self.freeze_backbone:
            raise ValueError(f"model.freeze_backbone=True with model.name={self.name!r}: only the torchvision "
                             f"backbones {list(BACKBONES)} have a backbone to freeze; fix: remove "
                             "model.freeze_backbone, or choose one of those backbones")
        return self


# ---- optimizers and schedules: built in sal/methods/base.py and sal/methods/schedules.py
class OptimSpec(_Strict):
    name: Literal["adam", "adamw", "adamax", "nadam", "rmsprop", "sgd", "lion"] = "adam"
    lr: float = Field(1e-3, gt=0.0, description="peak learning rate (onecycle's max_lr); lion wants 3-10x less")
    weight_decay: float = Field(0.0, ge=0.0, description="L2 in the gradient; decoupled for adamw and lion")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop only")
    nesterov: bool = Field(False, description="Nesterov momentum; sgd only, needs momentum > 0")
    schedule: Literal["constant", "cosine", "warmup_cosine", "step", "onecycle"] = "constant"
    warmup_epochs: int = Field(5, ge=1, description="warmup_cosine: epochs of linear warm-up before the cosine")
    step_size: int = Field(30, ge=1, description="step: epochs between lr drops")
    gamma: float = Field(0.1, gt=0.0, le=1.0, description="step: factor per drop")
    clip_grad_norm: float | None = Field(None, gt=0.0, description="clip the gradient's global norm; None = off")

    @model_validator(mode="after")
    def _nesterov_needs_sgd_momentum(self):
        if self.nesterov and self.name != "sgd":
            raise ValueError(f"optim.nesterov=True with optim.name={self.name!r}: only sgd has Nesterov momentum; "
                             "fix: set optim.name=sgd or optim.nesterov=false (nadam is Adam with Nesterov)")
        if self.nesterov and self.momentum == 0:
            raise ValueError("optim.nesterov=True with optim.momentum=0: Nesterov needs momentum; "
                             "fix: set optim.momentum to e.g. 0.9 or optim.nesterov=false")
        return self
# ---- end optimizers and schedules


class TrainSpec(_Strict):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    amp: bool | None = Field(None, description="bf16 autocast; None = on for CUDA")
    channels_last: bool | None = Field(None, description="None = on for CUDA conv nets")
    compile: bool = False
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    infer_batches: int = Field(5, ge=1, description="timed test batches for time/infer_ms")
    sharpness_samples: int = Field(2048, ge=0, description="training samples for sharpness/grad_norm; 0: off")
    # packed seeds (sal/training/packed.py): the seeds of one trial or ablation cell trained as one model
    pack: Literal["auto", "on", "off"] = Field("auto", description="auto: pack when the method can and it fits")

    @field_validator("pack", mode="before")
    @classmethod
    def _yaml_on_off(cls, v):
        # YAML 1.1 reads a bare on/off as a boolean: `pack: off` and `--set train.pack=off` mean "off"
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v
    checkpoint_every: int = Field(
        0, ge=0, description="epochs between checkpoints of the run's whole state, from which a killed run "
        "resumes bit for bit (needs a checkpoint directory; see sal/training/checkpoints.py); 0: off")
    intervene_last_epoch: bool = Field(
        False, description="False: no noise, deformation or revert after the last epoch, so the test metrics "
        "describe the weights of the last validation row; True: intervene, then validate again")

    @model_validator(mode="after")
    def _device_known(self):
        ok = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        if not ok:
            raise ValueError(f"train.device={self.device!r} is not a device; fix: use auto, cpu, cuda or cuda:N")
        return self


# ---- analysis: sharpness per epoch, weight trajectory and final weights; off by default
class RunAnalysisSpec(_Strict):
    """Landscape measurements during a run (sal.training.run_analysis), on a fixed seeded subset of the training
    data."""

    sharpness: list[Literal["trace", "eig", "adaptive", "grad_norm"]] = Field(
        default_factory=list, description="measures every `every` epochs: Hessian trace, top eigenvalue, "
        "adaptive sharpness, the training-loss gradient norm (train/grad_norm, on one subset shared by every "
        "cell and seed)")
    every: int = Field(1, ge=1, description="epochs between measurements (the last epoch is always measured)")
    samples: int = Field(512, ge=1, description="training samples the measures use (a fixed seeded subset)")
    probes: int = Field(16, ge=2, description="Rademacher probes of the Hutchinson trace")
    eig_iters: int = Field(20, ge=1, description="power iterations for the top eigenvalue")
    eig_tol: float = Field(1e-3, gt=0.0, description="relative change that stops the power iteration")
    rho: float = Field(0.01, gt=0.0, description="std of the relative weight noise of adaptive sharpness")
    adaptive_samples: int = Field(8, ge=2, description="noise draws of adaptive sharpness")
    trajectory: bool = Field(False, description="keep a (down-projected) weight snapshot every epoch")
    trajectory_dim: int = Field(512, ge=3, description="snapshot size above which weights are projected")
    save_weights: bool = Field(False, description="keep the final weights (logged as the weights.pt artifact)")

    @model_validator(mode="after")
    def _no_repeats(self):
        repeated = sorted({m for m in self.sharpness if self.sharpness.count(m) > 1})
        if repeated:
            raise ValueError(f"analysis.sharpness={self.sharpness!r} names {repeated} twice; fix: list each "
                             "measure once (trace, eig, adaptive, grad_norm)")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.sharpness) or self.trajectory or self.save_weights










# Each method module declares its spec; the run spec's method section is their union (sal.methods).
_METHOD_MODELS = METHOD_SPECS
METHOD_NAMES = tuple(METHOD_SPECS)
MethodSpec = Annotated[Union[tuple(dict.fromkeys(METHOD_SPECS.values()))], Field(discriminator="name")]  # noqa: UP007



MAX_NOISE_STD = 1000.0  # robustness.noise, in input stds


class RobustnessSpec(_Strict):
    """Scores of the final model on perturbed val and test inputs (sal.training.robustness); off by default."""

    noise: list[float] = Field(default_factory=list, description="Gaussian noise stds in units of the input's "
                               "std, e.g. [0.1, 0.25, 0.5, 1.0]")
    corruptions: list[Literal["blur", "contrast", "translate"]] = Field(
        default_factory=list, description="image corruptions (N x C x H x W inputs only)")
    levels: list[int] = Field(default_factory=lambda: [1, 3, 5], description="severities 1-5 of each corruption")

    @field_validator("noise")
    @classmethod
    def _positive_noise(cls, v: list[float]) -> list[float]:
        bad = [s for s in v if not s > 0]
        if bad:
            raise ValueError(f"robustness.noise={v!r} has non-positive stds {bad}; fix: list stds > 0, e.g. "
                             "[0.1, 0.5]")
        # a std's metric (val/robust/noise_1e+16/acc) must be a name MLflow accepts: up to 1e5 it has no '+'
        too_large = [s for s in v if s > MAX_NOISE_STD]
        if too_large:
            raise ValueError(f"robustness.noise={v!r} has stds above {MAX_NOISE_STD:g} input stds {too_large}, where "
                             "nothing of the input is left to classify; fix: list stds up to "
                             f"{MAX_NOISE_STD:g}, e.g. [0.1, 0.5, 1.0]")
        return v

    @field_validator("levels")
    @classmethod
    def _known_levels(cls, v: list[int]) -> list[int]:
        bad = [level for level in v if level not in range(1, 6)]
        if bad or not v:
            raise ValueError(f"robustness.levels={v!r}: severities are 1 to 5; fix: e.g. [1, 3, 5]")
        return v

    @property
    def enabled(self) -> bool:
        return bool(self.noise or self.corruptions)


class RunSpec(_Strict):
    """One training run: method x data set x model x optimizer x seed."""

    seed: int = Field(1, ge=1, description="derives the init, data-order and method generators")
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    optim: OptimSpec = OptimSpec()
    method: MethodSpec = Field(default_factory=lambda: METHOD_SPECS["sal"]())
    train: TrainSpec = TrainSpec()
    analysis: RunAnalysisSpec = RunAnalysisSpec()
    robustness: RobustnessSpec = RobustnessSpec()

    @model_validator(mode="after")
    def _schedule_fits_epochs(self):  # the warm-up must leave epochs for the cosine
        o, epochs = self.optim, self.train.epochs
        if o.schedule == "warmup_cosine" and o.warmup_epochs >= epochs:
            raise ValueError(f"optim.warmup_epochs={o.warmup_epochs} is not below train.epochs={epochs}, so the "
                             "cosine never starts; fix: lower optim.warmup_epochs or raise train.epochs")
        return self

    @model_validator(mode="after")
    def _interventions_can_happen(self):
        # A stress-aware method whose warm-up outlasts training never intervenes: it is the base optimizer
        # under another name, and a report would credit SAL with the base optimizer's result.
        warmup = getattr(self.method, "warmup", None)
        if warmup is not None and warmup >= self.train.epochs:
            raise ValueError(
                f"method.warmup={warmup} is not below train.epochs={self.train.epochs}, so method.name="
                f"{self.method.name!r} would never intervene; fix: lower method.warmup or raise train.epochs")
        return self


# ---------------------------------------------------------------- overrides and loading


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["method.rho=0.001", "data.name=mnist1d"]`` -> ``{"method.rho": 0.001, ...}`` (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError([f"--set {item!r} is not key=value; fix: write e.g. --set method.rho=0.001"])
        try:
            out[key.strip()] = _scalar(raw)
        except yaml.YAMLError as err:
            problem = str(getattr(err, "problem", None) or err).strip()
            raise SpecError([f"--set {key.strip()}={raw!r}: the value is not a YAML literal ({problem}); fix: write "
                             "a number, a word, true/false or a complete list like [1, 2]"]) from None
    return out


def _scalar(raw: str) -> Any:
    """A YAML scalar, with YAML 1.1's gap closed: ``1e-3`` is a float, not a string."""
    value = yaml.safe_load(raw) if raw.strip() else None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted keys in a nested dict (copy). Changing ``method.name`` drops the old method's knobs,
    since they belong to another method (SAM's rho is not SAL's rho)."""
    out = copy.deepcopy(raw)
    new_method = overrides.get("method.name")
    if new_method is not None and (out.get("method") or {}).get("name") != new_method:
        out["method"] = {"name": new_method}
    for key, value in overrides.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            if not isinstance(node[part], dict):
                raise SpecError([f"{key}: {part!r} is a value, not a section; fix: check the dotted key"])
            node = node[part]
        node[parts[-1]] = value
    return out


def _dotted_loc(loc: tuple) -> str:
    parts = [str(p) for p in loc]
    # A discriminated union puts the tag in the location: ("method", "sal", "rho") -> method.rho
    if len(parts) > 2 and parts[0] == "method" and parts[1] in METHOD_NAMES:
        parts.pop(1)
    return ".".join(parts)


def _section_model(section: str, raw: dict) -> type[BaseModel] | None:
    if section == "method":
        return _METHOD_MODELS.get(str((raw.get("method") or {}).get("name", "sal")))
    return {"data": DataSpec, "model": ModelSpec, "optim": OptimSpec, "train": TrainSpec,
            "analysis": RunAnalysisSpec}.get(section)


def _known_keys(dotted: str, raw: dict, top: type[BaseModel]) -> list[str]:
    section, _, field = dotted.partition(".")
    model = (_section_model(section, raw) if top is RunSpec else None) if field else top
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _default_of(dotted: str, raw: dict) -> str | None:
    section, _, field = dotted.partition(".")
    model = _section_model(section, raw)
    if model is None:
        return None
    for name, info in model.model_fields.items():
        if field in (name, info.alias) and info.default is not None:
            return repr(info.default)
    return None


# pydantic names the member of a union that failed as part of the location: ("seeds", "list[int]")
_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none|list\[.*\]|dict\[.*\]|tuple\[.*\]|.*\[.*\])$")
_FORM_WORDS = {"int": "a whole number", "float": "a number", "str": "a text", "bool": "true or false",
               "list[int]": "a list of whole numbers", "list[float]": "a list of numbers",
               "list[str]": "a list of texts"}


def _without_union_member(loc: tuple) -> tuple:
    return tuple(loc[:-1]) if loc and isinstance(loc[-1], str) and _UNION_MEMBER.match(loc[-1]) else tuple(loc)


def _union_forms(err: ValidationError) -> dict[tuple, list[str]]:
    forms: dict[tuple, list[str]] = {}
    for e in err.errors():
        loc = _without_union_member(e["loc"])
        if loc != tuple(e["loc"]):
            forms.setdefault(loc, []).append(_FORM_WORDS.get(e["loc"][-1], e["loc"][-1]))
    return forms


def format_validation_error(err: ValidationError, raw: dict, *, prefix: str = "",
                            top: type[BaseModel] | None = None) -> SpecError:
    """Turn pydantic's errors into lines ``key=value: what is wrong; fix: what to do``."""
    problems, forms = [], _union_forms(err)
    for e in err.errors():
        loc = _without_union_member(e["loc"])
        key = prefix + _dotted_loc(loc)
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        if loc != tuple(e["loc"]):  # one line for all members of a union (seeds: 3 or seeds: [1, 2, 3])
            line = f"{key}={value!r}: must be {' or '.join(forms[loc])}; fix: set {key} to one of those forms"
            if line not in problems:
                problems.append(line)
        elif e["type"] == "missing":  # the input is the whole section (or file): name the key, not the input
            problems.append(f"{key}: missing; fix: set {key} (see the README for the spec's keys)")
        elif e["type"] == "finite_number":
            problems.append(f"{key}={value!r}: must be a finite number; fix: set {key} to a finite value")
        elif e["type"] == "extra_forbidden":
            known = _known_keys(key.removeprefix(prefix), raw, top or RunSpec)
            problems.append(f"{key}: unknown setting; fix: remove it or correct its spelling"
                            + (f" (known here: {', '.join(known)})" if known else ""))
        elif e["type"] == "union_tag_invalid":
            problems.append(f"{key}.name={value.get('name')!r} is not a method; fix: use one of {list(METHOD_NAMES)}")
        elif e["type"] == "literal_error":
            problems.append(f"{key}={value!r}: {msg}; fix: pick one of the listed values")
        elif "fix:" in msg:  # our validators' messages start with the dotted key
            problems.append(prefix + msg)
        else:
            default = _default_of(key.removeprefix(prefix), raw) if top in (None, RunSpec) else None
            hint = f" (default {default})" if default else ""
            problems.append(f"{key}={value!r}: {msg}; fix: set {key} to a valid value{hint}")
    return SpecError(problems)


def validate_run(raw: dict, *, prefix: str = "") -> RunSpec:
    """Validate a nested dict into a RunSpec, raising SpecError with dotted keys."""
    if not isinstance(raw, dict):
        raise SpecError([f"{prefix or 'spec'}: expected a mapping of settings, got {type(raw).__name__}"])
    method = raw.get("method")
    if isinstance(method, dict) and "name" not in method:
        raw = {**raw, "method": {"name": "sal", **method}}  # the RunSpec default method
    try:
        return RunSpec.model_validate(raw)
    except ValidationError as err:
        raise format_validation_error(err, raw, prefix=prefix) from None


DATA_ENV = "SAL_DATA"  # where presets look for data set folders and weights (default ./data)


def expand_data_env(node: Any) -> Any:
    """``${SAL_DATA}`` in strings -> the environment's value, default ``data``."""
    if isinstance(node, str):
        return node.replace("${" + DATA_ENV + "}", os.environ.get(DATA_ENV, "data"))
    if isinstance(node, dict):
        return {k: expand_data_env(v) for k, v in node.items()}
    if isinstance(node, list):
        return [expand_data_env(v) for v in node]
    return node


def check_required_paths(owner: str, paths: list[str]) -> None:
    """Presets name the data they need: say which is missing before anything runs."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise SpecError([f"{owner} needs {p!r}, which does not exist; fix: put the data set (or weights file) "
                         f"there or set {DATA_ENV}=/folder/holding/them" for p in missing])


_ROOTED = ("cifar10", "cifar100", "imagefolder")  # data sets read from data.root (nothing is downloaded)


def missing_data_root(spec: RunSpec) -> str | None:
    """The problem with ``data.root`` of a spec whose data set is read from a folder, or None.

    Checked for every grid cell and study base before anything runs: at train time each run would
    crash on its own and leave a FAILED run behind."""
    data = spec.data
    if data.name not in _ROOTED:
        return None
    if not data.root:
        return f"data.root is not set for data.name={data.name!r}; fix: set data.root=/path/to/the/data"
    if not Path(data.root).expanduser().is_dir():
        return (f"data.root={data.root!r} is not a folder (data.name={data.name!r}); fix: point it at the folder "
                f"holding the data (nothing is downloaded), or set {DATA_ENV} for the presets")
    return None


def load_yaml(path: str | Path, *, kind: str | None = None) -> dict:
    """The top-level mapping of a YAML spec; ``kind`` (run, ablation, study, compare): the command's, and a
    spec of another kind is refused naming the command that runs it."""
    path = Path(path)
    if path.is_dir():
        raise SpecError([f"config file {str(path)!r} is a folder, not a file; fix: pass the path of a YAML spec "
                         "inside it"])
    if not path.is_file():
        raise SpecError([f"config file {str(path)!r} does not exist; fix: pass the path of a YAML spec"])
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise SpecError([f"{path} is not a UTF-8 text file (byte {err.start} is {err.object[err.start]:#04x}); "
                         "fix: pass a YAML spec, saved as UTF-8"]) from None
    try:
        raw = load_unique(text, name=str(path))
    except yaml.YAMLError as err:
        raise SpecError([f"{path}: not valid YAML ({err}); fix: correct the syntax"]) from None
    if raw is None:  # an empty file would otherwise run every default (a 10-seed ablation)
        raise SpecError([f"{path} is empty; fix: write the spec into it (see the README for an example)"])
    if not isinstance(raw, dict):
        raise SpecError([f"{path}: the top level must be a mapping of settings"])
    if kind is not None:
        check_kind(raw, str(path), kind)
    return raw


def read_sweep_spec(path: str | Path, model: type[SpecT], *, kind: str, fields: dict[str, Any] | None = None,
                    prepare: Callable[[dict], None] | None = None) -> SpecT:
    """An ablation, study or compare file as its spec model: read (``load_yaml``), ``${SAL_DATA}`` expanded,
    named after the file unless it names itself, ``prepare`` applied to the raw mapping, the set ``fields``
    put over it (a command line's --seeds, --n-trials), validated into errors that name each key."""
    raw = expand_data_env(load_yaml(path, kind=kind))
    raw.setdefault("name", Path(path).stem)
    if prepare is not None:
        prepare(raw)
    raw.update({k: v for k, v in (fields or {}).items() if v is not None})
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise format_validation_error(err, raw, top=model) from None


def with_base_overrides(spec: SpecT, overrides: dict[str, Any] | None) -> SpecT:
    """A sweep spec with dotted keys set in its ``base`` run spec (``--set``)."""
    return spec.model_copy(update={"base": apply_overrides(spec.base, overrides)}) if overrides else spec


def load_run_spec(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunSpec:
    raw = load_yaml(path, kind="run") if path else {}
    spec = validate_run(apply_overrides(raw, overrides or {}))
    problem = missing_data_root(spec)
    if problem:
        raise SpecError([problem])
    return spec


# ---------------------------------------------------------------- flattening and hashing


def flatten(spec: RunSpec) -> dict[str, Any]:
    """The resolved spec as ``{dotted key: value}``, the names MLflow params and Optuna use."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(spec.model_dump(by_alias=True, mode="json"), "")
    return out


def to_yaml(spec: RunSpec) -> str:
    """The resolved spec as YAML that ``sal train --config`` reads back to the same spec."""
    return yaml.safe_dump(spec.model_dump(by_alias=True, mode="json"), sort_keys=False)


# Where and how a run ran, not what it is: packed or not, checkpointed or not (a resumed run ends bit for bit
# where an uninterrupted one does), streamed samples read by worker processes or not.
HOW_IT_RAN = ("train.device", "train.pack", "train.checkpoint_every", "data.workers")


def configuration(flat: dict[str, Any], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """A flattened spec as the configuration its seeds share: without the seed, without a yoked control's
    copy of its partner's events (derived from another run, not a setting of its own) and without ``drop``."""
    return {k: v for k, v in flat.items() if k != "seed" and k not in drop and not k.startswith(YOKED_EVENTS)}


def config_hash(spec: RunSpec) -> str:
    """Hash of the configuration without where and how it ran: runs of one configuration share it."""
    flat = configuration(flatten(spec), drop=HOW_IT_RAN)
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:12]


def nest(flat: dict[str, Any]) -> dict:
    """Inverse of flatten: ``{"method.rho": 1}`` -> ``{"method": {"rho": 1}}``."""
    return apply_overrides({}, flat)
