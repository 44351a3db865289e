"""``fidelity: paper``: the SAL paper's own setup on a switch, and the list of ways a run departs from it.

The paper (Sec. 3.1) trains on the whole training split with no validation hold-out, feeds inputs in
[0, 1] without standardisation and computes in float32 (TensorFlow/Keras on one RTX 3060). sal's own
defaults differ on all three (a validation split for selection and the stress signal, standardised
inputs, bf16 autocast on CUDA). Where sal has no port of the paper's model (Keras' ResNet50V2, the
degraded regime's backbone), it substitutes torchvision's ResNet-50 (v1) and says so.
"""

from __future__ import annotations

import pandas as pd

from ..core.names import TAG_COMPUTE_DTYPE
from .config import SpecError

__all__ = ["FIDELITIES", "PAPER_SETUP", "PAPER_METRIC", "fidelity_overrides", "paper_departures"]

FIDELITIES = ("sal", "paper")
PAPER_METRIC = "test/acc"  # what a paper-fidelity grid records per trial (there is no validation split)
PAPER_SETUP = {"data.val_fraction": 0.0, "data.normalize": False, "train.amp": False}
# (data set label, sal model) -> what the paper ran instead; the degraded regime (Sec. 3.1)
_SUBSTITUTES = {("corel1k", "resnet50"): "Keras' ResNet50V2, which torchvision does not have (sal runs torchvision's "
                                         "ResNet-50 v1)"}


def fidelity_overrides(fidelity: str, metric: str) -> dict:
    """The base overrides of a fidelity; ``metric``: the value a grid records per trial (it must exist)."""
    if fidelity == "sal":
        return {}
    if metric.startswith("val/"):
        raise SpecError([f"metric={metric!r} with fidelity: paper: the paper's setup has no validation split (it "
                         "trains on the whole training split); fix: set metric: test/acc (an ablation selects "
                         "nothing by it) or drop fidelity: paper"])
    return dict(PAPER_SETUP)


def _truthy(value) -> bool:
    return str(value).lower() in ("true", "1")


def paper_departures(runs: pd.DataFrame) -> list[str]:
    """How the runs' setup differs from the paper's: one sentence per departure (always the framework)."""
    out = ["PyTorch and torchvision's ImageNet weights instead of TensorFlow/Keras and Keras' weights; several "
           "seeds per cell instead of one run."]

    def share(col: str, test) -> float:
        return float(runs[col].map(test).mean()) if col in runs and len(runs) else 0.0

    held = runs["params.data.val_fraction"].astype(float) if "params.data.val_fraction" in runs else pd.Series()
    if len(held) and (held > 0).any():
        out.append(f"a validation hold-out of {held.max():.0%} of the training split (the paper trains on all of it); "
                   "`fidelity: paper` removes it")
    if share("params.data.normalize", _truthy) > 0:
        out.append("inputs standardised with training-set statistics (the paper: inputs in [0, 1]); `fidelity: "
                   "paper` turns it off")
    if share(f"tags.{TAG_COMPUTE_DTYPE}", lambda v: v == "bfloat16") > 0:
        out.append("bf16 autocast (the paper computes in float32); `fidelity: paper` sets train.amp=false")
    if {"tags.dataset", "params.model.name"} <= set(runs.columns):
        for (dataset, model), sub in _SUBSTITUTES.items():
            if ((runs["tags.dataset"] == dataset) & (runs["params.model.name"] == model)).any():
                out.append(f"{dataset}: the paper used {sub}")
    return out
