"""Spec errors caught before anything runs (exit 2): duplicate YAML keys, a missing data.root, an empty
file, empty cells; and a report's unknown metric named as such."""

from __future__ import annotations

import pytest
import yaml

from sal.ablation import load_ablation
from sal.cli import main
from sal.config import SpecError, load_run_spec
from sal.study_spec import load_study_spec
from tests.test_ablation import TINY_BASE

TWO_ADAM_CELLS = """\
name: dup
seeds: 2
baseline: adam
base: {data: {name: synthetic, num_samples: 300}, model: {name: mlp, width: 8}, train: {epochs: 2}}
cells:
  adam: {method.name: base}
  sal: {method.name: sal}
  adam: {method.name: sal}
"""


def test_a_duplicate_key_is_an_error_with_both_lines(tmp_path, capsys):
    path = tmp_path / "dup.yaml"
    path.write_text(TWO_ADAM_CELLS)
    with pytest.raises(SpecError) as err:
        load_ablation(path)
    assert "found the key 'adam' twice (lines 6 and 8)" in str(err.value)
    assert main(["ablate", str(path), "--dry-run"]) == 2
    assert "twice" in capsys.readouterr().err


def test_duplicate_keys_are_refused_in_every_spec_sal_reads(tmp_path):
    run = tmp_path / "run.yaml"
    run.write_text("optim: {lr: 0.1}\noptim: {lr: 0.2}\n")
    with pytest.raises(SpecError, match="twice"):
        load_run_spec(run)
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nspace:\n  method.rho: {low: 1.0e-4, high: 1.0e-2}\n  method.rho: {low: 0.1, high: 1}\n")
    with pytest.raises(SpecError, match="twice"):
        load_study_spec(study)
    from sal.yamlio import load_unique

    # YAML merge keys may still be overridden: that is what they are for
    assert load_unique("common: &c {a: 1, b: 2}\ncell: {<<: *c, b: 3}\n")["cell"] == {"a": 1, "b": 3}


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagefolder"])
def test_a_missing_data_root_stops_an_ablation_before_it_runs(tmp_path, name, capsys):
    path = tmp_path / "roots.yaml"
    path.write_text(yaml.safe_dump({"name": "roots", "base": TINY_BASE, "seeds": 2, "cells": {
        "ok": {"method.name": "base"},
        "unset": {"method.name": "base", "data.name": name},
        "gone": {"method.name": "base", "data.name": name, "data.root": str(tmp_path / "no_such_folder")}}}))
    with pytest.raises(SpecError) as err:
        load_ablation(path)
    text = str(err.value)
    assert f"cell unset: data.root is not set for data.name={name!r}" in text
    assert f"cell gone: data.root={str(tmp_path / 'no_such_folder')!r} is not a folder" in text
    assert main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "ablate", str(path), "--storage",
                 str(tmp_path / "q.journal")]) == 2
    assert "fix:" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roots.yaml"]  # no FAILED runs, no queue


def test_a_missing_data_root_stops_a_study(tmp_path):
    path = tmp_path / "st.yaml"
    path.write_text(yaml.safe_dump({"name": "st", "base": {**TINY_BASE, "method": {"name": "sal", "warmup": 1},
                                                           "data": {"name": "cifar10", "root": str(tmp_path / "nope")}},
                                    "space": {"method.rho": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    with pytest.raises(SpecError, match=r"base\.data\.root=.*is not a folder"):
        load_study_spec(path)


def test_an_empty_file_is_an_error_not_a_default_ablation(tmp_path, capsys):
    path = tmp_path / "empty.yaml"
    path.write_text("\n# nothing yet\n")
    assert main(["ablate", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "empty.yaml is empty" in err and "fix:" in err
    with pytest.raises(SpecError, match="is empty"):
        load_study_spec(path)


def test_empty_cells_say_so(tmp_path):
    path = tmp_path / "nocells.yaml"
    path.write_text(yaml.safe_dump({"name": "nocells", "base": TINY_BASE, "baseline": "adam", "cells": {}}))
    with pytest.raises(SpecError) as err:
        load_ablation(path)
    assert "cells is empty; fix: name at least one cell" in str(err.value)
    assert "is not a cell" not in str(err.value)
