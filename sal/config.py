"""Pydantic models of every run spec, YAML loading, dotted overrides and readable validation errors.

One dotted key names a setting everywhere (YAML, ``--set key=value``, Optuna params, ablation axes,
MLflow params): ``seed``, ``data.name``, ``optim.lr``, ``method.rho``, ``train.epochs``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "SpecError",
    "DataSpec",
    "ModelSpec",
    "OptimSpec",
    "TrainSpec",
    "BaseMethodSpec",
    "SALSpec",
    "RandomTriggerSpec",
    "ShrinkPerturbSpec",
    "SAMSpec",
    "SWASpec",
    "RollingBallSpec",
    "LBFGSSpec",
    "RunSpec",
    "METHOD_NAMES",
    "parse_overrides",
    "apply_overrides",
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
]


class SpecError(ValueError):
    """A spec failed validation. ``str(err)`` has one line per problem: dotted key, bad value, fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class _Strict(BaseModel):
    # Unknown keys are typos far more often than intent: reject them.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DataSpec(_Strict):
    name: Literal["digits", "mnist1d", "cifar10", "cifar100", "imagefolder", "synthetic"] = "digits"
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


    @property
    def display_name(self) -> str:
        return self.label or self.name


class ModelSpec(_Strict):
    name: Literal[
        "mlp", "cnn", "resnet18", "densenet121", "densenet201", "resnet50", "mobilenet_v2", "efficientnet_b2"
    ] = "cnn"
    width: int = Field(32, ge=1, description="hidden units (mlp) or base channels (cnn, resnet18)")
    depth: int = Field(2, ge=1, description="hidden layers of the mlp")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    weights: str | None = Field(None, description="local path to backbone weights; never downloaded")
    freeze_backbone: bool = False


class OptimSpec(_Strict):
    name: Literal["adam", "adamax", "nadam", "rmsprop", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop only")
    schedule: Literal["constant", "cosine"] = "constant"


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

    @model_validator(mode="after")
    def _device_known(self):
        ok = self.device in ("auto", "cpu", "cuda", "mps") or self.device.startswith("cuda:")
        if not ok:
            raise ValueError(f"train.device={self.device!r} is not a device; fix: use auto, cpu, cuda or cuda:N")
        return self


class BaseMethodSpec(_Strict):
    """The base optimizer alone: the reference every method is compared with."""

    name: Literal["base"] = "base"


class SALSpec(_Strict):
    """Stress-Aware Learning; defaults are the paper's (Sec. 3.1). The ablations share these knobs."""

    name: Literal["sal", "sal_noise_only", "sal_deform_only", "sal_no_recovery"] = "sal"
    rho: float = Field(0.0005, ge=0.0, description="stress decay on progress")
    theta: float = Field(0.005, ge=0.0, description="stress growth on stagnation")
    s_max: float = Field(1.0, gt=0.0, description="stress cap")
    s_noise: float = Field(0.005, ge=0.0, description="noise threshold (noise when S > s_noise)")
    s_yield: float = Field(0.01, gt=0.0, description="yield threshold (deformation when S >= s_yield)")
    delta: float = Field(1e-7, ge=0.0, description="base noise std (Eq. 2)")
    lambda_: float = Field(1e-5, ge=0.0, alias="lambda", description="stress-to-noise gain (Eq. 2)")
    sigma_y: float = Field(0.02, ge=0.0, description="std of the deformation noise (Eq. 3)")
    shrink: float = Field(0.9, gt=0.0, le=1.0, description="factor on deformed weights (Eq. 3)")
    deform_layers: int = Field(3, ge=1, description="last trainable layers deformed")
    warmup: int = Field(15, ge=0, description="epochs before any intervention")
    eps_loss: float = Field(0.0, ge=0.0, description="loss drop that counts as progress")
    eps_acc: float = Field(0.0, ge=0.0, description="accuracy gain that counts as progress")
    yield_strict: bool = Field(False, description="True: deform at S > s_yield (Algorithm 1)")
    stress_in_warmup: bool = Field(True, description="False: hold stress at 0 during warm-up")
    signal: Literal["train", "val"] = Field("train", description="metrics that drive the stress")
    recovery: bool = Field(True, description="revert a deformation that brings no progress")
    recovery_patience: int = Field(3, ge=1, description="epochs a deformation has to bring progress")
    revert_scope: Literal["model", "deformed"] = Field("model", description="weights restored on revert")

    @model_validator(mode="after")
    def _thresholds_ordered(self):
        if self.s_noise > self.s_yield:
            raise ValueError(
                f"method.s_noise={self.s_noise} is above method.s_yield={self.s_yield}, so noise could never "
                "precede deformation; fix: lower method.s_noise or raise method.s_yield"
            )
        if self.s_yield > self.s_max:
            raise ValueError(
                f"method.s_yield={self.s_yield} is above method.s_max={self.s_max}, so stress never yields; "
                "fix: lower method.s_yield or raise method.s_max"
            )
        return self


class RandomTriggerSpec(SALSpec):
    """Control: SAL's interventions at random epochs instead of when stress says so."""

    name: Literal["random_trigger"] = "random_trigger"  # type: ignore[assignment]
    trigger_prob: float = Field(0.1, gt=0.0, le=1.0, description="chance per epoch of an intervention")
    trigger_count: int | None = Field(None, ge=0, description="exactly this many, at epochs drawn after the "
                                      "warm-up (e.g. as many as a reference SAL run had); overrides trigger_prob")


class ShrinkPerturbSpec(_Strict):
    """Control: SAL's deformation 0.9 * w + N(0, sigma_y) on a fixed schedule, no stress, no noise."""

    name: Literal["shrink_perturb"] = "shrink_perturb"
    every: int = Field(5, ge=1, description="epochs between deformations")
    shrink: float = Field(0.9, gt=0.0, le=1.0)
    sigma_y: float = Field(0.02, ge=0.0)
    deform_layers: int = Field(3, ge=1)
    warmup: int = Field(15, ge=0)


class SAMSpec(_Strict):
    name: Literal["sam"] = "sam"
    rho: float = Field(0.05, gt=0.0, description="radius of the sharpness neighbourhood")
    adaptive: bool = Field(False, description="ASAM: scale the ascent by |w|")
    eta: float = Field(0.0, ge=0.0, description="ASAM's offset in T = |w| + eta")


class SWASpec(_Strict):
    name: Literal["swa"] = "swa"
    swa_start: float = Field(0.75, ge=0.0, lt=1.0, description="fraction of epochs before averaging")
    swa_lr: float | None = Field(None, gt=0.0, description="SWALR target; None = the base lr")
    anneal_epochs: int = Field(1, ge=1)


class RollingBallSpec(_Strict):
    name: Literal["rolling_ball"] = "rolling_ball"
    radius: float = Field(0.01, ge=0.0, description="ball radius r; r -> 0 is gradient descent")
    inner_steps: int = Field(2, ge=0, description="K projection steps back onto the loss graph")
    inner_lr: float = Field(1.0, gt=0.0, le=1.0, description="gamma of the (Gauss-Newton) projection steps")


class LBFGSSpec(_Strict):
    """Full-batch L-BFGS with a strong-Wolfe line search; replaces the base optimizer (optim.* unused)."""

    name: Literal["lbfgs"] = "lbfgs"
    lr: float = Field(1.0, gt=0.0, description="initial step of the line search")
    history_size: int = Field(20, ge=1)
    max_iter: int = Field(20, ge=1, description="L-BFGS iterations per epoch on the full batch")


MethodSpec = Annotated[
    BaseMethodSpec | SALSpec | RandomTriggerSpec | ShrinkPerturbSpec | SAMSpec | SWASpec | RollingBallSpec | LBFGSSpec,
    Field(discriminator="name"),
]
_METHOD_MODELS = {
    "base": BaseMethodSpec, "sal": SALSpec, "sal_noise_only": SALSpec, "sal_deform_only": SALSpec,
    "sal_no_recovery": SALSpec, "random_trigger": RandomTriggerSpec, "shrink_perturb": ShrinkPerturbSpec,
    "sam": SAMSpec, "swa": SWASpec, "rolling_ball": RollingBallSpec, "lbfgs": LBFGSSpec,
}
METHOD_NAMES = tuple(_METHOD_MODELS)


class RunSpec(_Strict):
    """One training run: method x data set x model x optimizer x seed."""

    seed: int = Field(1, ge=1, description="derives the init, data-order and method generators")
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    optim: OptimSpec = OptimSpec()
    method: MethodSpec = SALSpec()
    train: TrainSpec = TrainSpec()


# ---------------------------------------------------------------- overrides and loading


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["method.rho=0.001", "data.name=mnist1d"]`` -> ``{"method.rho": 0.001, ...}`` (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise SpecError([f"--set {item!r} is not key=value; fix: write e.g. --set method.rho=0.001"])
        out[key.strip()] = _scalar(raw)
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
    return {"data": DataSpec, "model": ModelSpec, "optim": OptimSpec, "train": TrainSpec}.get(section)


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


def format_validation_error(err: ValidationError, raw: dict, *, prefix: str = "",
                            top: type[BaseModel] | None = None) -> SpecError:
    """Turn pydantic's errors into lines ``key=value: what is wrong; fix: what to do``."""
    problems = []
    for e in err.errors():
        key = prefix + _dotted_loc(e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            known = _known_keys(key.removeprefix(prefix), raw, top or RunSpec)
            problems.append(f"{key}: unknown setting; fix: remove it or correct its spelling"
                            + (f" (known here: {', '.join(known)})" if known else ""))
        elif e["type"] == "union_tag_invalid":
            problems.append(f"{key}.name={value.get('name')!r} is not a method; fix: use one of {list(METHOD_NAMES)}")
        elif e["type"] == "literal_error":
            problems.append(f"{key}={value!r}: {msg}; fix: pick one of the listed values")
        elif "fix:" in msg:
            problems.append(msg)
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


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SpecError([f"config file {str(path)!r} does not exist; fix: pass the path of a YAML spec"])
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SpecError([f"{path}: not valid YAML ({err}); fix: correct the syntax"]) from None
    if not isinstance(raw, dict):
        raise SpecError([f"{path}: the top level must be a mapping of settings"])
    return raw


def load_run_spec(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunSpec:
    raw = load_yaml(path) if path else {}
    return validate_run(apply_overrides(raw, overrides or {}))


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


def config_hash(spec: RunSpec) -> str:
    """Hash of everything but the seed and where it ran: runs of one configuration share it."""
    flat = {k: v for k, v in flatten(spec).items() if k != "seed" and k != "train.device"}
    return hashlib.sha256(json.dumps(flat, sort_keys=True).encode()).hexdigest()[:12]


def nest(flat: dict[str, Any]) -> dict:
    """Inverse of flatten: ``{"method.rho": 1}`` -> ``{"method": {"rho": 1}}``."""
    return apply_overrides({}, flat)
