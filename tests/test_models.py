"""Model builders: shapes, the three-Linear head, local weights only."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from sal.config import ModelSpec, SpecError
from sal.models import build_model
from sal.pdo import last_trainable_layers


@pytest.mark.parametrize("name,shape", [("mlp", (1, 8, 8)), ("cnn", (1, 8, 8)), ("cnn", (1, 40)),
                                        ("resnet18", (3, 16, 16))])
def test_small_models_give_logits(name, shape):
    model = build_model(ModelSpec(name=name, width=8), shape, 10)
    assert model(torch.randn(3, *shape)).shape == (3, 10)


def test_small_models_end_in_three_linear_layers():
    for name in ("mlp", "cnn"):
        model = build_model(ModelSpec(name=name, width=8), (1, 8, 8), 10)
        assert all(isinstance(m, nn.Linear) for m in last_trainable_layers(model, 3))


def test_paper_backbone_with_head_and_local_weights(tmp_path):
    reference = torchvision.models.mobilenet_v2(weights=None)
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(reference.state_dict(), path)
    model = build_model(ModelSpec(name="mobilenet_v2", weights=str(path)), (1, 32, 32), 7)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)  # grey images are repeated to RGB
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert torch.equal(first_conv.weight, reference.features[0][0].weight)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in head] == [(1280, 512), (512, 128), (128, 7)]
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.modules())


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="model.weights"):
        build_model(ModelSpec(name="resnet50", weights=str(tmp_path / "none.pth")), (3, 32, 32), 10)
