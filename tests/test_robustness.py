"""Scores on perturbed inputs: the perturbations themselves, the same perturbed inputs for every run, the
metrics a run logs, and the pessimistic objective over perturbations and seeds."""

from __future__ import annotations

import contextlib

import pytest
import torch

from sal.core.rng import derive_seed
from sal.metrics.metricnames import unknown_metric
from sal.spec.config import SpecError, validate_run
from sal.sweeps.objectives import trial_value
from sal.training.data import load_data
from sal.training.models import build_model
from sal.training.robustness import CHUNK, perturb, perturbations, robust_scores
from sal.training.run import train
from tests.helpers import tiny_spec


def test_translation_shifts_right_and_down_and_contrast_keeps_each_images_mean():
    x = torch.arange(2 * 1 * 20 * 20, dtype=torch.float32).reshape(2, 1, 20, 20)
    shifted = perturb(x, "translate", 1, unit=1.0, generator=None)  # 5% of 20 pixels: 1 pixel
    assert torch.equal(shifted[..., 1:, 1:], x[..., :19, :19])
    assert shifted[..., 0, :].abs().sum() == 0 and shifted[..., :, 0].abs().sum() == 0
    low = perturb(x, "contrast", 5, unit=1.0, generator=None)
    assert torch.allclose(low.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)))
    assert torch.allclose(low.std(dim=(1, 2, 3)), 0.2 * x.std(dim=(1, 2, 3)))
    blurred = perturb(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)), "blur", 5, unit=1.0,
                      generator=None)
    assert blurred.shape == (2, 3, 16, 16)


def test_noise_is_the_level_times_the_unit_and_corruptions_need_images():
    x = torch.zeros(20000, 4)
    noisy = perturb(x, "noise", 0.5, unit=2.0, generator=torch.Generator().manual_seed(1))
    assert noisy.std().item() == pytest.approx(1.0, rel=0.02)
    assert perturbations([0.1], ["blur"], [1, 3], image=False) == [("noise", 0.1)]
    assert perturbations([0.1], ["blur"], [1, 3], image=True) == [("noise", 0.1), ("blur", 1.0), ("blur", 3.0)]


def test_a_run_scores_the_same_perturbed_inputs_as_a_hand_recomputation():
    """Digits (8 x 8 images): noise and corruptions on val and test; each noise accuracy recomputed by hand
    from the saved weights with the documented generator, and the summaries are the mean and the worst."""
    spec = tiny_spec(data={"name": "digits"}, model={"name": "mlp", "width": 16},
                     train={"epochs": 3, "batch_size": 64, "sharpness_samples": 0},
                     robustness={"noise": [0.25, 1.0], "corruptions": ["blur", "translate"], "levels": [2]},
                     analysis={"save_weights": True})
    result = train(spec)
    f = result.final
    names = ["noise_0.25", "noise_1", "blur_2", "translate_2"]
    for split in ("val", "test"):
        scores = [f[f"{split}/robust/{n}/acc"] for n in names]
        assert f[f"{split}/robust/mean/acc"] == pytest.approx(sum(scores) / 4)
        assert f[f"{split}/robust/worst/acc"] == min(scores)
    assert f["test/robust/noise_1/acc"] < f["test/acc"]  # noise of one input std costs accuracy
    assert f["time/robustness_s"] > 0

    data = load_data(spec.data, torch.device("cpu"))
    model = build_model(spec.model, data.in_shape, data.num_classes)
    model.load_state_dict(result.analysis["weights"])
    model.eval()
    unit = data.train.x[:4096].float().std().item()
    g = torch.Generator().manual_seed(derive_seed(0, "robust:test:noise:1.0"))
    correct = 0
    with torch.no_grad():
        for start in range(0, len(data.test), CHUNK):
            x, y = data.test.x[start:start + CHUNK], data.test.y[start:start + CHUNK]
            correct += (model(x + unit * torch.randn(x.shape, generator=g)).argmax(1) == y).sum().item()
    assert f["test/robust/noise_1/acc"] == pytest.approx(correct / len(data.test))

    # the draws belong to the perturbation, not to the run: scoring the model again gives the same number
    again = robust_scores(model, {"test": lambda: data.test.batches(CHUNK)}, [("noise", 1.0)], unit=unit,
                          autocast=contextlib.nullcontext)
    assert again["test/robust/noise_1/acc"] == f["test/robust/noise_1/acc"]


def test_the_pessimistic_objective_is_the_worst_over_perturbations_and_seeds():
    assert unknown_metric("val/robust/worst/acc") is None and unknown_metric("test/robust/noise_0.5/acc") is None
    per_seed_worst = [0.71, 0.64, 0.69]  # each seed's val/robust/worst/acc
    assert trial_value("worst", per_seed_worst, [False] * 3, metric="val/robust/worst/acc", maximize=True) == 0.64


@pytest.mark.parametrize("section, says", [({"noise": [0.0]}, "robustness.noise"),
                                           ({"levels": [7]}, "robustness.levels"),
                                           ({"corruptions": ["fog"]}, "corruptions")])
def test_bad_robustness_settings_name_the_key(section, says):
    with pytest.raises(SpecError, match=says):
        validate_run({"robustness": section})
