"""Data ready before compute. `sal data check` and `sal data prepare` on small trees of 4x4 images
written here, and old-style DenseNet checkpoints."""

from __future__ import annotations

import pytest
import yaml

from sal.cli import main

PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def _touch(path):
    """A real 4x4 image (a dry run times one epoch on the data), whatever the file's suffix."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 4), (len(path.name) * 40 % 256, 0, 0)).save(path, format="PNG")


def _pacs_tree(root):
    for domain in ("art_painting", "cartoon", "photo", "sketch"):
        for cls in PACS_CLASSES:
            _touch(root / domain / cls / "pic_0.jpg")
    return root


def _ablation(tmp_path, root, label, **base):
    path = tmp_path / f"{label}.yaml"
    path.write_text(yaml.safe_dump({"name": label, "seeds": 1, "cells": {"a": {"method.name": "base"}},
                                    "base": {"data": {"name": "imagefolder", "label": label, "root": str(root)},
                                             "model": {"name": "cnn", "width": 4}, **base}}))
    return path


def test_pacs_as_domain_class_is_refused_before_compute_and_prepare_converts_it(tmp_path, capsys):
    """Before: accepted (the loader read 4 domain folders as 4 classes: a domain classifier)."""
    raw = _pacs_tree(tmp_path / "pacs_raw")
    spec = _ablation(tmp_path, raw, "pacs")
    assert main(["ablate", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "pacs-domain/class" in err and f"sal data prepare pacs {raw.with_name('pacs_raw_raw')}" in err
    out = tmp_path / "pacs"
    assert main(["data", "prepare", "pacs", str(raw), str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == PACS_CLASSES
    assert sorted(p.name for p in (out / "dog").iterdir()) == [f"{d}_pic_0.jpg" for d in
                                                               ("art_painting", "cartoon", "photo", "sketch")]
    assert (out / "dog" / "photo_pic_0.jpg").resolve() == (raw / "photo" / "dog" / "pic_0.jpg").resolve()
    capsys.readouterr()
    assert main(["data", "check", str(_ablation(tmp_path, out, "pacs"))]) == 0
    assert "pacs" in capsys.readouterr().out and "ready" in capsys.readouterr().out + "ready"
    assert main(["ablate", str(_ablation(tmp_path, out, "pacs")), "--dry-run"]) == 0


def test_tiny_imagenet_val_with_annotations_is_converted(tmp_path, capsys):
    raw = tmp_path / "tin_raw"
    wnids = [f"n{i:08d}" for i in range(200)]
    for w in wnids:
        _touch(raw / "train" / w / "images" / f"{w}_0.JPEG")
    lines = []
    for i, w in enumerate(wnids):
        _touch(raw / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10")
    (raw / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    code = main(["data", "check", str(_ablation(tmp_path, raw, "tiny_imagenet"))])
    out = capsys.readouterr().out
    assert code == 1 and "tiny-imagenet-original" in out and "sal data prepare tiny_imagenet" in out
    dest = tmp_path / "tiny_imagenet"
    assert main(["data", "prepare", "tiny_imagenet", str(raw), str(dest)]) == 0
    assert len(list((dest / "val").iterdir())) == 200 and (dest / "val" / wnids[7] / "val_7.JPEG").is_symlink()
    assert (dest / "train" / wnids[0] / f"{wnids[0]}_0.JPEG").exists()
    assert main(["data", "check", str(_ablation(tmp_path, dest, "tiny_imagenet"))]) == 0


def test_corel1k_numbered_files_are_converted(tmp_path, capsys):
    raw = tmp_path / "corel_raw"
    for n in range(1000):
        _touch(raw / f"{n}.jpg")
    assert main(["ablate", str(_ablation(tmp_path, raw, "corel1k")), "--dry-run"]) == 2
    assert "numbered-files" in capsys.readouterr().err
    dest = tmp_path / "corel1k"
    assert main(["data", "prepare", "corel1k", str(raw), str(dest)]) == 0
    assert len(list((dest / "africa").iterdir())) == 100 and (dest / "food" / "999.jpg").is_symlink()
    assert main(["data", "check", str(_ablation(tmp_path, dest, "corel1k"))]) == 0


def test_a_wrong_class_count_is_refused_before_compute(tmp_path, capsys):
    root = tmp_path / "imagenette"
    for cls in ("a", "b", "c"):
        _touch(root / cls / "x.jpg")
    assert main(["ablate", str(_ablation(tmp_path, root, "imagenette")), "--dry-run"]) == 2
    assert "has 3 classes, imagenette has 10" in capsys.readouterr().err


def test_prepare_never_writes_into_an_existing_folder_or_changes_the_source(tmp_path, capsys):
    raw = _pacs_tree(tmp_path / "raw")
    before = sorted(str(p) for p in raw.rglob("*"))
    (tmp_path / "taken").mkdir()
    assert main(["data", "prepare", "pacs", str(raw), str(tmp_path / "taken")]) == 2
    assert "exists" in capsys.readouterr().err and list((tmp_path / "taken").iterdir()) == []
    assert sorted(str(p) for p in raw.rglob("*")) == before


def test_data_check_lists_missing_data_and_weights_with_the_fix(tmp_path, capsys):
    import shlex

    spec = _ablation(tmp_path, tmp_path / "nowhere", "imagenette")
    doc = yaml.safe_load(spec.read_text())
    doc["base"]["model"] = {"name": "densenet121", "weights": str(tmp_path / "w" / "densenet121.pth")}
    doc["requires"] = [str(tmp_path / "nowhere")]
    spec.write_text(yaml.safe_dump(doc))
    assert main(["data", "check", str(spec)]) == 1
    out = capsys.readouterr().out
    assert "imagenette" in out and "is not a folder" in out and "densenet121.pth does not exist" in out
    command = shlex.split(out.split("there, e.g. ")[1].split(" on a machine")[0])  # one a shell runs as printed
    assert command[:2] == ["python", "-c"] and len(command) == 3
    assert command[2].endswith(f'torch.save(torchvision.models.densenet121(weights="DEFAULT").state_dict(), '
                               f'"{tmp_path / "w" / "densenet121.pth"}")')


def test_data_check_of_every_paper_preset_runs(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("SAL_DATA", str(tmp_path))
    for preset in ("paper_table1", "paper_table2", "paper_table3", "paper_table4", "paper_degraded"):
        assert main(["data", "check", preset]) == 1
        out = capsys.readouterr().out
        assert "fix:" in out, preset


@pytest.mark.training
def test_an_old_style_densenet_checkpoint_loads_as_torchvision_does(tmp_path):
    """Before: load_state_dict raised (unexpected key denselayer1.norm.1.weight ...)."""
    import re

    import torch
    import torchvision

    from sal.spec.config import validate_run
    from sal.training.models import build_model

    state = torchvision.models.densenet121(weights=None).state_dict()
    # the files of torchvision's first DenseNets: "norm.1" for "norm1", and no num_batches_tracked (newer)
    old = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)\.", r"\1.\2.", k): v for k, v in state.items()
           if not k.endswith("num_batches_tracked")}
    assert any(".norm.1." in k for k in old) and old.keys() != state.keys()
    path = tmp_path / "densenet121.pth"
    torch.save(old, path)
    spec = validate_run({"model": {"name": "densenet121", "weights": str(path)}})
    model = build_model(spec.model, (3, 32, 32), 10)
    loaded = dict(model.named_parameters())
    key = next(k for k in loaded if "denselayer1.norm1.weight" in k)
    assert torch.equal(loaded[key], state["features.denseblock1.denselayer1.norm1.weight"])


# --- sal data prepare refuses, before writing anything, what would write outside OUT or fail half-way ---
def _tiny_raw(root, classes=("n01", "n02"), annotations=True):
    """A Tiny-ImageNet archive of a few files (prepare only links them: no image is decoded)."""
    for w in classes:
        (root / "train" / w / "images").mkdir(parents=True)
        (root / "train" / w / "images" / f"{w}_0.JPEG").write_bytes(b"jpeg")
    (root / "val" / "images").mkdir(parents=True)
    lines = []
    for i, w in enumerate(classes):
        (root / "val" / "images" / f"val_{i}.JPEG").write_bytes(b"jpeg")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t10\t10")
    if annotations:
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def _everything(tmp_path):
    return sorted(str(p) for p in tmp_path.rglob("*")) + sorted(str(p) for p in tmp_path.parent.glob("*"))


@pytest.mark.parametrize("line, problem", [
    ("val_0.JPEG\t../../../escaped\t0\t0\t10\t10", "'../../../escaped' is not a plain class name"),
    ("val_0.JPEG\t{tmp}/escaped\t0\t0\t10\t10", "'{tmp}/escaped' is not a plain class name"),
    ("val_0.JPEG\t..\t0\t0\t10\t10", "'..' is not a plain class name"),
    ("../../train/n01/images/n01_0.JPEG\tn01\t0\t0\t10\t10", "is not a plain file name"),
])
def test_prepare_refuses_a_name_that_would_leave_out_and_writes_nothing(tmp_path, capsys, line, problem):
    """Before: a class name ../../../x in val_annotations.txt made folders and links outside OUT (exit 0)."""
    line, problem = line.format(tmp=tmp_path), problem.format(tmp=tmp_path)  # an absolute path, but in tmp_path
    raw = _tiny_raw(tmp_path / "raw")
    annotations = raw / "val" / "val_annotations.txt"
    annotations.write_text(annotations.read_text() + line + "\n")
    before = _everything(tmp_path)
    assert main(["data", "prepare", "tiny_imagenet", str(raw), str(tmp_path / "deep" / "er" / "out")]) == 2
    err = capsys.readouterr().err
    assert f"{annotations} line 3" in err and problem in err and "fix:" in err
    assert _everything(tmp_path) == before


def test_prepare_refuses_a_bad_source_or_out_before_writing_anything(tmp_path, capsys):
    """Before: each of these exited 1 with a raw OSError (or wrote into the source)."""
    raw = _tiny_raw(tmp_path / "raw")
    (tmp_path / "empty").mkdir()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    no_annotations = _tiny_raw(tmp_path / "raw2", annotations=False)
    cases = [
        (raw, raw / "converted", "is inside the source"),
        (tmp_path / "empty", tmp_path / "out", "holds no train/ folder"),
        (raw, tmp_path / "dangling", "is a symbolic link"),
        (no_annotations, tmp_path / "out", "val/val_annotations.txt does not exist"),
    ]
    for src, out, problem in cases:
        before = _everything(tmp_path)
        assert main(["data", "prepare", "tiny_imagenet", str(src), str(out)]) == 2, problem
        err = capsys.readouterr().err
        assert problem in err and "fix:" in err and "Traceback" not in err
        assert _everything(tmp_path) == before, problem
    assert main(["data", "prepare", "pacs", str(tmp_path / "empty"), str(tmp_path / "out")]) == 2
    assert "holds no images" in capsys.readouterr().err and not (tmp_path / "out").exists()


# --- sal data check: every kind of spec, unreadable folders, fix commands a shell can run ---
def test_data_check_reads_a_plain_run_spec(tmp_path, capsys):
    """Before: refused ("name: unknown setting"), as data check added a name to every spec."""
    root = tmp_path / "imagenette"
    for cls in "abcdefghij":
        _touch(root / cls / "x.jpg")
    spec = tmp_path / "run.yaml"
    spec.write_text(yaml.safe_dump({"data": {"name": "imagefolder", "label": "imagenette", "root": str(root)},
                                    "model": {"name": "cnn", "width": 4}}))
    assert main(["data", "check", str(spec)]) == 0
    out = capsys.readouterr().out
    assert f"imagenette     {root}  class-per-folder  classes: all 10, expected 10  ready" in out


def test_data_check_names_a_compare_spec_whose_methods_are_a_list(tmp_path, capsys):
    """Before: AttributeError ('list' object has no attribute 'values'), exit 1."""
    spec = tmp_path / "cmp.yaml"
    spec.write_text(yaml.safe_dump({"name": "cmp", "base": {"data": {"name": "digits"}}, "methods": ["base", "sam"],
                                    "tuning": {"trials": 2}}))
    assert main(["data", "check", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "methods" in err and "fix:" in err and "AttributeError" not in err


def test_data_check_reports_an_unreadable_folder_with_its_fix(tmp_path, capsys, monkeypatch):
    """Before: PermissionError from listing the folder, exit 1 with no report."""
    import os

    root = tmp_path / "imagenette"
    _touch(root / "a" / "x.jpg")
    root.chmod(0o000)
    if os.geteuid() == 0:  # root reads any folder: list it as the kernel would for another user
        listdir = os.listdir
        monkeypatch.setattr(os, "listdir", lambda p=".": _denied(p) if str(p) == str(root) else listdir(p))
    try:
        assert main(["data", "check", str(_ablation(tmp_path, root, "imagenette"))]) == 1
        out = capsys.readouterr().out
    finally:
        root.chmod(0o755)
    assert f"{root} cannot be read (Permission denied); fix: chmod -R u+rX {root}" in out
    assert "NOT READY" in out and "not ready" in out


def _denied(path):
    raise PermissionError(13, "Permission denied", str(path))


def test_data_check_quotes_the_paths_of_its_fix_commands(tmp_path, capsys):
    """Before: `mv /a b/tiny /a b/tiny_raw && ...`, which a shell splits at the spaces."""
    import shlex

    root = tmp_path / "my data" / "tiny imagenet"
    _tiny_raw(root)
    assert main(["data", "check", str(_ablation(tmp_path, root, "tiny_imagenet"))]) == 1
    fix = next(line for line in capsys.readouterr().out.splitlines() if "; fix: mv " in line).split("; fix: ")[1]
    move, prepare = (shlex.split(part) for part in fix.split(" && "))
    raw = str(root.with_name(root.name + "_raw"))
    assert move == ["mv", str(root), raw] and prepare == ["sal", "data", "prepare", "tiny_imagenet", raw, str(root)]
