"""Checks before anything is created or computed: can the Optuna storage and the MLflow tracking store be
reached and written? Each answers within a few seconds with a SpecError (exit 2) that names the setting,
the (password-masked) value and the fix; nothing is written by a check, so a failed one leaves nothing
behind (no empty MLflow experiment, no store file).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from .config import SpecError
from .redact import mask_text, mask_url

__all__ = ["CONNECT_TIMEOUT_S", "check_storage", "check_tracking", "check_database", "check_local_file"]

CONNECT_TIMEOUT_S = 5
_DATABASES = ("postgresql", "mysql", "mssql", "oracle")


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return mask_text(text[0] if text else type(err).__name__)


def check_local_file(path: str | Path, *, setting: str, value: str, must_exist: bool = False) -> None:
    """A local store file (SQLite database, journal): it exists (when ``must_exist``), or its folder can be
    created and written."""
    path = Path(path).expanduser()
    if must_exist and not path.is_file():
        raise SpecError([f"{setting}={mask_url(value)!r}: {path} does not exist; fix: check the path (a report "
                         "reads the store the sweep wrote; pass its --tracking-uri)"])
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise SpecError([f"{setting}={mask_url(value)!r}: {path} cannot be read and written by this user; "
                             "fix: change its permissions or use another path"])
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise SpecError([f"{setting}={mask_url(value)!r}: cannot create {path} ({folder} is not a writable "
                         "folder); fix: use a path in a folder you can write"])


def check_database(url: str, *, setting: str) -> None:
    """Connect to a database URL (SQLAlchemy) with a short timeout and run ``SELECT 1``."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = mask_url(url)
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
                                          poolclass=sqlalchemy.pool.NullPool)
    except (NoSuchModuleError, ArgumentError, ModuleNotFoundError) as err:
        raise SpecError([f"{setting}={shown!r} is not a database URL sal can open ({_first_line(err)}); fix: "
                         "use postgresql://user@host:port/db (or a .journal file / sqlite:///file.db)"]) from None
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except SQLAlchemyError as err:
        reason = _first_line(err)
        if "does not exist" in reason:
            fix = "create the database first (e.g. createdb NAME) or correct the name in the URL"
        elif "refused" in reason or "timeout" in reason.lower() or "could not translate" in reason:
            fix = "start the database server, or correct host and port in the URL"
        else:
            fix = "check the user, password, host, port and database name in the URL"
        raise SpecError([f"{setting}={shown!r}: cannot connect within {CONNECT_TIMEOUT_S} s ({reason}); "
                         f"fix: {fix}"]) from None
    finally:
        engine.dispose()


def check_storage(url: str, *, must_exist: bool = False) -> None:
    """The Optuna storage of ``--storage`` (a StorageRef's url): reachable, and writable for local files."""
    if "://" not in url:  # a journal file
        check_local_file(url, setting="--storage", value=url, must_exist=must_exist)
    elif url.startswith("sqlite:///"):
        check_local_file(url.removeprefix("sqlite:///"), setting="--storage", value=url, must_exist=must_exist)
    elif url.split("://", 1)[0].split("+", 1)[0] in _DATABASES:
        check_database(url, setting="--storage")
    else:
        raise SpecError([f"--storage={mask_url(url)!r} is not a storage sal can use; fix: give a .journal file, "
                         "sqlite:///file.db or postgresql://user@host/db"])


def _check_server(uri: str) -> None:
    # MLflow's own client retries an unreachable server for minutes; one short request answers at once.
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=CONNECT_TIMEOUT_S) as response:  # noqa: S310 - http(s) only
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        reason = f"HTTP {err.code} from {mask_url(health)}"
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = mask_text(str(getattr(err, "reason", err)))
    raise SpecError([f"--tracking-uri={mask_url(uri)!r}: no MLflow tracking server answers within "
                     f"{CONNECT_TIMEOUT_S} s ({reason}); fix: start it (mlflow server / sal ui) or correct "
                     "--tracking-uri (or $MLFLOW_TRACKING_URI)"])


def check_tracking(uri: str, *, must_exist: bool = False) -> None:
    """The MLflow tracking URI: a SQLite file that can be created (or exists, when ``must_exist``: a report
    reads a store and must not create an empty one), a server that answers, or a database that connects."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0] if "://" in uri else ""
    if uri.startswith("sqlite:///"):
        check_local_file(uri.removeprefix("sqlite:///"), setting="--tracking-uri", value=uri, must_exist=must_exist)
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme in _DATABASES:
        check_database(uri, setting="--tracking-uri")
    elif scheme == "databricks":
        return  # authenticated by MLflow's own configuration; nothing to check without it
    else:
        raise SpecError([f"--tracking-uri={mask_url(uri)!r} is not a tracking store sal can use; fix: use "
                         "sqlite:///path/mlflow.db, http(s)://host:port of an MLflow server or postgresql://... "
                         "(or $MLFLOW_TRACKING_URI)"])
