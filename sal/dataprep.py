"""``sal data prepare``: convert the layouts public archives ship into the class-per-folder tree sal reads.

Each conversion writes a new tree of symbolic links (no copy of the images) in a folder that must not exist
yet; the source is only read, never moved or changed. Checkpoint files of torchvision's DenseNets saved
with old key names (``denselayer1.norm.1.weight``) are loaded the way torchvision loads them, renaming the
keys (``denselayer1.norm1.weight``).
"""

from __future__ import annotations

from pathlib import Path

from .spec.config import SpecError
from .sweeps.datacheck import IMAGE_SUFFIXES as _IMAGES
from .training.weights import (  # re-exported: `sal data prepare` checks them
    load_backbone_weights,
    rename_old_densenet_keys,
)

__all__ = ["LAYOUTS", "prepare", "load_backbone_weights", "rename_old_densenet_keys"]

COREL_CLASSES = ("africa", "beach", "buildings", "buses", "dinosaurs", "elephants", "flowers", "horses",
                 "mountains", "food")  # Corel-1k: 100 images each, numbered in this order
# torchvision.models.densenet._load_state_dict's pattern


def _link(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(src.resolve())


def _pacs(src: Path, out: Path) -> int:
    """domain/class/img -> class/domain_img (the 7 classes pooled over the 4 domains)."""
    n = 0
    for domain in sorted(d for d in src.iterdir() if d.is_dir()):
        for cls in sorted(c for c in domain.iterdir() if c.is_dir()):
            for img in sorted(p for p in cls.rglob("*") if p.suffix.lower() in _IMAGES):
                _link(img, out / cls.name / f"{domain.name}_{img.name}")
                n += 1
    return n


def _tiny_imagenet(src: Path, out: Path) -> int:
    """train/<wnid>/images/* -> train/<wnid>/*; val/images + val_annotations.txt -> val/<wnid>/*."""
    n = 0
    for cls in sorted(c for c in (src / "train").iterdir() if c.is_dir()):
        for img in sorted(p for p in cls.rglob("*") if p.suffix.lower() in _IMAGES):
            _link(img, out / "train" / cls.name / img.name)
            n += 1
    annotations = src / "val" / "val_annotations.txt"
    for number, line in enumerate(annotations.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        img = src / "val" / "images" / parts[0]
        if len(parts) < 2 or not img.is_file():
            raise SpecError([f"{annotations} line {number}: {line[:80]!r} names no image of val/images; fix: use the "
                             "archive's own val_annotations.txt"])
        _link(img, out / "val" / parts[1] / img.name)
        n += 1
    return n


def _corel1k(src: Path, out: Path) -> int:
    """N.jpg -> <class N // 100>/N.jpg (the 10 classes of 100 images, in the archive's order)."""
    files = sorted((p for p in src.iterdir() if p.is_file() and p.stem.isdigit() and p.suffix.lower() in _IMAGES),
                   key=lambda p: int(p.stem))
    if not files or int(files[-1].stem) >= 100 * len(COREL_CLASSES):
        raise SpecError([f"{src}: expected numbered files 0..999 (Corel-1k); fix: point at the unpacked archive"])
    for img in files:
        _link(img, out / COREL_CLASSES[int(img.stem) // 100] / img.name)
    return len(files)


LAYOUTS = {"pacs": _pacs, "tiny_imagenet": _tiny_imagenet, "corel1k": _corel1k}


def prepare(kind: str, src: str | Path, out: str | Path) -> int:
    """Write the class-per-folder tree of ``src`` (layout ``kind``) into the new folder ``out``; returns the
    number of images linked. The tree is built beside ``out`` and moved into place at the end."""
    import os
    import shutil

    if kind not in LAYOUTS:
        raise SpecError([f"layout {kind!r} is not one sal converts; fix: use one of {sorted(LAYOUTS)}"])
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.is_dir():
        raise SpecError([f"{src} is not a folder; fix: give the unpacked {kind} archive"])
    if out.exists():
        raise SpecError([f"{out} exists; fix: give a new folder (sal never writes into one it did not create)"])
    staging = out.with_name(f".{out.name}.sal-staging")
    if staging.exists():
        raise SpecError([f"{staging} exists (an interrupted prepare?); fix: remove it, then run again"])
    try:
        n = LAYOUTS[kind](src, staging)
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging)  # sal wrote it, just now
        raise
    os.replace(staging, out)
    return n
