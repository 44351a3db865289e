"""Passwords in storage and tracking URLs never appear in anything sal prints or writes.

``mask_url`` hides the password of one URL; ``mask_text`` does it for every URL inside a text (an
error message, a log line); ``MaskingFormatter`` applies it to every log record.
"""

from __future__ import annotations

import logging
import re

__all__ = ["MASK", "mask_url", "mask_text", "MaskingFormatter", "quiet_library_tracebacks"]

MASK = "***"
# scheme://user:password@host... ; the password is everything up to the last '@' before the host part
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):(?P<password>[^@\s'\"]*)@")


def mask_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` URL in it replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", str(text))


def mask_url(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; other URLs unchanged."""
    return None if url is None else mask_text(url)


class MaskingFormatter(logging.Formatter):
    """A log formatter that masks URL passwords in the formatted line (message, arguments, traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_text(super().format(record))


class _NoTraceback(logging.Filter):
    """Drops a record's traceback and keeps its one-line message: a failed trial is reported by sal with
    its cause (the run's status and message), never as a traceback on the user's screen."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = record.exc_text = None
        return True


def quiet_library_tracebacks() -> None:
    """Optuna logs every failed trial with its traceback through its own handler: keep the line only."""
    import optuna

    for handler in optuna.logging._get_library_root_logger().handlers:
        handler.addFilter(_NoTraceback())
    import threading

    threading.excepthook = _thread_error_line


def _thread_error_line(args) -> None:
    """An error that ends a library's background thread (e.g. Optuna's heartbeat while the database
    restarts) is one masked line on stderr, not a traceback."""
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    first = (str(args.exc_value).strip().splitlines() or [""])[0][:300]
    logging.getLogger("sal").error("%s stopped: %s: %s", name, args.exc_type.__name__, mask_text(first))
