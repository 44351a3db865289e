"""Tell a full disk from other failures, so a user reads "free space, then re-run" and not a traceback."""

from __future__ import annotations

import errno

__all__ = ["disk_full"]

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space, over a quota, past a file-size limit
# SQLite's words for the same (a write past a file-size limit surfaces as an I/O error)
_FULL_TEXTS = ("database or disk is full", "disk I/O error", "No space left on device")


def disk_full(err: BaseException | None) -> bool:
    """The error, or one it was raised from, says a file could not grow."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in _FULL_ERRNOS:
            return True
        if any(text in str(err) for text in _FULL_TEXTS):
            return True
        err = err.__cause__ or err.__context__
    return False
