"""Creating a new SQLite MLflow store safely when several launchers start at once.

MLflow creates a new store's tables (Alembic migrations) on the first client call; two processes doing
that on one fresh file race and one crashes ("table experiments already exists"). An exclusive file lock
beside the database serialises that first call; later calls on a store that exists take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["store_creation_lock"]


@contextlib.contextmanager
def store_creation_lock(db_path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<db>.lock`` (created beside the database, kept: removing a lock file
    while another process waits on it would let a third one in)."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(db_path.with_name(db_path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
