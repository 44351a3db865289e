"""train(spec) -> Result: determinism, pairing across methods, contract names, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from sal.core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT, METRIC_STRESS
from sal.training.run import PruneRun, train
from tests.helpers import tiny_spec

EPOCH_KEYS = {"epoch", "train/loss", "train/acc", "val/loss", "val/acc", METRIC_STRESS, EVENT_NOISE, EVENT_DEFORM,
              EVENT_REVERT, "time/epoch_s"}
FINAL_KEYS = {"test/acc", "test/top5", "test/loss", "time/train_s", "mem/peak_mb", "time/infer_ms",
              "sharpness/grad_norm"}


def _without_times(history):
    return [{k: v for k, v in row.items() if not k.startswith("time/")} for row in history]


def test_same_seed_same_history():
    spec = tiny_spec(method={"name": "sal", "warmup": 1, "theta": 0.01})
    a, b = train(spec), train(spec)
    assert a.ok and _without_times(a.history) == _without_times(b.history)
    assert a.final["test/acc"] == b.final["test/acc"]


def test_other_seed_other_history():
    a = train(tiny_spec(seed=1))
    b = train(tiny_spec(seed=2))
    assert _without_times(a.history) != _without_times(b.history)


def test_methods_with_one_seed_start_from_the_same_weights_and_batches():
    # SAL whose stress never reaches its thresholds never intervenes: with shared init and batches it
    # must reproduce the base optimizer exactly; shrink_perturb matches until its first deformation.
    base = train(tiny_spec(train={"epochs": 5}))
    idle_sal = train(tiny_spec(train={"epochs": 5}, method={"name": "sal", "warmup": 1, "s_noise": 1.0,
                                                            "s_yield": 1.0}))
    assert [r["train/loss"] for r in base.history] == [r["train/loss"] for r in idle_sal.history]
    sp = train(tiny_spec(train={"epochs": 5}, method={"name": "shrink_perturb", "warmup": 2, "every": 1}))
    assert [r["train/loss"] for r in sp.history[:3]] == [r["train/loss"] for r in base.history[:3]]
    assert sp.history[3]["train/loss"] != base.history[3]["train/loss"]
    assert [r[EVENT_DEFORM] for r in sp.history] == [0, 0, 1, 1, 0]  # none after the last epoch


def test_history_and_final_metrics_use_contract_names():
    r = train(tiny_spec(method={"name": "sal", "warmup": 0, "theta": 0.01}))
    assert [row["epoch"] for row in r.history] == [1, 2, 3, 4]
    assert EPOCH_KEYS <= set(r.history[0])
    assert FINAL_KEYS <= set(r.final)
    for row in r.history:
        assert 0.0 <= row["train/acc"] <= 1.0 and 0.0 <= row["val/acc"] <= 1.0
    assert 0.0 <= r.final["test/acc"] <= r.final["test/top5"] <= 1.0


def test_sharpness_is_the_training_gradient_norm_at_the_end():
    import torch.nn.functional as F

    from sal.training.run import TrainingRun

    run = TrainingRun(tiny_spec(train={"epochs": 2, "sharpness_samples": 100}))
    while not run.done:
        run.step()
    result = run.finish()
    model = run.method.eval_model()
    model.zero_grad()
    F.cross_entropy(model(run.data.train.x[:100]), run.data.train.y[:100]).backward()
    expected = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters())).item()
    assert result.final["sharpness/grad_norm"] == pytest.approx(expected, rel=1e-4)


def test_sal_stress_and_interventions_follow_the_signal():
    # Gains under 1 accuracy point count as stagnation, so stress builds once learning slows.
    spec = tiny_spec(data={"name": "digits"}, optim={"lr": 0.01}, train={"epochs": 12},
                     method={"name": "sal", "warmup": 2, "theta": 0.01, "s_noise": 0.005, "s_yield": 0.02,
                             "eps_acc": 0.01})
    r = train(spec)
    stress = [row[METRIC_STRESS] for row in r.history]
    deform = [row[EVENT_DEFORM] for row in r.history]
    revert = [row[EVENT_REVERT] for row in r.history]
    assert sum(deform) >= 1
    # the last epoch only observes (train.intervene_last_epoch is off): no training follows it
    for s, d, rv in zip(stress[:-1], deform, revert):
        assert d == (s >= 0.02 and not rv)  # deformation exactly when stress reached the yield
    noise = [row[EVENT_NOISE] for row in r.history]
    assert all(n == (s > 0.005) for n, s in zip(noise[2:-1], stress[2:-1]))
    assert (noise[-1], deform[-1], revert[-1]) == (0, 0, 0)


def test_divergence_ends_the_run_with_a_status():
    r = train(tiny_spec(optim={"name": "sgd", "lr": 1e6}))
    assert r.status == "diverged" and "epoch 1" in r.message
    assert not math.isfinite(r.history[-1]["train/loss"])
    assert "test/acc" not in r.final


def test_on_epoch_can_prune():
    seen = []

    def stop_at_two(epoch, row):
        seen.append(epoch)
        if epoch == 2:
            raise PruneRun("val/acc below the median")

    r = train(tiny_spec(), on_epoch=stop_at_two)
    assert r.status == "pruned" and seen == [1, 2] and len(r.history) == 2
    assert r.message == "val/acc below the median"


def test_train_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    train(tiny_spec(train={"epochs": 1}))
    assert torch.equal(torch.rand(3), expected)


def test_every_base_optimizer_trains():
    for name in ("adam", "adamax", "nadam", "rmsprop", "sgd"):
        r = train(tiny_spec(optim={"name": name, "lr": 0.003 if name != "sgd" else 0.1},
                            method={"name": "sal", "warmup": 1}))
        assert r.ok and r.history[-1]["train/loss"] < r.history[0]["train/loss"], name


def _stagnant_sal(**train_kw):
    """SAL on a tiny run that stagnates every epoch (eps_acc = 1 makes progress impossible): it deforms
    whenever its stress reaches S_yield, including at the last epoch when allowed."""
    return tiny_spec(method={"name": "sal", "warmup": 0, "theta": 0.01, "eps_acc": 1.0, "recovery": False},
                     train={"epochs": 3, **train_kw})


def test_no_intervention_after_the_last_epoch_so_test_and_last_validation_see_the_same_weights():
    from sal.training.run import TrainingRun, _evaluate

    for intervene_last in (False, True):
        run = TrainingRun(_stagnant_sal(intervene_last_epoch=intervene_last))
        while not run.done:
            run.step()
        last = run.result.history[-1]
        assert last[EVENT_DEFORM] == float(intervene_last) and run.result.history[-2][EVENT_DEFORM] == 1.0
        loss, correct = (float(t) for t in _evaluate(run.method.eval_model(), run.data.val, 512, run.autocast)[0][:2])
        # old main deformed after the last epoch and kept the pre-deformation validation row
        assert last["val/acc"] == correct / len(run.data.val) and last["val/loss"] == pytest.approx(
            loss / len(run.data.val), rel=1e-6)


def test_a_warmup_that_outlasts_training_is_a_spec_error():
    from sal.spec.config import SpecError

    with pytest.raises(SpecError, match="method.warmup=5 is not below train.epochs=5.*fix: lower method.warmup"):
        tiny_spec(method={"name": "sal", "warmup": 5}, train={"epochs": 5})
    with pytest.raises(SpecError, match="method.warmup=15 is not below train.epochs=4"):
        tiny_spec(method={"name": "shrink_perturb"})
    tiny_spec(method={"name": "sam"})  # methods without a warm-up are not affected


def test_swa_with_dropout_equals_the_base_optimizer_bit_for_bit_before_averaging():
    # update_bn's train-mode passes drew dropout masks from the run's shared stream on old main
    spec = dict(model={"name": "mlp", "width": 16, "dropout": 0.5}, train={"epochs": 6})
    base = train(tiny_spec(**spec))
    swa = train(tiny_spec(**spec, method={"name": "swa", "swa_start": 0.5}))
    keys = ("train/loss", "train/acc", "val/loss", "val/acc")
    assert [[r[k] for k in keys] for r in swa.history[:4]] == [[r[k] for k in keys] for r in base.history[:4]]
    assert swa.history[4]["val/acc"] != base.history[4]["val/acc"] or swa.history[5] != base.history[5]


def test_sam_second_pass_draws_dropout_from_its_own_stream():
    from sal.training.run import TrainingRun

    spec = dict(model={"name": "mlp", "width": 16, "dropout": 0.5}, train={"epochs": 2})
    base, sam = TrainingRun(tiny_spec(**spec)), TrainingRun(tiny_spec(**spec, method={"name": "sam"}))
    base.step(), sam.step()
    # SAM's weights differ, but the shared dropout stream has advanced by the same draws in both runs
    assert torch.equal(base._dropout_rng._cpu, sam._dropout_rng._cpu)
