"""Where a run's checkpoint lives, and how it is written, read and deleted.

The file is named by the run's identity, ``<config_hash>-s<seed>.pt``, so a retried trial of the same
configuration and seed (the same queue key) finds the checkpoint its killed attempt left. What goes in it
is the run's business (``TrainingRun.state_dict``); this module only keeps it safe:

- written atomically: a temp file beside the checkpoint, then ``os.replace`` over it, so a kill in the
  middle of a write leaves the previous checkpoint whole;
- read with ``torch.load(weights_only=True)``: a checkpoint holds only tensors and plain values, so a
  file that would need an object unpickled is refused instead of run. A file that cannot be read, or
  that is another run's, is ignored with a warning: the run starts over, it never crashes;
- sal never replaces or deletes a file it did not write, whatever its name: a file under the checkpoint's
  name is this run's only when it holds this run's identity (read back with weights_only), a temp file only
  when its first bytes are those of a checkpoint of this configuration (``torch.save`` writes the identity
  first). Anything else is kept, with a warning, and the run then writes no checkpoint; the directory itself
  is never deleted (another run may be about to write there). A temp file killed before its first byte is
  empty and tells nothing: it is kept too.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

from ..core.paths import default_base
from ..spec.config import RunSpec, config_hash

__all__ = ["RunCheckpoint", "checkpoint_path", "default_directory", "FORMAT"]

log = logging.getLogger(__name__)

FORMAT = 1  # raised when the layout of the saved state changes: an older file is then ignored


def default_directory() -> Path:
    """``checkpoints/`` in the repository (gitignored) when sal runs from its checkout, else in the
    current directory; the same rule as the default Optuna journal."""
    return default_base() / "checkpoints"


def checkpoint_path(directory: str | os.PathLike, spec: RunSpec) -> Path:
    """``<directory>/<config_hash>-s<seed>.pt``: one file per configuration and seed."""
    return Path(directory) / f"{config_hash(spec)}-s{spec.seed}.pt"


class RunCheckpoint:
    """The checkpoint of one run (``spec``, on a ``device`` type: generator states do not move between
    CPU and CUDA)."""

    def __init__(self, directory: str | os.PathLike, spec: RunSpec, *, device: str = "cpu"):
        self.path = checkpoint_path(directory, spec)
        # Stored with the state and checked on load: a file renamed or copied by hand is not trusted.
        self.identity = {"format": FORMAT, "config_hash": config_hash(spec), "seed": spec.seed, "device": device}
        self._ours = False  # the file at self.path was written or read back as this run's, in this process
        self._kept_foreign = False

    def ignore(self, problem: str, err: BaseException | None = None) -> None:
        """Log why the checkpoint is not used; the run then starts over."""
        if err is not None:
            lines = str(err).strip().splitlines()
            problem += f" ({type(err).__name__}: {lines[0][:300] if lines else ''})"
        log.warning("checkpoint %s %s; ignored, the run starts over", self.path, problem)

    def _temp_pattern(self) -> str:
        return str(self.path.parent / f".{glob.escape(self.path.name)}.*.tmp")

    def _of_this_run(self, saved: Any) -> bool:
        """Whether a loaded checkpoint is this run's: its configuration and seed (another format or device
        is still this run's file, only not one it can resume from)."""
        return isinstance(saved, dict) and all(saved.get(k) == self.identity[k] for k in ("config_hash", "seed"))

    def _is_ours(self) -> bool:
        """Whether the file under the checkpoint's name is this run's to replace or delete."""
        if self._ours:
            return True
        if self.path.is_symlink() or not self.path.is_file():
            return False  # sal writes no links
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)  # mmap: tensors unread
        except Exception:
            return False
        return self._of_this_run(saved)

    def _temp_is_ours(self, path: str) -> bool:
        """Whether a temp file is (a prefix of) a checkpoint of this configuration: a zip whose first record,
        data.pkl, starts with the identity (written before any tensor)."""
        if os.path.islink(path):
            return False
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError:
            return False
        key = self.identity["config_hash"].encode()
        return head.startswith(b"PK\x03\x04") and b"config_hash" in head and key in head

    def save(self, state: dict[str, Any]) -> bool:
        """Write ``state`` atomically; True when written. A failed write (disk full, ...) is logged and the
        previous checkpoint kept: the run goes on, a resume then only starts from an earlier epoch. A file
        under the checkpoint's name that sal did not write for this run is never replaced."""
        if os.path.lexists(self.path) and not self._is_ours():
            if not self._kept_foreign:
                self._kept_foreign = True
                log.warning("checkpoint %s is a file not written by sal for this run; it is kept and this run "
                            "writes no checkpoint (fix: move the file away to let it)", self.path)
            return False
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save({**self.identity, "state": state}, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before it replaces the previous checkpoint
            os.replace(tmp, self.path)
            self._ours = True
            return True
        except OSError as err:
            log.warning("checkpoint %s could not be written (%s); training goes on, a resume would start from "
                        "the previous checkpoint", self.path, err)
            return False
        finally:
            if tmp is not None and os.path.exists(tmp):
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None: no checkpoint, or one that cannot be used (a warning says why)."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            # weights_only's refusal explains itself over a dozen lines; one of them names what it refused
            refused = re.search(r"WeightsUnpickler error: ([^\n]*?)(\.\s|$)", str(err), re.M)
            self.ignore("cannot be read safely: it holds an object, which weights_only=True will not unpickle"
                        + (f" ({refused.group(1)})" if refused else ""))
            return None
        except Exception as err:  # never crash on a bad file: the run can always start over
            self.ignore("cannot be read, it may be truncated or garbled", err)
            return None
        if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
            self.ignore("cannot be read (it holds no saved state)")
            return None
        self._ours = not self.path.is_symlink() and self._of_this_run(saved)  # sal writes no links
        differs = {k: saved.get(k) for k, v in self.identity.items() if saved.get(k) != v}
        if differs:
            self.ignore(f"belongs to another run ({differs} where this run has "
                        f"{ {k: self.identity[k] for k in differs} })")
            return None
        return saved["state"]

    def delete(self) -> None:
        """Remove this run's checkpoint and the temp files its killed writes left; nothing else."""
        temps = [p for p in glob.glob(self._temp_pattern()) if self._temp_is_ours(p)]
        foreign = os.path.lexists(self.path) and not self._is_ours()
        if foreign and not self._kept_foreign:
            log.warning("checkpoint %s is a file not written by sal for this run; kept", self.path)
        for path in temps + ([] if foreign else [str(self.path)]):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
