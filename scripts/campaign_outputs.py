"""The campaign's findings folder: what scripts/campaign.py and scripts/findings.py may write there.

As `sal report --out` does (sal/report/outputs.py): a marker file (``.sal-campaign``, JSON) lists the files the
campaign wrote at its own level (README.md, times.csv, ``<ds>/<stage>_seeds.csv``, ``<ds>/<stage>_epochs.csv``,
``<ds>/compare_design.csv``),
and only those are ever replaced. The report folders ``<ds>/<stage>/`` belong to `sal report`, each with its
own marker, and are checked by ``check_output_folder``. A folder holding anything else (a user's README.md,
times.csv, notes), a file in the folder's place or a folder that cannot be written is refused before any
compute; sal never replaces or deletes a file it did not write.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from sal.core.spec_base import SpecError
from sal.report.outputs import check_output_folder, write_text_atomic

__all__ = ["CAMPAIGN_MARKER", "check_campaign_folder", "write_owned", "owned_files"]

CAMPAIGN_MARKER = ".sal-campaign"  # JSON: {"written_by": "scripts/campaign.py", "files": [relative paths]}
_SETTING = "--out"
_MARKER_LOCK = threading.Lock()


def owned_files(out: Path) -> set[str]:
    """The relative paths the campaign's marker lists (none when there is no readable marker)."""
    try:
        files = json.loads((out / CAMPAIGN_MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return set()
    # only paths inside the folder: a marker edited by hand can never point the campaign at another file
    return {str(f) for f in files if not Path(str(f)).is_absolute() and ".." not in Path(str(f)).parts}


def _leftover(rel: Path, owned: set[str]) -> bool:
    return rel.name.endswith(".tmp") and any(
        Path(f).parent == rel.parent and rel.name.startswith(f".{Path(f).name}.") for f in owned)


def _foreign(out: Path, datasets, stages) -> list[str]:
    owned = owned_files(out) | {CAMPAIGN_MARKER}
    reports = {f"{ds}/{stage}" for ds in datasets for stage in stages}
    dirs = {p.as_posix() for rel in owned | reports for p in Path(rel).parents if p != Path(".")} | reports
    foreign = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out)
        if len(rel.parts) > 2 and "/".join(rel.parts[:2]) in reports:
            continue  # inside a report folder: sal report's own marker decides (check_output_folder)
        if _leftover(rel, owned):
            continue  # write_text_atomic's temporary file of an owned file, left by an interrupted write
        if path.is_symlink() or rel.as_posix() not in (dirs if path.is_dir() else owned):
            foreign.append(rel.as_posix())
    return foreign


def check_campaign_folder(out: str | Path, datasets, stages) -> Path:
    """The absolute findings folder once it is known that the campaign may write there; SpecError otherwise.

    Allowed: a folder that does not exist yet (and can be created), an empty one, or one holding only what an
    earlier campaign wrote. Called before any compute, so a refusal costs nothing and writes nothing."""
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise SpecError([f"{_SETTING}={str(out)!r} is a file, not a folder; fix: give a folder for the findings"])
    if not out.exists():
        check_output_folder(out, setting=_SETTING)  # a folder to be made: its nearest parent must be writable
    if out.is_dir():
        foreign = _foreign(out, datasets, stages)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise SpecError([f"{_SETTING}={str(out)!r} already holds files the campaign did not write ({shown}); "
                             "it never replaces or deletes them; fix: give a new or empty folder, e.g. "
                             f"{_SETTING} /tmp/campaign"])
        _check_writable(out)
        for report in (out / ds / stage for ds in datasets for stage in stages):
            if report.exists() or report.is_symlink():
                check_output_folder(report, setting=f"{_SETTING} (its report folder {report.parent.name}/"
                                                    f"{report.name})")
    return out


def _check_writable(out: Path) -> None:
    if not os.access(out, os.W_OK | os.X_OK):
        raise SpecError([f"{_SETTING}={str(out)!r} is not writable; fix: choose a folder you can write, e.g. "
                         f"{_SETTING} /tmp/campaign"])


def write_owned(out: Path, rel: str, text: str, *, written_by: str = "scripts/campaign.py") -> Path:
    """Write ``out/rel`` when the campaign owns it or it does not exist: the marker lists it first (so an
    interruption leaves no file the campaign cannot account for), then the file is replaced atomically."""
    out = Path(out)
    path = out / rel
    with _MARKER_LOCK:  # the data sets' lanes are threads: an unlocked read-modify-write of the marker loses one
        owned = owned_files(out)
        if (path.exists() or path.is_symlink()) and rel not in owned:
            raise SpecError([f"{_SETTING}={str(out)!r}: {rel} exists and the campaign did not write it; it is "
                             "never replaced; fix: give a new or empty folder"])
        if rel not in owned:
            write_text_atomic(out / CAMPAIGN_MARKER,
                              json.dumps({"written_by": written_by, "files": sorted(owned | {rel})}, indent=1))
    write_text_atomic(path, text)
    return path
