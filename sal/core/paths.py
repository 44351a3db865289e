"""Where sal keeps what it writes by default: the one project-root rule.

Run from its checkout (a folder with pyproject.toml above the package), sal writes its default journals,
MLflow store and checkpoints into that checkout (gitignored folders); installed elsewhere, into the
current directory.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]  # sal/core/paths.py -> the checkout


def default_base() -> Path:
    """The checkout when sal runs from one, else the current directory."""
    return REPO_ROOT if (REPO_ROOT / "pyproject.toml").is_file() else Path.cwd()


def accepts_files(folder: Path) -> bool:
    """Whether a file can be created in the existing ``folder``: the permission bits first (cheap), then, because
    ``os.access`` answers yes to root for /proc and /sys, an unnamed temporary file (gone when closed)."""
    import os
    import tempfile

    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False
