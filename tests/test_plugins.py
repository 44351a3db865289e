"""A researcher's own model builder and data loader (``module:function``), checked before any compute."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import sal
from sal.cli import main
from sal.core.names import TAG_CELL
from sal.spec.config import SpecError, flatten, nest, validate_run
from sal.tracking.store import runs_frame
from sal.training.data import load_data
from sal.training.plugin_check import check_plugins
from tests.helpers import ABLATION_RUNS

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

GOOD_MODEL = """
import math
from torch import nn

def build(args, in_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), args.get("hidden", 8)), nn.ReLU(),
                         nn.Linear(args.get("hidden", 8), num_classes))
"""
GOOD_DATA = """
import torch
import yaml

def load(args, split_seed):
    g = torch.Generator().manual_seed(split_seed)
    n = args.get("n", 120)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return {"train": (x[:100], y[:100]), "test": (x[100:], y[100:])}
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Write a module into a fresh working directory (as a user's project folder) and return its name."""
    monkeypatch.chdir(tmp_path)

    def write(source: str) -> str:
        name = f"userpkg_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def _train_cli(tmp_path, *sets: str) -> list[str]:
    store = tmp_path / "store"
    argv = ["--tracking-uri", f"sqlite:///{store}/mlflow.db", "train"]
    for s in ("train.epochs=2", "train.sharpness_samples=0", "method.name=base", *sets):
        argv += ["--set", s]
    return argv


def test_a_module_function_model_and_loader_train_and_are_logged(tmp_path, plugin, capsys, mlflow_uri):
    model, data = plugin(GOOD_MODEL), plugin(GOOD_DATA)
    experiment = f"plugins-{model}"
    code = main(["--tracking-uri", mlflow_uri, "train", "--experiment", experiment, "--set", "train.epochs=2",
                 "--set", f"model.name={model}:build", "--set", "model.args.hidden=5",
                 "--set", f"data.name={data}:load", "--set", "method.name=base"])
    assert code == 0, capsys.readouterr().err
    runs = runs_frame(mlflow_uri, [experiment])
    assert len(runs) == 1
    r = runs.iloc[0]
    assert r["tags.model"] == f"{model}:build" and r["params.model.args.hidden"] == "5"
    assert r["tags.dataset"] == f"{data}:load" and r["status"] == "FINISHED"


def test_loader_splits_follow_the_contract(plugin):
    spec = validate_run({"data": {"name": f"{plugin(GOOD_DATA)}:load", "args": {"n": 120}, "normalize": False}})
    bundle = load_data(spec.data)
    # train 100 (val held out with val_fraction 0.15 -> 15), test as returned (20), classes 0..2 -> 3
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (85, 15, 20)
    assert bundle.num_classes == 3 and bundle.in_shape == (6,)
    assert bundle.train.x.dtype == torch.float32 and bundle.train.y.dtype == torch.long
    capped = load_data(validate_run({"data": {**spec.data.model_dump(), "train_subset": 30}}).data)
    assert len(capped.train) == 30 and torch.equal(capped.val.x, bundle.val.x)


def test_args_are_dotted_keys_that_round_trip(plugin):
    spec = validate_run({"model": {"name": "a.b:build", "args": {"hidden": 4, "act": "relu"}}})
    flat = flatten(spec)
    assert flat["model.args.hidden"] == 4 and flat["model.args.act"] == "relu"
    assert validate_run(nest(flat)) == spec


# ---------------------------------------------------------------- each bad plug-in: exit 2 and the message

RETURN = "import torch\ndef load(a, s):\n    return "  # a loader module returning what follows
BAD = {
    "not found": ({"model.name=nosuchpkg_zz.models:build"}, None,
                  "model.name='nosuchpkg_zz.models:build': module 'nosuchpkg_zz.models' is not found"),
    "import fails": ({"model.name={m}:build"}, "x = 1 / 0\n", "fails to import (ZeroDivisionError"),
    "no function": ({"model.name={m}:build"}, "def other(a, b, c):\n    pass\n", "has no 'build'"),
    "not callable": ({"model.name={m}:build"}, "build = 3\n", "is a int, not a function"),
    "signature": ({"model.name={m}:build"}, "def build(args):\n    pass\n",
                  "cannot take 3 positional arguments"),
    "not a module": ({"model.name={m}:build"}, "def build(args, shape, n):\n    return {'w': 1}\n",
                     "returned a dict, not a torch.nn.Module"),
    "wrong logits": ({"model.name={m}:build"},
                     "from torch import nn\ndef build(args, shape, n):\n    return nn.Flatten()\n",
                     "not logits (2, 10)"),
    "builder raises": ({"model.name={m}:build", "model.args.depth=3"},
                       "def build(args, shape, n):\n    raise KeyError('width')\n",
                       "raised KeyError: 'width' with model.args={'depth': 3}"),
    "loader signature": ({"data.name={m}:load"}, "def load():\n    pass\n", "cannot take 2 positional arguments"),
    "loader returns a list": ({"data.name={m}:load"}, "def load(a, s):\n    return []\n",
                              "returned a list; fix: return {'train': (x, y)"),
    "lengths differ": ({"data.name={m}:load"},
                      RETURN + "{'train': (torch.rand(10, 3), torch.zeros(9).long())}\n",
                      "train has 10 samples in x but 9 labels in y"),
    "float labels": ({"data.name={m}:load"},
                     RETURN + "{'train': (torch.rand(10, 3), torch.zeros(10))}\n",
                     "train y has dtype torch.float32; fix: return integer class labels"),
    "integer inputs": ({"data.name={m}:load"},
                       RETURN + "{'train': (torch.ones(10, 3).long(), torch.arange(10) % 2)}\n",
                       "train x has dtype torch.int64; fix: return float features"),
    "shapes differ": ({"data.name={m}:load"},
                      "import torch\ndef load(a, s):\n    y = torch.arange(10) % 2\n"
                      "    return {'train': (torch.rand(10, 3), y), 'test': (torch.rand(10, 4), y)}\n",
                      "test samples have shape (4,) but train samples (3,)"),
    "labels beyond num_classes": ({"data.name={m}:load"},
                                  "import torch\ndef load(a, s):\n"
                                  "    return {'train': (torch.rand(10, 3), torch.arange(10)), 'num_classes': 4}\n",
                                  "a label is 9 but num_classes=4"),
    "a Dataset without num_classes": ({"data.name={m}:load"},
                                     RETURN + "{'train': torch.utils.data.TensorDataset(torch.rand(4))}\n",
                                     "returned a torch Dataset for train but no num_classes"),
    "bad name": ({"model.name=nope"}, None, "model.name='nope' is neither built in"),
    "args for a built-in": ({"model.args.hidden=3"}, None, "model.args={'hidden': 3} is set for the built-in"),
}


@pytest.mark.parametrize("case", BAD)
def test_each_bad_plugin_exits_2_with_the_key_and_the_fix(case, tmp_path, plugin, capsys):
    sets, source, message = BAD[case]
    module = plugin(source) if source else ""
    argv = _train_cli(tmp_path, "data.name=synthetic", "data.num_samples=200", "model.name=mlp",
                      *(s.format(m=module) for s in sets))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "fix:" in err, err
    assert not (tmp_path / "store").exists()  # nothing written


def test_a_bad_plugin_stops_an_ablation_before_anything_runs(tmp_path, plugin, capsys):
    module = plugin("def build(args, shape, n):\n    return None\n")
    path = tmp_path / "abl.yaml"
    path.write_text(f"name: bad\nseeds: 2\nbaseline: a\nbase:\n  model: {{name: '{module}:build'}}\n"
                    "  data: {name: synthetic, num_samples: 200}\ncells:\n  a: {method.name: base}\n")
    journal = tmp_path / "q.journal"
    code = main(["--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db", "ablate", str(path),
                 "--storage", str(journal)])
    assert code == 2
    assert "returned a NoneType, not a torch.nn.Module" in capsys.readouterr().err
    assert not journal.exists() and not (tmp_path / "store").exists()


# ---------------------------------------------------------------- the Python API


def build_small(args, in_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0], 8), nn.ReLU(), nn.Linear(8, num_classes))


def load_xor(args, split_seed):
    g = torch.Generator().manual_seed(split_seed)
    x = torch.randn(300, 4, generator=g)
    return {"train": (x, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long())}


def test_api_train_takes_callables_and_records_their_names():
    spec = {"train": {"epochs": 3, "batch_size": 32, "sharpness_samples": 0}, "optim": {"lr": 0.01},
            "method": {"name": "base"}}
    r = sal.train(spec, model=build_small, data=load_xor)
    assert r.ok and r.spec.model.name == f"{__name__}:build_small"
    assert r.spec.data.name == f"{__name__}:load_xor"
    # held out of 300: test 60, then val 36 of the remaining 240
    assert r.n_params == 4 * 8 + 8 + 8 * 2 + 2
    again = sal.train(spec, model=build_small, data=lambda args, seed: load_xor(args, seed))
    assert [h["train/loss"] for h in again.history] == [h["train/loss"] for h in r.history]  # same seed, same run


def test_api_train_checks_callables_before_compute():
    with pytest.raises(SpecError, match="returned a list, not a torch.nn.Module"):
        sal.train({"method": {"name": "base"}}, model=lambda args, shape, n: [nn.Linear(2, 2)], data=load_xor)
    with pytest.raises(SpecError, match="cannot take 2 positional arguments"):
        sal.train({"method": {"name": "base"}}, data=lambda args: None)
    with pytest.raises(SpecError, match="is not callable"):
        sal.train({"method": {"name": "base"}}, model="mypkg:build")


def test_check_plugins_leaves_the_global_rng_alone(plugin):
    spec = validate_run({"model": {"name": f"{plugin(GOOD_MODEL)}:build"}, "data": {"name": "synthetic",
                                                                                   "num_samples": 200}})
    torch.manual_seed(3)
    expected = torch.rand(2)
    torch.manual_seed(3)
    check_plugins([spec])
    assert torch.equal(torch.rand(2), expected)


# ---------------------------------------------------------------- the example in examples/


@pytest.mark.subprocess
def test_the_example_ablation_runs_from_its_folder_with_spawned_workers(tmp_path):
    """As a user runs it: from the project folder, through a launcher like the `sal` console script (whose
    folder, not the working directory, is on sys.path), with two spawned workers that import mypkg."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    launcher = tmp_path / "bin" / "sal"
    launcher.parent.mkdir()
    launcher.write_text("import sys\nfrom sal.cli import main\nif __name__ == '__main__':\n    sys.exit(main())\n")
    sal_cli = [sys.executable, str(launcher)]
    cmd = [*sal_cli, "--tracking-uri", uri, "ablate", "ablation.yaml", "--storage", str(tmp_path / "q.journal"),
           "--workers", "2", "--seeds", "2"]
    proc = subprocess.run(cmd, cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "trials: 8 complete" in proc.stdout
    runs = runs_frame(uri, ["sal-ablation-spirals"], ABLATION_RUNS)
    assert len(runs) == 8  # 4 cells x 2 seeds
    assert set(runs["status"]) == {"FINISHED"}
    assert set(runs[f"tags.{TAG_CELL}"]) == {"adamw", "sal", "sam", "swa"}
    assert set(runs["tags.model"]) == {"mypkg.models:build"} and set(runs["tags.dataset"]) == {"spirals"}
    assert set(runs["params.model.args.hidden"]) == {"32"} and set(runs["params.optim.name"]) == {"adamw"}
    assert (runs["metrics.test/acc"] > 0.7).all()  # 3 spiral arms: chance is 1/3
    report = subprocess.run([*sal_cli, "--tracking-uri", uri, "report", "spirals",
                             "--out", str(tmp_path / "report"), "--no-figures"], cwd=EXAMPLES, env=env,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "report" / "summary.csv").is_file()


# ---------------------------------------------------------------- the public API end to end


@pytest.mark.training
def test_api_ablation_study_and_report_on_a_plugin(tmp_path, plugin, mlflow_uri):
    model, data = plugin(GOOD_MODEL), plugin(GOOD_DATA)
    base = {"model": {"name": f"{model}:build", "args": {"hidden": 6}}, "data": {"name": f"{data}:load"},
            "train": {"epochs": 2, "batch_size": 32, "sharpness_samples": 0}, "optim": {"name": "adamw", "lr": 0.01}}
    abl = tmp_path / "abl.yaml"
    abl.write_text(yaml.safe_dump({"name": f"api-{model}", "seeds": 2, "baseline": "base", "base": base,
                                   "cells": {"base": {"method.name": "base"}, "wide": {"method.name": "base",
                                                                                      "model.args.hidden": 12}}}))
    out = sal.run_ablation(abl, storage=str(tmp_path / "a.journal"), tracking_uri=mlflow_uri)
    assert out["states"] == {"COMPLETE": 4}
    runs = runs_frame(mlflow_uri, [f"sal-ablation-api-{model}"], ABLATION_RUNS)
    assert sorted(runs["params.model.args.hidden"]) == ["12", "12", "6", "6"]
    folder, summary = sal.build_report(f"api-{model}", out=tmp_path / "report", tracking_uri=mlflow_uri,
                                       draw_figures=False)
    assert (folder / "summary.csv").is_file() and set(summary["method"]) == {"base", "wide"}

    study = tmp_path / "study.yaml"
    study_base = {**base, "model": {**base["model"], "args": {"hidden": 4}}, "method": {"name": "base"}}
    study.write_text(yaml.safe_dump({"name": f"api-{model}", "base": study_base,
                                     "seeds": 1, "n_trials": 2, "pruner": {"name": "none"},
                                     "space": {"model.args.hidden": {"choices": [4, 8]}}}))
    result = sal.run_study(study, storage=str(tmp_path / "s.journal"), tracking_uri=mlflow_uri)
    assert [t.state.name for t in result.get_trials()] == ["COMPLETE"] * 2
    assert result.get_trials()[0].params == {"model.args.hidden": 4}  # the base spec's value first


def test_a_study_checks_the_plugin_at_every_reachable_choice(tmp_path, plugin, capsys):
    model = plugin(GOOD_MODEL.replace("def build(args, in_shape, num_classes):",
                                      "def build(args, in_shape, num_classes):\n    assert args['hidden'] < 64"))
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({
        "name": "bigchoice", "seeds": 1, "n_trials": 2, "pruner": {"name": "none"},
        "base": {"model": {"name": f"{model}:build", "args": {"hidden": 8}},
                 "data": {"name": "synthetic", "num_samples": 200}, "method": {"name": "base"}},
        "space": {"model.args.hidden": {"choices": [8, 64]}}}))
    journal = tmp_path / "s.journal"
    code = main(["--tracking-uri", f"sqlite:///{tmp_path}/store/mlflow.db", "study", "run", str(study),
                 "--storage", str(journal)])
    assert code == 2
    err = capsys.readouterr().err
    assert "raised AssertionError" in err and "model.args={'hidden': 64}" in err
    assert not journal.exists() and not (tmp_path / "store").exists()


@pytest.mark.subprocess
def test_import_sal_imports_neither_mlflow_nor_optuna():
    code = ("import sys, sal; assert 'mlflow' not in sys.modules and 'optuna' not in sys.modules; "
            "assert callable(sal.train) and callable(sal.run_study) and 'sal' in sal.REGISTRY")
    proc = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
