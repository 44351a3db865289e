"""Spec errors caught before anything runs (exit 2): duplicate YAML keys, a missing data.root, an empty
file, empty cells; and a report's unknown metric named as such."""

from __future__ import annotations

import pytest
import yaml

from sal.cli import main
from sal.spec.config import SpecError, load_run_spec
from sal.spec.study_spec import load_study_spec
from sal.sweeps.ablation import load_ablation
from tests.helpers import TINY_BASE

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
    from sal.core.yamlio import load_unique

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


# --- input that hung or failed late -------------------------------------------------------------
ALIAS_BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]) + "\n"


def _exit_and_err(capsys, *argv):
    code = main(list(argv))
    return code, capsys.readouterr().err


def test_a_yaml_alias_bomb_is_refused_in_well_under_a_second(tmp_path, capsys):
    """Before: the expansion of ${SAL_DATA} walked 9**9 nodes and `sal ablate --dry-run` hung, memory growing."""
    import time

    path = tmp_path / "bomb.yaml"
    path.write_text("name: bomb\ncells: {a: {method.name: base}}\n" + ALIAS_BOMB)
    start = time.monotonic()
    code, err = _exit_and_err(capsys, "ablate", str(path), "--dry-run")
    assert time.monotonic() - start < 1.0
    assert code == 2 and f"{path}:" in err and "aliases" in err and "fix:" in err


def test_a_recursive_alias_is_refused(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("name: loop\ncells: &c {a: [*c]}\n")
    code, err = _exit_and_err(capsys, "ablate", str(path), "--dry-run")
    assert code == 2 and "refers to itself" in err


def test_small_aliases_still_work(tmp_path):
    from sal.core.yamlio import load_unique

    assert load_unique("a: &a [1, 2]\nb: [*a, *a]\n")["b"] == [[1, 2], [1, 2]]


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01binary\x00", "name: caf\xe9\n".encode("latin-1")])
def test_a_binary_or_non_utf8_spec_exits_2_naming_the_file(tmp_path, capsys, content):
    """Before: exit 1, 'UnicodeDecodeError ... finished runs are kept; re-run to resume'."""
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    code, err = _exit_and_err(capsys, "ablate", str(path), "--dry-run")
    assert code == 2 and f"{path} is not a UTF-8 text file" in err and "fix:" in err and "resume" not in err


def test_a_yaml_syntax_error_names_the_file_not_unicode_string(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\n  bad: [\n")
    code, err = _exit_and_err(capsys, "ablate", str(path), "--dry-run")
    assert code == 2 and f'in "{path}", line 2' in err and "<unicode string>" not in err


def test_a_spec_path_that_is_a_folder_says_so(tmp_path, capsys):
    folder = tmp_path / "specs.yaml"
    folder.mkdir()
    code, err = _exit_and_err(capsys, "ablate", str(folder), "--dry-run")
    assert code == 2 and "is a folder, not a file" in err and "does not exist" not in err


def test_seeds_three_says_what_seeds_may_be(tmp_path, capsys):
    """Before: 'seeds.int=...' and 'seeds.list[int]=...', pydantic's union members, as if they were settings."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "seeds": "three", "base": TINY_BASE,
                                    "cells": {"a": {"method.name": "base"}}}))
    code, err = _exit_and_err(capsys, "ablate", str(path), "--dry-run")
    assert code == 2 and "seeds='three'" in err and "seeds.int" not in err and "list[int]" not in err
    assert "a whole number" in err or "integer" in err


def test_train_given_an_ablation_file_points_to_sal_ablate(tmp_path, capsys):
    """Before: every ablation key listed as an unknown run setting."""
    code, err = _exit_and_err(capsys, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "train", "--config",
                              "ablations/quick.yaml")
    assert code == 2 and "is an ablation spec" in err and "sal ablate ablations/quick.yaml" in err
    assert "unknown setting" not in err and not (tmp_path / "m.db").exists()


def test_compare_given_an_ablation_file_says_so_without_printing_the_file(tmp_path, capsys):
    """Before: 'methods={...the whole file...}: Field required'."""
    code, err = _exit_and_err(capsys, "compare", "ablations/quick.yaml", "--out", str(tmp_path / "r"))
    assert code == 2 and "is an ablation spec" in err and "sal ablate" in err
    assert "SAL vs Adam" not in err and len(err) < 600


def test_a_missing_required_key_is_named_without_the_whole_input(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "c", "base": TINY_BASE, "tuning": {"trials": 2}}))
    code, err = _exit_and_err(capsys, "compare", str(path), "--out", str(tmp_path / "r"))
    assert code == 2 and "methods: missing" in err and "'base'" not in err


@pytest.mark.parametrize("key, value", [("optim.lr", ".inf"), ("method.sigma_y", ".inf"), ("optim.lr", ".nan"),
                                        ("method.rho", "-.inf")])
def test_an_infinite_or_nan_setting_is_refused(tmp_path, capsys, key, value):
    """Before: optim.lr=.inf and method.sigma_y=.inf were accepted and trained to divergence."""
    path = tmp_path / "inf.yaml"
    path.write_text(yaml.safe_dump({"name": "inf", "base": {**TINY_BASE, "method": {"name": "sal"}},
                                    "cells": {"a": {}}}))
    code, err = _exit_and_err(capsys, "ablate", str(path), "--dry-run", "--set", f"{key}={value}")
    assert code == 2 and key in err and "finite" in err and "fix:" in err


def test_an_infinite_float_in_an_ablation_cell_or_a_study_space_is_refused(tmp_path, capsys):
    path = tmp_path / "cell.yaml"
    path.write_text("name: c\nbase: {data: {name: synthetic}}\ncells: {a: {method.name: sal, method.sigma_y: .inf}}\n")
    code, err = _exit_and_err(capsys, "ablate", str(path), "--dry-run")
    assert code == 2 and "method.sigma_y" in err and "finite" in err
    study = tmp_path / "st.yaml"
    study.write_text("name: st\nbase: {data: {name: synthetic}}\nspace:\n  method.rho: {low: 1.0e-4, high: .inf}\n")
    with pytest.raises(SpecError, match="finite"):
        load_study_spec(study)


@pytest.mark.parametrize("flag, value", [("--rope", "nan"), ("--rope", "inf"), ("--alpha", "nan")])
def test_report_float_flags_must_be_finite(tmp_path, capsys, flag, value):
    """Before: `sal report --rope nan` exited 0."""
    code, err = _exit_and_err(capsys, "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "report", "x", flag,
                              value, "--out", str(tmp_path / "r"))
    assert code == 2 and f"{flag}={value}" in err and "finite" in err and not (tmp_path / "r").exists()
