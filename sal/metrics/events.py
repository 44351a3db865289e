"""What a stress-aware run did, read from its per-epoch history: the epochs of each intervention, a
signature two runs share exactly when they intervened alike, and whether its noise could change a forward
pass at all (the compute dtype's resolution at the weights' typical magnitude). Pure functions."""

from __future__ import annotations

import hashlib
import math

from ..core.names import EVENT_NOISE, METRIC_NOISE_STD, METRIC_NOISE_STD_MAX, TAG_COMPUTE_DTYPE, TAG_EVENTS

__all__ = ["EVENTS", "event_epochs", "signature", "resolution", "EVENTS_TAG", "DTYPE_TAG", "NOISE_STD_MAX",
           "MEDIAN_ABS_WEIGHT"]

EVENTS = ("noise", "deform", "revert")  # per-epoch flags sal/noise, sal/deform, sal/revert (the contract)
EVENTS_TAG = TAG_EVENTS  # MLflow tag: the run's signature()
DTYPE_TAG = TAG_COMPUTE_DTYPE  # MLflow tag: the dtype of the forward pass (bfloat16 under autocast)
NOISE_STD_MAX = METRIC_NOISE_STD_MAX  # final metric: the largest noise std the run injected
MEDIAN_ABS_WEIGHT = "model/median_abs_weight"  # final metric: median |w| over the trainable weights

_MANTISSA_BITS = {"float32": 23, "bfloat16": 7, "float16": 10, "float64": 52}
_SHORT = 2000  # longer signatures are stored as a hash (MLflow tags are capped; equality is all we need)


def event_epochs(history: list[dict[str, float]]) -> dict[str, list[int]]:
    """{"noise": [epochs], "deform": [...], "revert": [...]} of a run's history rows."""
    return {e: [int(row["epoch"]) for row in history if row.get(f"sal/{e}")] for e in EVENTS}


def signature(history: list[dict[str, float]]) -> str:
    """``noise=16,18;deform=18;revert=``: equal for two runs exactly when they made the same interventions
    at the same epochs (with SAL's noise sizes, which follow from the stress, the same training)."""
    epochs = event_epochs(history)
    stds = [f"{row[METRIC_NOISE_STD]:.6g}" for row in history if row.get(EVENT_NOISE) and METRIC_NOISE_STD in row]
    text = ";".join(f"{e}={','.join(map(str, epochs[e]))}" for e in EVENTS) + (f";std={','.join(stds)}" if stds
                                                                                else "")
    return text if len(text) <= _SHORT else "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def resolution(dtype: str, magnitude: float) -> float:
    """The spacing of ``dtype``'s numbers at ``magnitude`` (one unit in the last place): a noise std well
    below it is rounded away when the weight is cast to that dtype for the forward pass."""
    if not magnitude or not math.isfinite(magnitude) or dtype not in _MANTISSA_BITS:
        return math.nan
    return 2.0 ** (math.floor(math.log2(abs(magnitude))) - _MANTISSA_BITS[dtype])
