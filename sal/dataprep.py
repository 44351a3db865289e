"""``sal data prepare``: convert the layouts public archives ship into the class-per-folder tree sal reads.

Each conversion writes a new tree of symbolic links (no copy of the images) in a folder that must not exist
yet; the source is only read, never moved or changed. Checkpoint files of torchvision's DenseNets saved
with old key names (``denselayer1.norm.1.weight``) are loaded the way torchvision loads them, renaming the
keys (``denselayer1.norm1.weight``).
"""

from __future__ import annotations

import os
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


# A conversion is planned in full (every image and the path it gets under OUT) before anything is written, so
# every refusal (a name that would leave OUT, a missing file, an empty source) leaves no trace.
Plan = list[tuple[Path, Path]]  # (image of the source, its path relative to OUT)


def _plain(name: str) -> bool:
    """A single path component: no separator, not '.', '..' or empty (it cannot lead out of its folder)."""
    return name not in ("", ".", "..") and "/" not in name and "\0" not in name and (os.altsep or "/") not in name


def _pacs(src: Path) -> Plan:
    """domain/class/img -> class/domain_img (the 7 classes pooled over the 4 domains)."""
    plan = []
    for domain in sorted(d for d in src.iterdir() if d.is_dir()):
        for cls in sorted(c for c in domain.iterdir() if c.is_dir()):
            for img in sorted(p for p in cls.rglob("*") if p.suffix.lower() in _IMAGES):
                plan.append((img, Path(cls.name) / f"{domain.name}_{img.name}"))
    return plan


def _annotation_problem(name: str, cls: str, img: Path) -> str | None:
    if not _plain(name):
        return f"{name!r} is not a plain file name of val/images"
    if not img.is_file():
        return f"{name!r} names no image of val/images"
    if not _plain(cls):
        return f"class {cls!r} is not a plain class name (it would write outside OUT)"
    return None


def _tiny_imagenet(src: Path) -> Plan:
    """train/<wnid>/images/* -> train/<wnid>/*; val/images + val_annotations.txt -> val/<wnid>/*."""
    if not (src / "train").is_dir():
        raise SpecError([f"{src} holds no train/ folder (Tiny-ImageNet's train/<wnid>/images); fix: give the unpacked "
                         "tiny-imagenet-200 folder"])
    annotations = src / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise SpecError([f"{annotations} does not exist; fix: give the unpacked tiny-imagenet-200 folder, which "
                         "holds val/images and val/val_annotations.txt"])
    plan = []
    for cls in sorted(c for c in (src / "train").iterdir() if c.is_dir()):
        for img in sorted(p for p in cls.rglob("*") if p.suffix.lower() in _IMAGES):
            plan.append((img, Path("train") / cls.name / img.name))
    try:
        lines = annotations.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([f"{annotations} cannot be read as text ({err}); fix: use the archive's own "
                         "val_annotations.txt"]) from None
    problems = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        img = src / "val" / "images" / parts[0]
        problem = (f"{line[:80]!r} has no class after a tab" if len(parts) < 2
                   else _annotation_problem(parts[0], parts[1], img))
        if problem:
            problems.append(f"{annotations} line {number}: {problem}")
        else:
            plan.append((img, Path("val") / parts[1] / img.name))
    if problems:
        raise SpecError(problems[:10] + [f"({len(problems)} lines in all)"] * (len(problems) > 10)
                        + ["fix: use the archive's own val_annotations.txt (an image file name, a tab, the class "
                           "wnid such as n01443537)"])
    return plan


def _corel1k(src: Path) -> Plan:
    """N.jpg -> <class N // 100>/N.jpg (the 10 classes of 100 images, in the archive's order)."""
    files = sorted((p for p in src.iterdir() if p.is_file() and p.stem.isdigit() and p.suffix.lower() in _IMAGES),
                   key=lambda p: int(p.stem))
    if not files or int(files[-1].stem) >= 100 * len(COREL_CLASSES):
        raise SpecError([f"{src}: expected numbered files 0..999 (Corel-1k); fix: point at the unpacked archive"])
    return [(img, Path(COREL_CLASSES[int(img.stem) // 100]) / img.name) for img in files]


LAYOUTS = {"pacs": _pacs, "tiny_imagenet": _tiny_imagenet, "corel1k": _corel1k}


def _check_out(src: Path, out: Path) -> None:
    """Refuse an OUT sal must not write: one that exists (a dangling link too), one inside the source (which
    is only read), one under a folder this user cannot write."""
    if out.is_symlink():
        raise SpecError([f"{out} is a symbolic link (to {os.readlink(out)}); fix: give a new folder (sal writes "
                         "no tree through a link)"])
    if out.exists():
        raise SpecError([f"{out} exists; fix: give a new folder (sal never writes into one it did not create)"])
    real_src, real_out = src.resolve(), out.resolve()
    if real_src == real_out or real_src in real_out.parents:
        raise SpecError([f"{out} is inside the source {src}; fix: give a folder outside it (the source is only "
                         "read, never changed)"])
    existing = out.parent.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise SpecError([f"{out} cannot be created ({existing} is not a folder this user can write); fix: give a "
                         "folder you can write"])


def _check_plan(kind: str, src: Path, plan: Plan) -> None:
    if not plan:
        raise SpecError([f"{src} holds no images in the {kind} layout; fix: give the unpacked {kind} archive"])
    seen: dict[Path, Path] = {}
    for img, rel in plan:
        if rel.is_absolute() or not all(_plain(part) for part in rel.parts):  # the layouts check; this is the guard
            raise SpecError([f"{img} would be linked as {rel}, outside the new folder; fix: rename it in a copy"])
        if rel in seen:
            raise SpecError([f"{seen[rel]} and {img} would both be linked as {rel}; fix: rename one of them in a "
                             "copy of the source"])
        seen[rel] = img


def prepare(kind: str, src: str | Path, out: str | Path) -> int:
    """Write the class-per-folder tree of ``src`` (layout ``kind``) into the new folder ``out``; returns the
    number of images linked. Everything is checked first; the tree is then built beside ``out`` and moved
    into place at the end."""
    import shutil

    if kind not in LAYOUTS:
        raise SpecError([f"layout {kind!r} is not one sal converts; fix: use one of {sorted(LAYOUTS)}"])
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if not src.is_dir():
        raise SpecError([f"{src} is not a folder; fix: give the unpacked {kind} archive"])
    _check_out(src, out)
    staging = out.with_name(f".{out.name}.sal-staging")
    if staging.exists() or staging.is_symlink():
        raise SpecError([f"{staging} exists (an interrupted prepare?); fix: remove it, then run again"])
    plan = LAYOUTS[kind](src)
    _check_plan(kind, src, plan)
    try:
        for img, rel in plan:
            dest = staging / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.symlink_to(img.resolve())
        os.replace(staging, out)
    except BaseException:
        if staging.exists():
            shutil.rmtree(staging)  # sal wrote it, just now
        raise
    return len(plan)
