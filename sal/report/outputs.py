"""Writing output folders and files safely: sal writes only its own files and never deletes a user's.

A report folder is either new or holds nothing but an earlier sal report: a marker file (``.sal-report``)
lists the files sal wrote there, and only those are ever replaced or removed. Files are staged in a
hidden folder inside the target and moved into place one by one with ``os.replace`` (atomic on one file
system), so a reader never sees a half-written file. A single output file (``sal study best --out``) is
replaced only when sal wrote it (its first line says so).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..core.paths import accepts_files
from ..spec.config import SpecError

__all__ = ["MARKER", "STAGING_PREFIX", "check_output_folder", "report_folder", "check_output_file",
           "write_text_atomic"]

MARKER = ".sal-report"  # JSON: {"written_by": ..., "files": [relative paths sal wrote]}
STAGING_PREFIX = ".sal-staging-"


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _writable(path: Path, setting: str) -> None:
    """Raise when ``path`` (a folder to create or fill) cannot be written by this process."""
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise SpecError([f"{setting}={str(path)!r}: {existing} is a file, not a folder; fix: choose another "
                         f"{setting}"])
    if not accepts_files(existing):
        raise SpecError([f"{setting}={str(path)!r} is not writable ({existing} denies writing); fix: choose a "
                         f"folder you can write, e.g. {setting} reports/NAME"])


def _owned_files(folder: Path) -> list[str]:
    marker = folder / MARKER
    if not marker.is_file():
        return []
    try:
        files = [str(f) for f in json.loads(marker.read_text())["files"]]
    except (ValueError, KeyError, TypeError):
        return []
    # only paths inside the folder: a marker edited by hand can never point sal at another file
    return [f for f in files if not Path(f).is_absolute() and ".." not in Path(f).parts]


def _foreign_files(folder: Path) -> list[str]:
    """Files in ``folder`` that sal did not write (not listed in its marker, not its own staging)."""
    owned = set(_owned_files(folder)) | {MARKER}
    owned_dirs = {parent.as_posix() for rel in owned for parent in Path(rel).parents if parent != Path(".")}
    foreign = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0].startswith(STAGING_PREFIX):
            continue
        if path.is_symlink() or rel.as_posix() not in (owned_dirs if path.is_dir() else owned):
            foreign.append(rel.as_posix())  # a user's file, folder (even empty) or link
    return foreign


def check_output_folder(folder: str | Path, *, setting: str = "--out") -> Path:
    """The absolute folder, once it is known that a report may be written there; SpecError otherwise.

    Allowed: a folder that does not exist yet (and can be created), an empty folder, or one that holds
    only the files of an earlier sal report. Call it before any compute, and again before writing.
    """
    folder = Path(folder).expanduser().absolute()
    for part in (folder, *folder.parents):  # a dangling link: creating the folder would fail after the work
        if part.is_symlink() and not part.exists():
            raise SpecError([f"{setting}={str(folder)!r}: {part} is a link to {os.readlink(part)}, which does not "
                             f"exist; fix: create {os.readlink(part)} first, or give another {setting}"])
    if folder.exists() and not folder.is_dir():
        raise SpecError([f"{setting}={str(folder)!r} is a file, not a folder; fix: give a folder for the report"])
    _writable(folder, setting)
    if folder.is_dir():
        foreign = _foreign_files(folder)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise SpecError([f"{setting}={str(folder)!r} already holds files sal did not write ({shown}); sal "
                             "never replaces or deletes them; fix: give a new or empty folder, e.g. "
                             f"{setting} reports/NAME"])
    return folder


def _write_marker(folder: Path, files: list[str], written_by: str) -> None:
    write_text_atomic(folder / MARKER, json.dumps({"written_by": written_by, "files": sorted(set(files))}, indent=1))


@contextlib.contextmanager
def report_folder(folder: str | Path, *, written_by: str = "sal report") -> Iterator[Path]:
    """Yield a staging folder; on success move its files into ``folder`` and drop the earlier report's
    files that the new one no longer has. On an error nothing in ``folder`` changes."""
    folder = check_output_folder(folder)
    made = [p for p in (folder, *folder.parents) if not p.exists()]  # folders sal creates, innermost first
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    try:
        yield staging
        check_output_folder(folder)  # another process may have put files there meanwhile
        new = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        old = _owned_files(folder)
        # The marker first lists old and new files, so an interruption leaves no file sal cannot account for.
        _write_marker(folder, old + new, written_by)
        for rel in new:
            target = folder / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / rel, target)
        for rel in set(old) - set(new):
            stale = folder / rel
            stale.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # a folder sal made for its files, once empty
                if stale.parent != folder and not any(stale.parent.iterdir()):
                    stale.parent.rmdir()
        _write_marker(folder, new, written_by)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            for path in made:
                path.rmdir()  # only if empty: the folders sal created for this report
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # sal's own hidden staging folder


def check_output_file(path: str | Path, *, header: str, setting: str = "--out") -> Path:
    """``path`` as an absolute path, once it is known that sal may write it: it does not exist, or its
    first line starts with ``header`` (sal wrote it). SpecError otherwise, before any work."""
    path = Path(path).expanduser().absolute()
    if path.is_dir():
        raise SpecError([f"{setting}={str(path)!r} is a folder; fix: give a file name, e.g. {setting} best.yaml"])
    _writable(path.parent, setting)
    if path.exists():
        with contextlib.suppress(OSError, UnicodeDecodeError):
            with path.open() as fh:
                if fh.readline().startswith(header):
                    return path
        raise SpecError([f"{setting}={str(path)!r} already exists and sal did not write it; sal does not "
                         f"overwrite it; fix: give another file name or remove it yourself"])
    return path


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path`` (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
