"""Passwords in storage and tracking URLs never appear in anything sal prints or writes.

``mask_url`` hides the password of one URL; ``mask_text`` does it for every URL inside a text (an
error message, a log line); ``MaskingFormatter`` applies it to every log record. Every form libpq and
SQLAlchemy accept is covered: the user-info (``scheme://user:PW@host``), a query parameter
(``?password=PW``, ``&sslpassword=PW``) and a keyword connection string (``host=h password='PW'``).
A URL without a password needs none of this: libpq reads ``PGPASSWORD`` or ``~/.pgpass``, MLflow's client
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (see the README).
"""

from __future__ import annotations

import logging
import re

__all__ = ["MASK", "mask_url", "mask_text", "has_mask", "MaskingFormatter", "quiet_library_tracebacks"]

MASK = "***"
# scheme://user:password@host... ; the password is everything up to the last '@' before the host part
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):(?P<password>[^@\s'\"]*)@")
# password=PW (libpq also has sslpassword) as a URL query parameter or in a keyword connection string,
# where the value may be quoted ('a b', with \' inside); key names are case-insensitive in SQLAlchemy's URL.
_KEYWORD = re.compile(r"(?P<head>\b(?:ssl)?password\s*=\s*)(?P<password>'(?:[^'\\]|\\.)*'|[^&\s'\"]+)",
                      re.IGNORECASE)


def mask_text(text: str) -> str:
    """``text`` with every password in it replaced by ***: of ``scheme://user:password@host`` URLs and of
    ``password=...`` parameters (URL query or libpq keyword string)."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", str(text))
    return _KEYWORD.sub(lambda m: m.group("head") + MASK, text)


def has_mask(url: str) -> bool:
    """Whether ``url`` carries a masked password (a stored URL that cannot connect as it is)."""
    return f":{MASK}@" in url or bool(re.search(rf"\b(?:ssl)?password\s*=\s*{re.escape(MASK)}", url, re.I))


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
