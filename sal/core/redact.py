"""Passwords in storage and tracking URLs never appear in anything sal prints or writes.

``mask_url`` hides the password of one URL; ``mask_text`` does it for every URL inside a text (an
error message, a log line); ``MaskingFormatter`` applies it to every log record. Every form libpq and
SQLAlchemy accept is covered: the user-info (``scheme://user:PW@host``), a query parameter
(``?password=PW``, ``&sslpassword=PW``) and a keyword connection string (``host=h password='PW'``), with
every character the parsers allow in PW (quotes, spaces, '@', escapes; tests/test_secrets.py checks each form
against SQLAlchemy's make_url, urllib and libpq's own conninfo parser).
A URL without a password needs none of this: libpq reads ``PGPASSWORD`` or ``~/.pgpass``, MLflow's client
``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD`` (see the README).
"""

from __future__ import annotations

import bisect
import logging
import re

__all__ = ["MASK", "mask_url", "mask_text", "has_mask", "MaskingFormatter", "quiet_library_tracebacks"]

MASK = "***"
_SCHEME = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://")


def _percent_or_plain(word: str) -> str:
    """A regex for ``word`` with any letter also written percent-encoded (query keys are decoded by
    SQLAlchemy's parse_qsl and by libpq)."""
    return "".join(f"(?:{c}|%{ord(c.lower()):02x}|%{ord(c.upper()):02x})" for c in word)


# ?password=PW / &sslpassword=PW in a URL's query: SQLAlchemy (parse_qsl) and libpq end the value at the next
# '&' only, so quotes, spaces and '@' belong to it; in a text the value runs to the '&' or the line's end.
_QUERY_KEY = rf"[?&](?:{_percent_or_plain('ssl')})?{_percent_or_plain('password')}="
_QUERY = re.compile(rf"(?P<head>{_QUERY_KEY})[^&\n]*", re.IGNORECASE)
# password=PW in a libpq keyword string: a quoted value '...' (\' and \\ escaped inside; one left open runs to
# the end, as libpq reads it) or an unquoted one up to the next white space (a backslash escapes one, even a
# space); libpq also allows white space around '='. Key names are case-insensitive in what sal masks.
_KEYWORD = re.compile(r"(?P<head>(?<![?&])\b(?:ssl)?password\s*=\s*)"
                      r"(?:'(?:[^'\\]|\\[\s\S])*(?:'|\\?\Z)|(?:\\[\s\S]|[^\s\\])+\\?)",
                      re.IGNORECASE)


class _Positions:
    """Where the characters the user-info scan looks for are in a text, found once: each URL is then read in
    time independent of the text's length (a long log line of many URLs costs no quadratic time)."""

    def __init__(self, text: str):
        self.ats = [m.start() for m in re.finditer("@", text)]
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.separators = [m.start() for m in re.finditer("://", text)]
        self.length = len(text)

    def end_of_line(self, i: int) -> int:
        k = bisect.bisect_left(self.newlines, i)
        return self.newlines[k] if k < len(self.newlines) else self.length

    def first_at(self, lo: int, hi: int) -> int | None:
        k = bisect.bisect_left(self.ats, lo)
        return self.ats[k] if k < len(self.ats) and self.ats[k] < hi else None

    def last_at(self, lo: int, hi: int) -> int | None:
        k = bisect.bisect_left(self.ats, hi) - 1
        return self.ats[k] if k >= 0 and self.ats[k] >= lo else None

    def separator_in(self, lo: int, hi: int) -> bool:
        k = bisect.bisect_left(self.separators, lo)
        return k < len(self.separators) and self.separators[k] + 3 <= hi


_USER = re.compile(r"[^:/\n]*")  # SQLAlchemy's user name, [^:/]*, within the line
_HOST_END = re.compile(r"[/?#]")  # where urllib's netloc ends


def _userinfo_password(text: str, start: int, where: _Positions, one_url: bool) -> tuple[int, int] | None:
    """The span of the password in the user-info of the URL whose ``scheme://`` ends at ``start``, as the
    widest of the parsers' readings: SQLAlchemy (user ``[^:/]*``, then the password up to the first '@', any
    character but '@' in it: quotes, spaces, '/') and libpq (the same '@') or urllib, which MLflow's HTTP
    client uses (up to the last '@' before the host's '/', '?' or '#'). None when there is no password."""
    end_of_line = where.end_of_line(start)
    colon = _USER.match(text, start, end_of_line).end()
    if colon >= end_of_line or text[colon] != ":":  # a '/' or the line's end after the user name: no password
        return None
    first_at = where.first_at(colon, end_of_line)
    if first_at is None:
        return None
    ends = []
    # in a text the URL's end is unknown: a span that runs into the next URL is a port, not a password
    if one_url or not where.separator_in(colon, first_at):
        ends.append(first_at)
    host = _HOST_END.search(text, colon, end_of_line)
    last_at = where.last_at(colon, host.start() if host else end_of_line)
    if last_at is not None:
        ends.append(last_at)
    return (colon + 1, max(ends)) if ends else None


def _mask_userinfo(text: str, one_url: bool = False) -> str:
    if "@" not in text:  # no user-info without an '@'
        return text
    where, out, done = _Positions(text), [], 0
    for scheme in _SCHEME.finditer(text):
        if scheme.start() < done:  # inside a password masked already
            continue
        span = _userinfo_password(text, scheme.end(), where, one_url)
        if span is not None:
            out += [text[done:span[0]], MASK]
            done = span[1]
    return "".join(out) + text[done:]


def mask_text(text: str, *, one_url: bool = False) -> str:
    """``text`` with every password in it replaced by ***: of ``scheme://user:password@host`` URLs and of
    ``password=...`` parameters (URL query or libpq keyword string), in every form SQLAlchemy, libpq or
    urllib reads as the password. Where a text leaves a URL's end unclear, more is masked, never less, except
    that a '://' before the '@' reads as the next URL's start unless ``one_url`` says the text is one URL."""
    # the query and keyword forms first: a '@' in such a value must not be taken for the user-info's end
    text = _QUERY.sub(lambda m: m.group("head") + MASK, str(text))
    text = _KEYWORD.sub(lambda m: m.group("head") + MASK, text)
    return _mask_userinfo(text, one_url)


def has_mask(url: str) -> bool:
    """Whether ``url`` carries a masked password (a stored URL that cannot connect as it is)."""
    masked = rf"(?:{_QUERY_KEY}|\b(?:ssl)?password\s*=\s*){re.escape(MASK)}"
    return f":{MASK}@" in url or bool(re.search(masked, url, re.IGNORECASE))


def mask_url(url: str | None) -> str | None:
    """``postgresql://user:secret@host/db`` -> ``postgresql://user:***@host/db``; other URLs unchanged."""
    return None if url is None else mask_text(url, one_url=True)  # one URL: even '://' may be in its password


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
    # MLflow logs a failed commit of its database store (a full disk) with the traceback before it raises; the
    # error reaches sal's one line anyway. (A logger's filter sees the records it emits itself.)
    logging.getLogger("mlflow.store.db.utils").addFilter(_NoTraceback())
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
