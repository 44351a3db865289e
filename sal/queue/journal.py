"""Optuna journal files: tell the one damage a crash makes from real damage, and recover from the former.

A journal is one JSON object per line, appended under Optuna's lock. A process that dies mid-append (a full
disk, a power cut, a SIGKILL) leaves its last line cut; Optuna ignores such a line when reading but appends
the next one right after it, which makes two damaged lines and a journal Optuna refuses for good. So a cut
last line is moved aside (to ``<journal>.cut-<UTC time>``, never deleted) before the journal is opened, with
a warning. Anything else (a damaged line before the last, an op code Optuna does not know, an entry for a
study or trial no earlier line created) is real damage: refused, naming the file, the line and the fix, and
the file left exactly as it is.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from ..spec.config import SpecError

__all__ = ["check_journal", "repair_cut_tail", "CUT_SUFFIX"]

log = logging.getLogger(__name__)
CUT_SUFFIX = ".cut-"  # <journal>.cut-<UTC time>: the bytes of a cut last line, kept for the user
_OP_CODES = range(0, 11)  # optuna.storages.journal._storage.JournalOperation: CREATE_STUDY (0) .. DISCARD_TRIALS (10)
_CREATE_STUDY, _DELETE_STUDY, _CREATE_TRIAL = 0, 1, 4
_STUDY_OPS = (1, 2, 3, 4)  # delete study, study user/system attr, create trial: they name a study_id
_TRIAL_OPS = (5, 6, 7, 8, 9)  # param, state, intermediate value, user/system attr: they name a trial_id
_FIX = ("fix: restore the journal from a backup, or give another --storage (sal never edits a damaged journal; "
        "finished runs are also in MLflow)")


def check_journal(path: str | Path, *, setting: str = "--storage") -> None:
    """Refuse a journal with real damage (SpecError naming the file and the line); read only.

    A cut last line passes: the crash that cut it is recovered from when the journal is opened
    (``repair_cut_tail``). Ids are counted the way Optuna's JournalStorage replays them: a create-study line
    gets the next study id unless its name is live (then it is a no-op), a delete-study line frees the name
    (``sal study run --force-new`` deletes a study and creates it again: same name, new id), and a
    create-trial line gets the next trial id, whatever study it is for, unless that study is deleted."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")[:-1]  # the text after the last newline is a cut line (or nothing)
    live: dict[int, object] = {}  # study id -> name, of the studies not deleted
    n_studies = n_trials = 0
    for number, line in enumerate(lines, start=1):
        where = f"{setting}: {path} line {number}"
        try:
            entry = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            reason = getattr(err, "msg", "not UTF-8")
            raise SpecError([f"{where} is not valid JSON ({reason}): not an Optuna journal, or a damaged one; "
                             f"{_FIX}"]) from None
        if not isinstance(entry, dict) or "op_code" not in entry:
            raise SpecError([f"{where} is not an Optuna journal entry (no op_code); {_FIX}"])
        op = entry["op_code"]
        if type(op) is not int or op not in _OP_CODES:
            raise SpecError([f"{where} has op_code {op!r}, which this Optuna does not know (0 to 10): written by "
                             f"another program or a newer Optuna, or damaged; fix: open it with the Optuna that "
                             f"wrote it, or {_FIX.removeprefix('fix: ')}"])
        if op == _CREATE_STUDY:
            name = entry.get("study_name")
            if name not in live.values():
                live[n_studies] = name
                n_studies += 1
        elif op in _STUDY_OPS and not _known(entry.get("study_id"), n_studies):
            raise SpecError([f"{where} is for study {entry.get('study_id')!r}, which no earlier line creates (its "
                             f"create-study line is missing: the journal's start was cut or edited); {_FIX}"])
        elif op in _TRIAL_OPS and not _known(entry.get("trial_id"), n_trials):
            raise SpecError([f"{where} is for trial {entry.get('trial_id')!r}, which no earlier line creates (a "
                             f"line is missing: the journal was cut or edited); {_FIX}"])
        elif op == _DELETE_STUDY:
            live.pop(entry["study_id"], None)
        elif op == _CREATE_TRIAL and entry["study_id"] in live:  # one for a deleted study is skipped by Optuna
            n_trials += 1


def _known(ident: object, created: int) -> bool:
    return type(ident) is int and 0 <= ident < created


def repair_cut_tail(path: str | Path) -> Path | None:
    """Move a cut last line of the journal at ``path`` aside, under Optuna's own lock (a line another process
    is still appending is finished by the time the lock is ours); returns the file that keeps its bytes, or
    None when the journal ends with its newline (the usual case: one byte read, no lock taken)."""
    from optuna.storages.journal import JournalFileSymlinkLock

    path = Path(path)
    if not _ends_cut(path):
        return None
    lock = JournalFileSymlinkLock(str(path))  # the lock JournalFileBackend takes to append
    lock.acquire()
    try:
        if not _ends_cut(path):
            return None
        data = path.read_bytes()
        keep = data.rfind(b"\n") + 1
        kept = path.with_name(f"{path.name}{CUT_SUFFIX}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}")
        kept.write_bytes(data[keep:])  # first the copy, then the cut: nothing is lost if this stops half-way
        with path.open("r+b") as f:
            f.truncate(keep)
    finally:
        lock.release()
    log.warning("%s: its last line (%d bytes) was cut off by a crash or a full disk while it was written; moved "
                "it to %s and resumed from the line before (the trial it recorded is run again if needed)",
                path, len(data) - keep, kept)
    return kept


def _ends_cut(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return False
            f.seek(-1, 2)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False
