"""Model builders: shapes, the three-Linear head, local weights only."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from sal.methods.pdo import last_trainable_layers
from sal.spec.config import ModelSpec, SpecError
from sal.training.models import build_model


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


# ---------------------------------------------------------------- MNIST-1D paper's models (training/mnist1d_models.py)

# The authors' own counts (their notebook prints "Initialized ConvBase model with 5210 parameters", ...)
PAPER_PARAMS = {"mnist1d_linear": 410, "mnist1d_mlp": 15_210, "mnist1d_cnn": 5_210}
MNIST1D = {"name": "mnist1d", "num_samples": 1000}


@pytest.fixture
def one_thread():
    """These nets are too small to gain from a second thread; on a shared 2-core machine it makes them crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_every_built_in_name_is_admitted_by_the_spec():
    from sal.spec.config import ModelName
    from sal.training.mnist1d_models import MNIST1D_MODELS

    assert set(MNIST1D_MODELS) <= set(ModelName.__args__)


@pytest.mark.parametrize("name", PAPER_PARAMS)
def test_mnist1d_models_have_the_authors_parameter_counts_and_give_logits(name):
    model = build_model(ModelSpec(name=name), (1, 40), 10)
    assert sum(p.numel() for p in model.parameters()) == PAPER_PARAMS[name]
    assert model(torch.randn(3, 1, 40)).shape == (3, 10)


def test_mnist1d_layers_are_the_authors():
    cnn = build_model(ModelSpec(name="mnist1d_cnn"), (1, 40), 10)
    shapes = {k: tuple(v.shape) for k, v in cnn.state_dict().items()}
    assert shapes == {"conv1.weight": (25, 1, 5), "conv1.bias": (25,), "conv2.weight": (25, 25, 3),
                      "conv2.bias": (25,), "conv3.weight": (25, 25, 3), "conv3.bias": (25,),
                      "linear.weight": (10, 125), "linear.bias": (10,)}
    lengths, h = [], torch.randn(2, 1, 40)
    for layer in list(cnn)[:6:2]:  # the three convolutions halve the length: 40 -> 19 -> 10 -> 5
        h = layer(h)
        lengths.append(h.shape[-1])
    assert lengths == [19, 10, 5]
    mlp = build_model(ModelSpec(name="mnist1d_mlp"), (1, 40), 10)
    assert [(m.in_features, m.out_features) for m in mlp.modules() if isinstance(m, nn.Linear)] == \
        [(40, 100), (100, 100), (100, 10)]
    x = torch.randn(4, 1, 40)  # the residual middle layer: h + relu(W2 h)
    h = mlp.linear1(x.flatten(1)).relu()
    assert torch.equal(mlp(x), mlp.linear3(h + mlp.linear2(h).relu()))


def test_mnist1d_cnn_wants_sequences():
    with pytest.raises(SpecError, match="needs sequences"):
        build_model(ModelSpec(name="mnist1d_cnn"), (1, 8, 8), 10)


@pytest.mark.training
def test_the_paper_preset_trains_the_whole_split_and_learns(one_thread):
    """configs/mnist1d_paper.yaml: 4000/1000 samples, nothing held out; a few epochs already learn."""
    from pathlib import Path

    from sal.spec.config import load_run_spec
    from sal.training.data import load_data
    from sal.training.run import train

    preset = Path(__file__).resolve().parents[1] / "configs" / "mnist1d_paper.yaml"
    spec = load_run_spec(preset, {"train.epochs": 4, "train.sharpness_samples": 0})
    settings = (spec.model.name, spec.method.name, spec.optim.name, spec.optim.lr, spec.train.batch_size)
    assert settings == ("mnist1d_cnn", "base", "adam", 0.01, 100)
    data = load_data(spec.data)
    assert (len(data.train), len(data.val), len(data.test)) == (4000, 0, 1000)
    result = train(spec, data=data)
    assert result.ok and "val/acc" not in result.history[-1]
    assert result.final["test/acc"] > 0.6  # 4 of the paper's 150 epochs (chance: 0.1)


@pytest.mark.parametrize("name", ["mnist1d_cnn", "mnist1d_mlp"])
def test_mnist1d_models_pack_exactly(name, one_thread):
    """Packed seeds (the CNN on the grouped forward, the residual MLP on vmap) equal seeds trained alone."""
    from sal.training.packed import PackedRun
    from tests.helpers import assert_same_history, tiny_spec, train_alone

    train = {"epochs": 3, "batch_size": 100, "sharpness_samples": 0, "infer_batches": 1}
    specs = [tiny_spec(data=MNIST1D, model={"name": name}, optim={"lr": 0.01}, train=train, seed=s) for s in (2, 5)]
    packed = PackedRun(specs)
    assert (packed.grouped is not None) == (name == "mnist1d_cnn")
    while not packed.done:
        packed.step()
    for packed_result, spec in zip(packed.finish(), specs):
        assert_same_history(packed_result, train_alone(spec)[0])


def test_mnist1d_cnn_resumes_bit_for_bit_and_has_its_own_identity(tmp_path, one_thread):
    from sal.spec.config import config_hash
    from sal.training.run import TrainingRun
    from tests.helpers import assert_same, state_at_end, tiny_spec

    spec = tiny_spec(data=MNIST1D, model={"name": "mnist1d_cnn"}, train={"epochs": 4, "checkpoint_every": 2})
    killed = TrainingRun(spec, checkpoint_dir=tmp_path)
    for _ in range(3):
        killed.step()
    del killed
    resumed = TrainingRun(spec, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 2
    assert_same(state_at_end(resumed), state_at_end(TrainingRun(spec)))
    other = tiny_spec(data=MNIST1D, model={"name": "mnist1d_mlp"}, train={"epochs": 4, "checkpoint_every": 2})
    assert config_hash(other) != config_hash(spec)
