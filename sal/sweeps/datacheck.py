"""``sal data check``: is the data of a preset where it says and laid out as the loader reads it?

For every data set of a spec (each grid cell, study base): the folder, its layout, the classes per split
against the number the data set has, and the exact command that fixes a known wrong layout; for every
``model.weights`` file: that it exists and loads into its torchvision model. Nothing is decoded (classes
are counted from folders and file names), so a check takes seconds even for Tiny-ImageNet.

The layouts recognised (each converted by ``sal data prepare``, see dataprep.py) are the ones the public
archives ship: PACS as domain/class, Tiny-ImageNet with a flat ``val/images`` plus ``val_annotations.txt``,
Corel-1k as numbered files ``0.jpg .. 999.jpg``.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..core.paths import REPO_ROOT
from ..spec.config import RunSpec, SpecError

__all__ = ["EXPECTED_CLASSES", "IMAGE_SUFFIXES", "DataReport", "inspect_data", "check_specs_data", "data_reports"]

# classes of each data set the presets name (data.label); a layout read wrongly shows up as another count
EXPECTED_CLASSES = {"imagenette": 10, "imagewoof2": 10, "tiny_imagenet": 200, "eurosat_rgb": 10, "pacs": 7,
                    "corel1k": 10, "cifar10": 10, "cifar100": 100}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
PACS_DOMAINS = {"art_painting", "cartoon", "photo", "sketch"}


@dataclass
class DataReport:
    """What one data set of a spec needs and what is found; ``problems`` empty when it is ready."""

    label: str
    root: str
    layout: str = ""
    classes: dict[str, int] = field(default_factory=dict)  # split -> classes found
    expected: int | None = None
    problems: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def _images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file())


def _class_folders(folder: Path) -> list[Path]:
    """Sub-folders holding images (torchvision's ImageFolder reads each as a class, images at any depth)."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and _images(d))


def _layout(root: Path) -> tuple[str, dict[str, int]]:
    """(layout name, classes per split) as the imagefolder loader would read ``root``."""
    subdirs = {d.name for d in root.iterdir() if d.is_dir()}
    if PACS_DOMAINS <= subdirs:
        return "pacs-domain/class", {"all": len(_class_folders(root))}
    if (root / "val" / "val_annotations.txt").is_file() and (root / "val" / "images").is_dir():
        return "tiny-imagenet-original", {"train": len(_class_folders(root / "train")) if "train" in subdirs else 0,
                                          "val": len(_class_folders(root / "val"))}
    if not subdirs and any(p.stem.isdigit() and p.suffix.lower() in IMAGE_SUFFIXES for p in root.iterdir()):
        return "numbered-files", {"all": 0}
    test = next((n for n in ("val", "test") if n in subdirs), None)
    if "train" in subdirs and test is not None:
        return f"train/{test}", {"train": len(_class_folders(root / "train")), test: len(_class_folders(root / test))}
    return "class-per-folder", {"all": len(_class_folders(root))}


_FIX = {"pacs-domain/class": "pacs", "tiny-imagenet-original": "tiny_imagenet", "numbered-files": "corel1k"}


def inspect_data(spec: RunSpec) -> DataReport | None:
    """The report of one run spec's data set; None for data sal generates or bundles."""
    data = spec.data
    if data.name not in ("imagefolder", "cifar10", "cifar100"):
        return None
    label = data.display_name
    report = DataReport(label=label, root=str(data.root), expected=EXPECTED_CLASSES.get(label))
    root = Path(str(data.root)).expanduser()
    if not data.root or not root.is_dir():
        report.problems.append(f"{root} is not a folder")
        report.fixes.append(f"put {label} at {root} (nothing is downloaded), or set SAL_DATA to the folder holding it")
        return report
    try:
        _inspect_folder(report, data.name, root)
    except OSError as err:  # a folder this user may not list: the report says so, the check goes on
        report.problems = [f"{root} cannot be read ({err.strerror or err})"]
        report.fixes = [f"chmod -R u+rX {shlex.quote(str(root))} (or give a copy this user can read)"]
    return report


def _inspect_folder(report: DataReport, data_name: str, root: Path) -> None:
    """Fill ``report`` from the folder ``root`` of a data set read by torchvision (``data_name``)."""
    label = report.label
    if data_name != "imagefolder":
        report.layout = "torchvision python format"
        found = {p.name for p in root.rglob("*") if p.is_file()}
        names = {"data_batch_1", "test_batch"} if data_name == "cifar10" else {"train", "test"}
        if not names <= found:
            report.problems.append(f"{root} lacks {sorted(names - found)} of the torchvision python format")
            report.fixes.append(f"unpack cifar-{data_name[5:]}-python.tar.gz into {root}")
        return
    report.layout, report.classes = _layout(root)
    kind = _FIX.get(report.layout)
    if kind is not None:
        raw = root.with_name(root.name + "_raw")
        report.problems.append(f"{root} is laid out as {report.layout}, which the loader reads wrongly"
                               + (" (as 4 domain classes)" if kind == "pacs" else ""))
        root_q, raw_q = shlex.quote(str(root)), shlex.quote(str(raw))  # a command to paste: spaces stay in paths
        report.fixes.append(f"mv {root_q} {raw_q} && sal data prepare {kind} {raw_q} {root_q}")
        return
    counts = set(report.classes.values())
    if 0 in counts:
        empty = [split for split, n in report.classes.items() if not n]
        report.problems.append(f"{root} has no class folders with images in {empty}")
        report.fixes.append(f"one sub-folder of images per class under {root}")
    elif len(counts) > 1:
        report.problems.append(f"{root}: the splits have different numbers of classes {report.classes}")
        report.fixes.append("give train/ and val/ the same class folders")
    elif report.expected is not None and counts != {report.expected}:
        report.problems.append(f"{root} has {counts.pop()} classes, {label} has {report.expected}")
        report.fixes.append(f"check that {root} holds {label}, one folder per class")


def _weights_problem(spec: RunSpec) -> tuple[str, str] | None:
    """(problem, fix) of the spec's model.weights, or None when it loads."""
    weights = spec.model.weights
    if not weights:
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        # a command to paste: the path a Python string (json's quoting is Python's), the code one shell word
        code = (f'import torch, torchvision; torch.save(torchvision.models.{spec.model.name}(weights="DEFAULT")'
                f".state_dict(), {json.dumps(str(path))})")
        return (f"model.weights {path} does not exist",
                f"save torchvision's ImageNet weights of {spec.model.name} there, e.g. python -c {shlex.quote(code)} "
                "on a machine with internet")
    from ..training.weights import load_backbone_weights

    try:
        load_backbone_weights(spec.model.name, path)
    except SpecError as err:
        return err.problems[0], "save the state dict of the same torchvision architecture"
    return None


def data_reports(specs: list[RunSpec], *, weights: bool = True) -> tuple[list[DataReport], list[tuple[str, str]]]:
    """One report per distinct data set and the (problem, fix) of each weights file that does not load."""
    seen, reports = set(), []
    for spec in specs:
        key = (spec.data.name, spec.data.display_name, str(spec.data.root))
        if key in seen:
            continue
        seen.add(key)
        report = inspect_data(spec)
        if report is not None:
            reports.append(report)
    bad_weights, done = [], set()
    for spec in specs if weights else []:
        if spec.model.weights and spec.model.weights not in done:
            done.add(spec.model.weights)
            problem = _weights_problem(spec)
            if problem:
                bad_weights.append(problem)
    return reports, bad_weights


def check_specs_data(specs) -> None:
    """Before compute: refuse a data set whose folder the loader would read wrongly (a known layout to convert,
    or a class count that is not the data set's). Missing folders are reported by config.missing_data_root."""
    reports, _ = data_reports(list(specs), weights=False)
    # only what is known to be wrong: an archive's layout, or the class count of a data set sal knows; a folder
    # of unknown data is the loader's to read (its errors end the run as FAILED, as any crash does)
    problems = [f"data {r.label}: {p}; fix: {f}" for r in reports
                if Path(r.root).expanduser().is_dir() and (r.layout in _FIX or r.expected is not None)
                for p, f in zip(r.problems, r.fixes)]
    if problems:
        raise SpecError(problems + ["(sal data check PRESET lists everything a preset needs)"])


def preset_path(preset: str) -> Path:
    """A spec file, or the name of a preset in ablations/, studies/ or compare/ (paper_table2)."""
    if Path(preset).is_file():
        return Path(preset)
    for base in (Path.cwd(), REPO_ROOT):
        for folder in ("ablations", "studies", "compare"):
            path = base / folder / f"{preset}.yaml"
            if path.is_file():
                return path
    raise SpecError([f"no spec file or preset {preset!r}; fix: give a YAML path or a name from ablations/, studies/ "
                     "or compare/ (e.g. paper_table2)"])


def preset_specs(path: str | Path) -> list[RunSpec]:
    """One run spec per cell x axis point of an ablation (seed 1), the corners of a study, the methods of a
    compare, or the run spec itself; unlike the commands, a missing folder is not an error here (it is what
    the check reports)."""
    from pydantic import ValidationError

    from ..spec.config import apply_overrides, expand_data_env, format_validation_error, load_yaml, validate_run
    from ..spec.speckind import kind_of

    raw = expand_data_env(load_yaml(path))
    kind = kind_of(raw) or "run"
    if kind == "run":  # a run spec has no name (the sweeps' specs need one)
        return [validate_run(raw)]
    raw = {**raw, "name": raw.get("name", Path(path).stem)}
    if kind == "compare":
        from .compare import CompareSpec

        try:
            spec = CompareSpec.model_validate(raw)
        except ValidationError as err:
            raise format_validation_error(err, raw, top=CompareSpec) from None
        return [validate_run(apply_overrides(spec.base, m)) for m in spec.methods.values()]
    raw["requires"] = []  # reported by folder, below, instead of refused
    if kind == "ablation":
        from .ablation import AblationSpec, _axis_points, _fill_placeholders

        try:
            spec = AblationSpec.model_validate(raw)
        except ValidationError as err:
            raise format_validation_error(err, raw, top=AblationSpec) from None
        return [validate_run(_fill_placeholders(apply_overrides(spec.base, {**point, **cell, "seed": 1})))
                for cell in (spec.cells or {"default": {}}).values() for point, _ in _axis_points(spec.axes)]
    from ..spec.study_spec import StudySpec, corner_specs  # the last kind kind_of tells: a study

    try:
        return corner_specs(StudySpec.model_validate(raw))
    except ValidationError as err:
        raise format_validation_error(err, raw, top=StudySpec) from None
