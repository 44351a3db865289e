"""Streamed data: a loader's torch Dataset per split, read batch by batch with a DataLoader.

A Dataset over the same tensors gives the same runs as the tensors themselves (same samples, same order),
only the samples a run uses are read, and a bad Dataset is a spec error before any compute.
"""

from __future__ import annotations

import textwrap
import uuid

import pytest
import torch
import yaml

import sal
from sal.cli import main
from sal.spec.config import config_hash, validate_run
from sal.tracking.store import runs_frame
from sal.training.data import load_data
from sal.training.plugins import register
from sal.training.run import TrainingRun
from sal.training.seeds import SeedRuns, start_seeds
from sal.training.splits import Split
from sal.training.streaming import StreamedSplit
from tests.helpers import ABLATION_RUNS, timeless

CLASSES = 4


def _images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class templates plus noise, 1 x 8 x 8: learnable in a few epochs."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(CLASSES, 1, 8, 8, generator=g)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return (templates[y] + 0.35 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1), y


class Pairs(torch.utils.data.Dataset):
    """A map-style Dataset over tensors, as a user writes one, counting the samples it is asked for."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.x[i], int(self.y[i])


def _data(split_seed: int, *, with_test: bool) -> dict:
    x, y = _images(420, split_seed)
    out = {"train": (x[:360], y[:360]), "num_classes": CLASSES}
    if with_test:
        out["test"] = (x[360:], y[360:])
    return out


def _streamed(out: dict, names=("train", "test")) -> dict:
    return {k: Pairs(*v) if k in names else v for k, v in out.items()}


# Loaders for sal.train(spec, data=fn): the same data as tensors and as Datasets
def load_tensors(args, split_seed):
    return _data(split_seed, with_test=False)


def load_streamed(args, split_seed):
    return _streamed(_data(split_seed, with_test=False))


def load_tensors_tested(args, split_seed):
    return _data(split_seed, with_test=True)


def load_streamed_tested(args, split_seed):
    return _streamed(_data(split_seed, with_test=True))


def load_streamed_train(args, split_seed):
    return _streamed(_data(split_seed, with_test=True), names=("train",))


def _same_runs(a: sal.Result, b: sal.Result) -> None:
    assert a.ok and b.ok, (a.message, b.message)
    assert [timeless(r) for r in a.history] == [timeless(r) for r in b.history]
    assert timeless(a.final) == timeless(b.final)


SAL = {"name": "sal", "warmup": 0, "theta": 0.01, "s_noise": 0.005, "s_yield": 0.02, "eps_acc": 1.0,
       "sigma_y": 0.3, "recovery_patience": 1}
CASES = {
    # augmentation on streamed batches; BatchNorm; the grad-norm sharpness on the first training samples
    "augmented, grad norm": dict(data={"augment": True}, train={"sharpness_samples": 100},
                                 loaders=(load_streamed_tested, load_tensors_tested)),
    # SWA's BatchNorm statistics recomputed over a pass of the (streamed) training split
    "swa": dict(method={"name": "swa", "swa_start": 0.3}),
    # SAL's noise, deformation and revert; val and test held out of a streamed train split
    "sal, held out": dict(method=SAL, model={"name": "mlp", "width": 16, "dropout": 0.2}),
    # landscape measures on a fixed subset of the training data (sal/training/run_analysis.py)
    "analysis": dict(analysis={"sharpness": ["trace"], "samples": 64, "probes": 2, "trajectory": True}),
    # a streamed train split beside a test split of tensors
    "mixed": dict(loaders=(load_streamed_train, load_tensors_tested)),
}


def _spec(case: str) -> dict:
    kw = CASES[case]
    return {"data": {"normalize": False, **kw.get("data", {})},
            "model": kw.get("model", {"name": "cnn", "width": 4}),
            "method": kw.get("method", {"name": "base"}), "optim": {"lr": 0.01},
            "train": {"epochs": 3, "batch_size": 32, "sharpness_samples": 0, "device": "cpu", **kw.get("train", {})},
            "analysis": kw.get("analysis", {})}


@pytest.mark.parametrize("case", CASES)
def test_a_dataset_per_split_trains_exactly_as_its_tensors(case):
    load_datasets, load_same_tensors = CASES[case].get("loaders", (load_streamed, load_tensors))
    streamed = sal.train(_spec(case), data=load_datasets)
    assert streamed.spec.data.name.endswith(f":{load_datasets.__name__}")
    _same_runs(streamed, sal.train(_spec(case), data=load_same_tensors))
    assert len(streamed.history) == 3


def test_held_out_splits_and_the_training_cap_are_the_tensor_paths():
    spec = validate_run({"data": {"name": register(load_streamed, section="data"), "normalize": False,
                                  "train_subset": 100}}).data
    streamed = load_data(spec)
    tensors = load_data(spec.model_copy(update={"name": register(load_tensors, section="data")}))
    assert streamed.streamed and not tensors.streamed
    assert streamed.in_shape == tensors.in_shape == (1, 8, 8) and streamed.num_classes == CLASSES
    for a, b in zip((streamed.train, streamed.val, streamed.test), (tensors.train, tensors.val, tensors.test)):
        assert isinstance(a, StreamedSplit) and len(a) == len(b)
        x, y = a.head(len(a))
        assert torch.equal(x, b.x) and torch.equal(y, b.y)
    assert (len(tensors.train), len(tensors.val), len(tensors.test)) == (100, 43, 72)


def test_normalize_uses_training_statistics_of_the_streamed_samples():
    spec = {**_spec("swa"), "data": {"normalize": True}}
    streamed, tensors = sal.train(spec, data=load_streamed), sal.train(spec, data=load_tensors)
    assert streamed.ok and tensors.ok
    # the statistics are summed in another order (float64, batch by batch): equal up to rounding
    for a, b in zip(streamed.history, tensors.history):
        assert timeless(a) == pytest.approx(timeless(b), rel=1e-4, abs=1e-6)


def test_normalisation_statistics_are_the_training_sets_or_a_bounded_sample():
    x, y = _images(400, 0)
    pairs = Pairs(x, y)
    split = StreamedSplit(pairs, (1, 8, 8), CLASSES, source="test")
    mean, std = Split(x, y).channel_stats()
    all_mean, all_std = split.channel_stats()
    assert all_mean.shape == mean.shape == (1, 1, 1, 1) and pairs.reads == 400
    assert torch.allclose(all_mean, mean, rtol=1e-6) and torch.allclose(all_std, std, rtol=1e-6)
    pairs.reads = 0
    some_mean, some_std = split.channel_stats(limit=100)
    assert 75 <= pairs.reads <= 100  # 100 seeded draws of 400, a repeat read once
    assert torch.allclose(some_mean, mean, rtol=0.05) and torch.allclose(some_std, std, rtol=0.05)


def test_only_the_samples_a_run_uses_are_read():
    datasets = {}

    def load_counted(args, split_seed):
        x, y = _images(290, split_seed)
        datasets.update(train=Pairs(x[:200], y[:200]), val=Pairs(x[200:250], y[200:250]),
                        test=Pairs(x[250:], y[250:]))
        return {**datasets, "num_classes": CLASSES}

    spec = {"data": {"normalize": False}, "model": {"name": "mlp", "width": 8}, "method": {"name": "base"},
            "train": {"epochs": 2, "batch_size": 32, "sharpness_samples": 0, "infer_batches": 3, "device": "cpu"}}
    result = sal.train(spec, data=load_counted)
    assert result.ok
    reads = {name: ds.reads for name, ds in datasets.items()}
    # one item per split when the loader is checked; per epoch the 6 full batches of 32 (the ragged one is
    # dropped, as for tensors) and the whole val split; the test split once, then one batch timed (cached)
    assert reads == {"train": 1 + 2 * 6 * 32, "val": 1 + 2 * 50, "test": 1 + 40 + 32}


class Endless(torch.utils.data.Dataset):
    """A billion samples made from their index: reading them all would take hours."""

    def __init__(self):
        self.reads = 0

    def __len__(self) -> int:
        return 10**9

    def __getitem__(self, i: int):
        self.reads += 1
        if self.reads > 2000:
            raise RuntimeError("read far more samples than the run uses")
        g = torch.Generator().manual_seed(i)
        return torch.rand(12, generator=g), i % 3


def test_a_billion_sample_dataset_trains_on_its_first_samples():
    big = Endless()

    def load_big(args, split_seed):
        x, y = torch.rand(60, 12), torch.arange(60) % 3
        return {"train": big, "val": (x[:30], y[:30]), "test": (x[30:], y[30:]), "num_classes": 3}

    spec = {"data": {"train_subset": 256}, "model": {"name": "mlp", "width": 8}, "method": {"name": "base"},
            "train": {"epochs": 2, "batch_size": 64, "sharpness_samples": 128, "device": "cpu"}}
    result = sal.train(spec, data=load_big)
    assert result.ok and len(result.history) == 2
    # check 1 + normalisation statistics 256 + 2 epochs x 256 + grad norm 128
    assert big.reads == 1 + 256 + 2 * 256 + 128


def test_streamed_seeds_are_never_packed_and_resume_from_a_checkpoint(tmp_path):
    base = _spec("swa")
    spec = validate_run({**base, "data": {"name": register(load_streamed, section="data"), "normalize": False},
                         "train": {**base["train"], "pack": "on", "epochs": 4}})
    bundle = load_data(spec.data)
    group = start_seeds([spec, spec.model_copy(update={"seed": 2})], data=bundle)
    assert isinstance(group, SeedRuns)

    every = spec.model_copy(update={"train": spec.train.model_copy(update={"checkpoint_every": 1})})
    whole = TrainingRun(every, data=bundle)
    while not whole.done:
        whole.step()
    killed = TrainingRun(every, data=bundle, checkpoint_dir=tmp_path)
    killed.step()
    killed.step()
    del killed  # a kill: no finish(), the checkpoint stays
    resumed = TrainingRun(every, data=bundle, checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 2
    while not resumed.done:
        resumed.step()
    assert [timeless(r) for r in resumed.result.history] == [timeless(r) for r in whole.result.history]
    assert all(torch.equal(a, b) for a, b in zip(resumed.model.state_dict().values(),
                                                 whole.model.state_dict().values()))


def test_worker_processes_read_the_samples_and_change_nothing():
    datasets = {}

    def load_watched(args, split_seed):
        x, y = _images(200, split_seed)
        datasets["train"] = Pairs(x, y)
        return {"train": datasets["train"], "num_classes": CLASSES}

    spec = {**_spec("swa"), "train": {**_spec("swa")["train"], "epochs": 1}}
    alone = sal.train(spec, data=load_watched)
    reads = datasets["train"].reads
    helped = sal.train({**spec, "data": {**spec["data"], "workers": 1}}, data=load_watched)
    _same_runs(helped, alone)
    assert datasets["train"].reads == 1  # the new loader's only read in this process: its check
    assert reads > 100
    assert config_hash(helped.spec) == config_hash(alone.spec)  # where samples are read is not the run


def test_a_label_beyond_num_classes_stops_the_run_with_the_fix():
    class Mislabelled(Pairs):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return x, 7 if i == 5 else y

    def load_bad(args, split_seed):
        return {"train": Mislabelled(*_images(100, split_seed)), "num_classes": CLASSES}

    with pytest.raises(ValueError, match=r"label 7.*0 \.\. 3.*fix:"):
        sal.train({**_spec("swa"), "method": {"name": "base"}}, data=load_bad)


# ---------------------------------------------------------------- the CLI: an ablation, bad Datasets


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a module into a fresh working directory (as a user's project folder) and return its name."""
    monkeypatch.chdir(tmp_path)

    def write(source: str) -> str:
        name = f"userdata_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


STREAMED_LOADER = """
import torch

class Rows(torch.utils.data.Dataset):
    def __init__(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 6, generator=g)
        self.y = (self.x[:, 0] > 0).long() + (self.x[:, 1] > 0).long()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])

def load(args, split_seed):
    return {"train": Rows(600, split_seed), "test": Rows(90, split_seed + 1), "num_classes": 3}
"""


def test_an_ablation_on_streamed_data(tmp_path, plugin, capsys, mlflow_uri):
    module = plugin(STREAMED_LOADER)
    name = f"streamed-{module}"
    path = tmp_path / "abl.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "seeds": 2, "baseline": "base",
        "base": {"data": {"name": f"{module}:load"}, "model": {"name": "mlp", "width": 16}, "optim": {"lr": 0.05},
                 "train": {"epochs": 3, "batch_size": 32, "sharpness_samples": 0}},
        "cells": {"base": {"method.name": "base"}, "sam": {"method.name": "sam"}}}))
    code = main(["--tracking-uri", mlflow_uri, "ablate", str(path), "--storage", str(tmp_path / "q.journal")])
    assert code == 0, capsys.readouterr().err
    runs = runs_frame(mlflow_uri, [f"sal-ablation-{name}"], ABLATION_RUNS)
    assert len(runs) == 4 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.dataset"]) == {f"{module}:load"} and set(runs["params.data.workers"]) == {"0"}
    assert runs["metrics.test/acc"].min() > 0.55  # about half the samples are of the majority class


DATASET = """
import torch

class Items(torch.utils.data.Dataset):
    def __init__(self, item, n=20):
        self.item, self.n = item, n
    def __len__(self):
        return self.n
    def __getitem__(self, i):
        return self.item

class Broken(Items):
    def __getitem__(self, i):
        raise KeyError(f"image {i}")

def load(args, split_seed):
    return {}
"""
BAD = {
    "not a pair": ("{'train': Items(torch.rand(3)), 'num_classes': 2}",
                   "train item 0 is a Tensor, not an (x, y) pair"),
    "integer x": ("{'train': Items((torch.ones(3).long(), 1)), 'num_classes': 2}",
                  "train item 0: x has dtype torch.int64; fix: return float features"),
    "x not a tensor": ("{'train': Items(([0.5, 0.5], 1)), 'num_classes': 2}",
                       "train item 0: x is a list, not a tensor; fix: return torch.as_tensor(x"),
    "float label": ("{'train': Items((torch.rand(3), 0.5)), 'num_classes': 2}",
                    "train item 0: y=0.5 is not an integer class index; fix: return int(y)"),
    "label out of range": ("{'train': Items((torch.rand(3), 3)), 'num_classes': 3}",
                           "a label is 3 but num_classes=3"),
    "no num_classes": ("{'train': Items((torch.rand(3), 1))}",
                       "returned a torch Dataset for train but no num_classes; fix: return 'num_classes': int"),
    "iterable": ("{'train': type('S', (torch.utils.data.IterableDataset,), {'__iter__': lambda s: iter([])})(), "
                 "'num_classes': 2}", "train is an IterableDataset (S); fix: return a map-style Dataset"),
    "empty": ("{'train': Items((torch.rand(3), 1), n=0), 'num_classes': 2}", "train is empty"),
    "shapes differ": ("{'train': Items((torch.rand(3), 1)), 'test': Items((torch.rand(4), 1)), 'num_classes': 2}",
                      "test samples have shape (4,) but train samples (3,)"),
    "len raises": ("{'train': Items(None, n='x'), 'num_classes': 2}", "train: len() raised TypeError"),
    "item raises": ("{'train': Broken(None), 'num_classes': 2}", "reading train item 0 raised KeyError: 'image 0'"),
}


@pytest.mark.parametrize("case", BAD)
def test_each_bad_dataset_exits_2_with_the_key_and_the_fix(case, tmp_path, plugin, capsys):
    returned, message = BAD[case]
    module = plugin(DATASET.replace("return {}", f"return {returned}"))
    argv = ["--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db", "train", "--set", "train.epochs=1",
            "--set", f"data.name={module}:load", "--set", "model.name=mlp", "--set", "method.name=base"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and f"data.name='{module}:load'" in err and "fix:" in err, err
    assert not (tmp_path / "store").exists()  # nothing written
