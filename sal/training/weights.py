"""A torchvision backbone's weights from a file, as torchvision itself would load them (old DenseNet key
names included): the models' side of checkpoints sal never downloads (``model.weights``)."""

from __future__ import annotations

import re
from pathlib import Path

from ..core.spec_base import SpecError

__all__ = ["load_backbone_weights", "rename_old_densenet_keys"]

_OLD_DENSENET = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def rename_old_densenet_keys(state: dict) -> dict:
    """``denselayer1.norm.1.weight`` -> ``denselayer1.norm1.weight``, as torchvision does for its old files."""
    out = {}
    for key, value in state.items():
        m = _OLD_DENSENET.match(key)
        out[m.group(1) + m.group(2) if m else key] = value
    return out


def load_backbone_weights(name: str, path: str | Path, net=None):
    """A torchvision ``name`` model with the state dict of ``path`` (old DenseNet keys renamed); SpecError
    when the file is not a state dict of that architecture."""
    import torch
    import torchvision

    net = net if net is not None else getattr(torchvision.models, name)(weights=None)
    try:
        state = torch.load(Path(path).expanduser(), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - a pickle of anything, a truncated download
        raise SpecError([f"model.weights={str(path)!r} is not a loadable state dict ({type(err).__name__}); fix: "
                         f"save torchvision's {name} state_dict() there"]) from None
    if name.startswith("densenet"):
        state = rename_old_densenet_keys(state)
    try:
        net.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0][:200]
        raise SpecError([f"model.weights={str(path)!r} does not fit torchvision's {name} ({first}); fix: save the "
                         f"state dict of {name} itself"]) from None
    return net
