"""Where a run's checkpoint lives, and how it is written, read and deleted.

The file is named by the run's identity, ``<config_hash>-s<seed>.pt``, so a retried trial of the same
configuration and seed (the same queue key) finds the checkpoint its killed attempt left. What goes in it
is the run's business (``TrainingRun.state_dict``); this module only keeps it safe:

- written atomically: a temp file beside the checkpoint, then ``os.replace`` over it, so a kill in the
  middle of a write leaves the previous checkpoint whole;
- read with ``torch.load(weights_only=True)``: a checkpoint holds only tensors and plain values, so a
  file that would need an object unpickled is refused instead of run. A file that cannot be read, or
  that is another run's, is ignored with a warning: the run starts over, it never crashes;
- sal never deletes a file it did not write: only this run's checkpoint and the temp files of its own
  writes, never the directory (another run may be about to write there).
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

    def ignore(self, problem: str, err: BaseException | None = None) -> None:
        """Log why the checkpoint is not used; the run then starts over."""
        if err is not None:
            lines = str(err).strip().splitlines()
            problem += f" ({type(err).__name__}: {lines[0][:300] if lines else ''})"
        log.warning("checkpoint %s %s; ignored, the run starts over", self.path, problem)

    def _temp_pattern(self) -> str:
        return str(self.path.parent / f".{glob.escape(self.path.name)}.*.tmp")

    def save(self, state: dict[str, Any]) -> bool:
        """Write ``state`` atomically; True when written. A failed write (disk full, ...) is logged and the
        previous checkpoint kept: the run goes on, a resume then only starts from an earlier epoch."""
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                torch.save({**self.identity, "state": state}, f)
                f.flush()
                os.fsync(f.fileno())  # on disk before it replaces the previous checkpoint
            os.replace(tmp, self.path)
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
        differs = {k: saved.get(k) for k, v in self.identity.items() if saved.get(k) != v}
        if differs:
            self.ignore(f"belongs to another run ({differs} where this run has "
                        f"{ {k: self.identity[k] for k in differs} })")
            return None
        return saved["state"]

    def delete(self) -> None:
        """Remove this run's checkpoint and the temp files its killed writes left; nothing else."""
        for path in [str(self.path), *glob.glob(self._temp_pattern())]:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
