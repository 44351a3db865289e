"""Model builders: CPU-scale MLP and CNN, a CIFAR-style ResNet-18, and the paper's torchvision backbones
with its head (global average pooling -> 512 -> dropout 0.5 -> 128 -> classes).

The small nets also end in three Linear layers, so SAL's "last three trainable layers" mean the same
kind of thing (the classifier head) on every model. Weights are only ever read from a local file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..spec.config import BACKBONES, ModelSpec, SpecError, is_import_path
from .mnist1d_models import MNIST1D_MODELS
from .plugins import build_plugin_model

__all__ = ["build_model", "BACKBONES"]


def _head(features: int, hidden: int, bottleneck: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Linear(hidden, bottleneck), nn.ReLU(inplace=True),
        nn.Linear(bottleneck, classes),
    )


def _mlp(spec: ModelSpec, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    n_in = 1
    for d in in_shape:
        n_in *= d
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(spec.depth - 1):
        layers += [nn.Linear(n_in if i == 0 else spec.width, spec.width), nn.ReLU(inplace=True)]
    body_out = spec.width if spec.depth > 1 else n_in
    return nn.Sequential(*layers, _head(body_out, spec.width, max(spec.width // 2, classes), classes, spec.dropout))


def _cnn(spec: ModelSpec, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """Three conv blocks (1-D for sequences, 2-D for images), global pooling, three-layer head."""
    one_d = len(in_shape) == 2
    conv, bn, pool, gap = ((nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d) if one_d else
                           (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d))
    w, c = spec.width, in_shape[0]

    def block(i: int, o: int, downsample: bool) -> list[nn.Module]:
        out = [conv(i, o, 3, padding=1, bias=False), bn(o), nn.ReLU(inplace=True)]
        return out + [pool(2)] if downsample else out

    return nn.Sequential(
        *block(c, w, False), *block(w, 2 * w, True), *block(2 * w, 4 * w, True),
        gap(1), nn.Flatten(), _head(4 * w, 4 * w, 2 * w, classes, spec.dropout),
    )


class _BasicBlock(nn.Module):
    def __init__(self, i: int, o: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(i, o, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(o)
        self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(o)
        self.shortcut = nn.Sequential()
        if stride != 1 or i != o:
            self.shortcut = nn.Sequential(nn.Conv2d(i, o, 1, stride, bias=False), nn.BatchNorm2d(o))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def _resnet18(spec: ModelSpec, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """CIFAR-style ResNet-18 (3x3 stem, no max-pool), base width ``spec.width`` (64 is the standard)."""
    w = spec.width
    layers: list[nn.Module] = [nn.Conv2d(in_shape[0], w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
    i = w
    for stage, o in enumerate((w, 2 * w, 4 * w, 8 * w)):
        layers += [_BasicBlock(i, o, 1 if stage == 0 else 2), _BasicBlock(o, o, 1)]
        i = o
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(i, classes))


class _ToRGB(nn.Module):
    """ImageNet backbones expect three channels; grey images are repeated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def _backbone(name: str, weights: str | None) -> tuple[nn.Module, int]:
    import torchvision

    net = getattr(torchvision.models, name)(weights=None)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise SpecError([f"model.weights={weights!r} is not a file; fix: point it at a local torchvision "
                             f"{name} state dict (nothing is downloaded)"])
        from .weights import load_backbone_weights  # old DenseNet key names load too, as in torchvision

        load_backbone_weights(name, path, net)
    if name.startswith("densenet"):
        feats = nn.Sequential(net.features, nn.ReLU(inplace=True))
        return feats, net.classifier.in_features
    if name == "resnet50":
        return nn.Sequential(*list(net.children())[:-2]), net.fc.in_features
    # mobilenet_v2, efficientnet_b2: .features then a classifier whose last layer is Linear
    return net.features, net.classifier[-1].in_features


def _paper_model(spec: ModelSpec, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    features, n = _backbone(spec.name, spec.weights)
    if spec.freeze_backbone:
        features.requires_grad_(False)
    dropout = spec.dropout or 0.5  # the paper's head drops half
    return nn.Sequential(_ToRGB(), features, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         _head(n, 512, 128, classes, dropout))


def build_model(spec: ModelSpec, in_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A fresh model; initialised from the global RNG, so callers seed it (train() does)."""
    if is_import_path(spec.name):  # a user's module:function builder
        return build_plugin_model(spec, in_shape, num_classes)
    if spec.name in BACKBONES:
        if len(in_shape) != 3:
            raise SpecError([f"model.name={spec.name!r} needs images; fix: use model.name=cnn or mlp for "
                             "sequence data"])
        return _paper_model(spec, in_shape, num_classes)
    if spec.name == "resnet18" and len(in_shape) != 3:
        raise SpecError(["model.name='resnet18' needs images; fix: use model.name=cnn or mlp for sequences"])
    builders = {"mlp": _mlp, "cnn": _cnn, "resnet18": _resnet18, **MNIST1D_MODELS}
    return builders[spec.name](spec, in_shape, num_classes)
