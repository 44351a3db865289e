"""Checkpoints (sal/training/checkpoints.py and TrainingRun's resume): a run killed mid-way and resumed from its
checkpoint ends bit for bit where the uninterrupted run ends; the file is written atomically, read with
weights_only, named by the run's identity, deleted when the run ends, and never anyone else's file."""

from __future__ import annotations

import logging
import math
import os

import pytest
import torch

from sal.core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT
from sal.spec.config import SpecError, config_hash
from sal.training.checkpoints import RunCheckpoint, checkpoint_path
from sal.training.run import PruneRun, TrainingRun, train
from sal.training.seeds import should_pack
from tests.helpers import assert_same, state_at_end, timeless, tiny_spec

# SAL that intervenes every way on the tiny run: no accuracy gain counts as progress (eps_acc = 1), so
# stress grows every epoch; noise from S > 0.005, a deformation at S >= 0.02 so large (sigma_y 0.3)
# that the loss does not recover within one epoch, so it is reverted: epochs 1-7 run noise, deform,
# revert, noise, deform, revert, noise.
SAL = {"name": "sal", "warmup": 0, "theta": 0.01, "s_noise": 0.005, "s_yield": 0.02, "eps_acc": 1.0,
       "sigma_y": 0.3, "recovery_patience": 1}
DROPOUT = {"name": "mlp", "width": 16, "dropout": 0.3}

CASES = {
    # the deformation of epoch 2 is reverted at epoch 3: the checkpoint of epoch 2 carries the yield point
    "sal": dict(method=SAL, model=DROPOUT, train={"epochs": 8}, optim={"schedule": "cosine"}),
    "random_trigger": dict(method={**SAL, "name": "random_trigger", "trigger_prob": 0.5}, model=DROPOUT,
                           train={"epochs": 8}),
    "sam": dict(method={"name": "sam"}, model=DROPOUT, train={"epochs": 6}, optim={"schedule": "onecycle"}),
    # averaging from epoch 2: the checkpoint of epoch 2 holds a running average of one model, SWALR mid-way
    "swa": dict(method={"name": "swa", "swa_start": 0.2, "anneal_epochs": 2}, model=DROPOUT, train={"epochs": 6},
                optim={"schedule": "cosine"}),
    # a net with BatchNorm and dropout: the average's statistics are recomputed (update_bn) every epoch
    "swa_bn": dict(method={"name": "swa", "swa_start": 0.2}, model={"name": "cnn", "width": 4, "dropout": 0.3},
                   data={"name": "digits", "train_subset": 300}, train={"epochs": 5, "sharpness_samples": 0}),
    "shrink_perturb": dict(method={"name": "shrink_perturb", "warmup": 1, "every": 2}, train={"epochs": 6}),
    "rolling_ball": dict(method={"name": "rolling_ball"}, train={"epochs": 4}),
    "lbfgs": dict(method={"name": "lbfgs", "max_iter": 5}, train={"epochs": 4}),  # its state: lists of tensors
    "base": dict(method={"name": "base"}, model=DROPOUT, train={"epochs": 6},
                 optim={"name": "sgd", "lr": 0.05, "schedule": "warmup_cosine", "warmup_epochs": 2},
                 analysis={"trajectory": True}),
}


def _spec(case: str, every: int = 0):
    kw = CASES[case]
    return tiny_spec(**{**kw, "train": {**kw["train"], "checkpoint_every": every}})


def _run_to_end(run: TrainingRun):
    while not run.done:
        run.step()
    return run.finish()


def _weights(run: TrainingRun) -> dict[str, torch.Tensor]:
    return {**run.model.state_dict(), **{f"eval.{k}": v for k, v in run.method.eval_model().state_dict().items()}}


def _killed_then_resumed(case: str, tmp_path, *, every: int, kill_after: int) -> TrainingRun:
    spec = _spec(case, every)
    killed = TrainingRun(spec, checkpoint_dir=tmp_path)
    for _ in range(kill_after):
        killed.step()
    del killed  # a kill: no finish(), the checkpoint stays
    resumed = TrainingRun(spec, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == kill_after // every * every
    assert resumed.result.resumed_from == resumed.resumed_from
    return resumed


@pytest.mark.parametrize(("case", "every", "kill_after"), [
    ("sal", 2, 3), ("sal", 2, 4), ("random_trigger", 3, 4), ("sam", 2, 3), ("swa", 2, 3), ("swa", 4, 5),
    ("swa_bn", 2, 3), ("shrink_perturb", 2, 3), ("rolling_ball", 2, 3), ("lbfgs", 2, 3), ("base", 2, 5),
])
def test_a_resumed_run_ends_bit_for_bit_where_the_uninterrupted_run_ends(case, every, kill_after, tmp_path):
    whole = TrainingRun(_spec(case))
    resumed = _killed_then_resumed(case, tmp_path, every=every, kill_after=kill_after)
    assert_same(state_at_end(resumed), state_at_end(whole))
    expected, result = whole.finish(), resumed.finish()
    assert result.ok and len(result.history) == len(expected.history)
    assert [timeless(r) for r in result.history] == [timeless(r) for r in expected.history]
    assert timeless(result.final) == timeless(expected.final)
    assert set(result.final) == set(expected.final)
    a, b = _weights(resumed), _weights(whole)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if case == "base":
        assert torch.equal(result.analysis["trajectory"]["weights"], expected.analysis["trajectory"]["weights"])
    assert os.listdir(tmp_path) == []  # deleted at the end


def test_the_sal_case_really_intervenes_across_the_checkpoint():
    r = train(_spec("sal"))
    events = [(row[EVENT_NOISE], row[EVENT_DEFORM], row[EVENT_REVERT]) for row in r.history]
    assert events[:4] == [(1, 0, 0), (1, 1, 0), (0, 0, 1), (1, 0, 0)]  # the revert needs epoch 2's yield point
    assert r.final["sal/n_noise"] >= 3 and r.final["sal/n_deform"] >= 2 and r.final["sal/n_revert"] >= 2
    swa = train(_spec("swa"))
    assert swa.history[1]["optim/lr"] != swa.history[2]["optim/lr"]  # SWALR is annealing at the checkpoint


def test_train_resumes_and_says_how_many_epochs_it_took_from_the_checkpoint(tmp_path, caplog):
    spec = _spec("sal", 2)
    killed = TrainingRun(spec, checkpoint_dir=tmp_path)
    for _ in range(5):
        killed.step()
    seen = []
    with caplog.at_level(logging.INFO, logger="sal"):
        result = train(spec, checkpoint_dir=tmp_path, on_epoch=lambda epoch, row: seen.append(epoch))
    assert result.resumed_from == 4 and seen == [5, 6, 7, 8]
    assert [row["epoch"] for row in result.history] == list(range(1, 9))
    assert "resumed from epoch 4" in caplog.text
    assert train(spec).resumed_from == 0


def test_checkpoints_are_written_atomically_under_the_runs_identity(tmp_path, monkeypatch):
    import sal.training.checkpoints

    replaced = []
    real_replace = os.replace

    def spy(src, dst):
        replaced.append((os.path.dirname(src), os.path.dirname(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(sal.training.checkpoints.os, "replace", spy)
    spec = _spec("base", 1)
    run = TrainingRun(spec, checkpoint_dir=tmp_path / "ck")
    for epoch in range(1, 4):
        run.step()
        assert os.listdir(tmp_path / "ck") == [f"{config_hash(spec)}-s{spec.seed}.pt"]  # no temp file left
        assert len(replaced) == epoch and replaced[-1][0] == replaced[-1][1]  # temp file beside its target
    assert checkpoint_path(tmp_path / "ck", spec) == tmp_path / "ck" / f"{config_hash(spec)}-s1.pt"
    while not run.done:
        run.step()
    assert len(replaced) == spec.train.epochs - 1  # none after the last epoch: the run is about to end
    assert RunCheckpoint(tmp_path / "ck", spec).load()["epoch"] == spec.train.epochs - 1


def test_another_seed_or_configuration_has_its_own_checkpoint(tmp_path):
    one = _spec("base", 1)
    specs = (one, one.model_copy(update={"seed": 2}), tiny_spec(train={"checkpoint_every": 1}))
    assert len({checkpoint_path(tmp_path, s) for s in specs}) == 3
    # checkpoint_every changes no result, so it is not part of the run's identity
    assert config_hash(_spec("base", 0)) == config_hash(_spec("base", 3))


def test_the_checkpoint_is_deleted_whenever_the_run_ends(tmp_path):
    spec = _spec("base", 1)

    def ckpt_exists():
        return checkpoint_path(tmp_path, spec).exists()

    train(spec, checkpoint_dir=tmp_path)  # finished
    assert not ckpt_exists()

    def prune_at_3(epoch, row):
        assert ckpt_exists()
        if epoch == 3:
            raise PruneRun("pruned")

    assert train(spec, checkpoint_dir=tmp_path, on_epoch=prune_at_3).status == "pruned" and not ckpt_exists()

    run = TrainingRun(spec, checkpoint_dir=tmp_path)
    run.step(), run.step()
    run.stop("diverged", "val/loss became nan")
    assert run.done and run.finish().status == "diverged" and not ckpt_exists()

    def fail_at_3(epoch, row):
        if epoch == 3:
            raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        train(spec, checkpoint_dir=tmp_path, on_epoch=fail_at_3)
    assert not ckpt_exists()


def test_an_interrupted_run_keeps_its_checkpoint_for_the_retry(tmp_path):
    spec = _spec("base", 1)

    def ctrl_c_at_3(epoch, row):
        if epoch == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(spec, checkpoint_dir=tmp_path, on_epoch=ctrl_c_at_3)
    assert TrainingRun(spec, checkpoint_dir=tmp_path).resumed_from == 3


def test_no_checkpoint_without_a_directory_or_with_checkpoint_every_0(tmp_path):
    train(_spec("base", 0), checkpoint_dir=tmp_path)
    run = TrainingRun(_spec("base", 1))
    run.step(), run.step()
    assert os.listdir(tmp_path) == [] and run.resumed_from == 0


class _NotATensor:
    pass


def _saved_after_two_epochs(spec, tmp_path):
    """Train two epochs with checkpoints on; returns the checkpoint's path."""
    run = TrainingRun(spec, checkpoint_dir=tmp_path)
    run.step(), run.step()
    return checkpoint_path(tmp_path, spec)


def _starts_over(spec, tmp_path, caplog, why: str) -> None:
    with caplog.at_level(logging.WARNING, logger="sal"):
        run = TrainingRun(spec, checkpoint_dir=tmp_path)
    assert run.resumed_from == 0 and run.result.history == []
    assert why in caplog.text and "starts over" in caplog.text
    result = _run_to_end(run)
    assert [timeless(r) for r in result.history] == [timeless(r) for r in train(spec).history]


def test_a_checkpoint_holding_a_pickled_object_is_refused(tmp_path, caplog):
    spec = _spec("base", 2)
    path = _saved_after_two_epochs(spec, tmp_path)
    saved = torch.load(path, weights_only=True)
    saved["state"]["evil"] = _NotATensor()
    torch.save(saved, path)
    _starts_over(spec, tmp_path, caplog, "will not unpickle (Unsupported global: GLOBAL")
    assert "_NotATensor" in caplog.text


def test_a_truncated_or_garbled_checkpoint_is_ignored(tmp_path, caplog):
    spec = _spec("base", 2)
    path = _saved_after_two_epochs(spec, tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _starts_over(spec, tmp_path, caplog, "cannot be read")
    caplog.clear()
    path.write_bytes(b"not a checkpoint")
    _starts_over(spec, tmp_path, caplog, "cannot be read")


def test_a_checkpoint_of_another_run_is_ignored(tmp_path, caplog):
    spec, other = _spec("base", 2), _spec("sam", 2)
    _saved_after_two_epochs(other, tmp_path).rename(checkpoint_path(tmp_path, spec))  # can't happen by naming alone
    _starts_over(spec, tmp_path, caplog, "belongs to another run")


def test_a_checkpoint_whose_state_does_not_fit_is_ignored(tmp_path, caplog):
    spec = _spec("base", 2)
    path = _saved_after_two_epochs(spec, tmp_path)
    saved = torch.load(path, weights_only=True)
    del saved["state"]["method"]  # e.g. written by an older sal
    saved["state"]["model"] = {k: v[:1] for k, v in saved["state"]["model"].items()}
    torch.save(saved, path)
    _starts_over(spec, tmp_path, caplog, "does not fit")


def test_files_sal_did_not_write_survive(tmp_path):
    spec = _spec("base", 1)
    foreign = {"notes.txt": b"mine", "ffffffffffff-s1.pt": b"another tool's file", f".{config_hash(spec)}.pt": b"x"}
    for name, content in foreign.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "sub").mkdir()
    run = TrainingRun(spec, checkpoint_dir=tmp_path)
    run.step()
    assert checkpoint_path(tmp_path, spec).exists()
    while not run.done:
        run.step()
    run.finish()
    assert sorted(os.listdir(tmp_path)) == sorted([*foreign, "sub"])
    assert all((tmp_path / name).read_bytes() == content for name, content in foreign.items())


def test_the_directory_is_kept_even_when_empty(tmp_path):
    train(_spec("base", 1), checkpoint_dir=tmp_path / "ck")
    assert (tmp_path / "ck").is_dir() and os.listdir(tmp_path / "ck") == []


def test_checkpoint_every_must_not_be_negative():
    with pytest.raises(SpecError, match=r"train.checkpoint_every=-1: .*greater than or equal to 0.*fix"):
        tiny_spec(train={"checkpoint_every": -1})
    assert tiny_spec().train.checkpoint_every == 0


def test_checkpointed_seeds_are_not_packed():
    specs = [tiny_spec(seed=s, train={"checkpoint_every": 1, "pack": "on"}) for s in (1, 2)]
    assert not should_pack(specs)
    assert should_pack([s.model_copy(update={"train": s.train.model_copy(update={"checkpoint_every": 0})})
                        for s in specs])


def test_a_killed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    import sal.training.checkpoints

    spec = _spec("base", 1)
    run = TrainingRun(spec, checkpoint_dir=tmp_path)
    run.step()

    def killed(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr(sal.training.checkpoints.os, "replace", killed)
    run.step()  # the failed write is logged, training goes on
    monkeypatch.undo()
    assert os.listdir(tmp_path) == [checkpoint_path(tmp_path, spec).name]
    assert RunCheckpoint(tmp_path, spec).load()["epoch"] == 1
    assert not math.isnan(run.result.history[-1]["train/loss"])


def test_a_file_under_the_checkpoints_name_that_sal_did_not_write_is_kept(tmp_path, caplog):
    """Before: a file named like this run's checkpoint (or like a temp file of its writes) was replaced by the
    run's checkpoint and deleted at its end, whatever it held. Now sal replaces and deletes only files whose
    content it recognises as this run's (its identity inside); a partial write of its own still goes."""
    spec = tiny_spec(train={"epochs": 2, "checkpoint_every": 1})  # one checkpoint, after epoch 1
    name = checkpoint_path(tmp_path, spec).name
    mine = {name: b"another tool's file", f".{name}.notes.tmp": b"a user's notes"}
    for file, content in mine.items():
        (tmp_path / file).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="sal"):
        result = train(spec, checkpoint_dir=tmp_path)
    assert result.status == "finished" and len(result.history) == spec.train.epochs
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == mine
    assert "not written by sal" in caplog.text and "kept" in caplog.text

    # a killed write of this run leaves a prefix of its checkpoint in a temp file: that one is sal's to delete
    other = tmp_path / "other"
    run = TrainingRun(spec, checkpoint_dir=other)
    run.step()
    data = checkpoint_path(other, spec).read_bytes()
    (other / f".{name}.k1ll3d00.tmp").write_bytes(data[: len(data) // 3])
    (other / f".{name}.empty000.tmp").write_bytes(b"")  # killed before it wrote anything: nothing tells whose
    while not run.done:
        run.step()
    run.finish()
    assert sorted(p.name for p in other.iterdir()) == [f".{name}.empty000.tmp"]
