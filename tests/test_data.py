"""Data sets as device tensors, seeded splits, on-device augmentation, torchvision formats on disk."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from sal.spec.config import DataSpec, SpecError
from sal.training.data import augment_batch, load_data


def test_digits_splits_are_disjoint_seeded_and_normalised():
    a = load_data(DataSpec(name="digits", normalize=False))
    assert a.in_shape == (1, 8, 8) and a.num_classes == 10
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.train.x.min() >= 0 and a.train.x.max() <= 1
    b = load_data(DataSpec(name="digits", normalize=False))
    assert torch.equal(a.test.x, b.test.x)
    c = load_data(DataSpec(name="digits", normalize=False, split_seed=3))
    assert not torch.equal(a.test.y, c.test.y)
    # no sample of the test split is in the training split
    train_rows = {tuple(r) for r in a.train.x.flatten(1).tolist()}
    overlap = sum(tuple(r) in train_rows for r in a.test.x.flatten(1).tolist())
    assert overlap <= 5  # digits has a few exact duplicate images, not shared indices
    n = load_data(DataSpec(name="digits"))
    assert n.train.x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert n.train.x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_mnist1d_is_generated_offline_and_leaves_global_rngs_alone():
    np.random.seed(123)
    state = np.random.get_state()[1].copy()
    d = load_data(DataSpec(name="mnist1d", num_samples=1000))
    assert d.in_shape == (1, 40) and d.num_classes == 10
    assert len(d.test) == 200 and len(d.train) + len(d.val) == 800
    assert np.array_equal(np.random.get_state()[1], state)


def test_train_subset_and_resolution():
    d = load_data(DataSpec(name="digits", train_subset=100, resolution=16))
    assert len(d.train) == 100 and d.in_shape == (1, 16, 16)


def _write_cifar10(root, n_train=20, n_test=10):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(n_train // 5), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


def test_cifar10_loader_reads_the_python_format(tmp_path):
    _write_cifar10(tmp_path)
    d = load_data(DataSpec(name="cifar10", root=str(tmp_path), val_fraction=0.2, normalize=False))
    assert d.in_shape == (3, 32, 32)
    assert len(d.train) == 16 and len(d.val) == 4 and len(d.test) == 10
    assert 0.0 <= d.train.x.min() and d.train.x.max() <= 1.0


def test_cifar100_loader_reads_the_python_format(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name, n in (("train", 30), ("test", 10)):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "fine_labels": rng.integers(0, 100, n).tolist()}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    d = load_data(DataSpec(name="cifar100", root=str(tmp_path), resolution=16))
    assert d.in_shape == (3, 16, 16) and len(d.test) == 10


def test_missing_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(SpecError, match="data.root"):
        load_data(DataSpec(name="cifar10", root=str(tmp_path / "nowhere")))
    with pytest.raises(SpecError, match="cifar-10-batches-py"):
        load_data(DataSpec(name="cifar10", root=str(tmp_path)))


def _write_image_folder(root, classes=("cat", "dog"), per_class=4, size=(20, 14)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_image_folder_with_train_and_val_subfolders(tmp_path):
    _write_image_folder(tmp_path / "train", per_class=6)
    _write_image_folder(tmp_path / "val", per_class=2)
    d = load_data(DataSpec(name="imagefolder", root=str(tmp_path), resolution=8, val_fraction=0.25))
    assert d.in_shape == (3, 8, 8) and d.num_classes == 2
    assert len(d.test) == 4 and len(d.train) + len(d.val) == 12


def test_image_folder_without_split_is_split_by_seed(tmp_path):
    _write_image_folder(tmp_path, classes=("a", "b", "c"), per_class=5)
    d = load_data(DataSpec(name="imagefolder", root=str(tmp_path), resolution=12, test_fraction=0.2))
    assert d.num_classes == 3 and len(d.test) == 3 and d.in_shape == (3, 12, 12)


def test_augmentation_flips_and_shifts_per_sample():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment_batch(x, g, flip=False, translate=0), x)
    flipped = augment_batch(x.repeat(64, 1, 1, 1), g, flip=True, translate=0)
    is_flip = [torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flipped)]
    assert 10 < sum(is_flip) < 118  # about half, drawn per sample
    shifted = augment_batch(x.repeat(64, 1, 1, 1), g, flip=False, translate=1)
    assert shifted.shape == (128, 1, 4, 4)
    assert sum(not torch.equal(s, x[i % 2]) for i, s in enumerate(shifted)) > 64
    seq = augment_batch(torch.randn(8, 1, 40), g, flip=True, translate=3)
    assert seq.shape == (8, 1, 40)
