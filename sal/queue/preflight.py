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

from ..core.paths import accepts_files
from ..core.redact import mask_text, mask_url
from ..spec.config import SpecError
from .journal import check_journal  # a damaged journal (sal/queue/journal.py); a cut last line is recovered

__all__ = ["CONNECT_TIMEOUT_S", "check_storage", "check_tracking", "check_database", "check_local_file",
           "check_journal", "check_devices", "check_device", "store_tables"]

CONNECT_TIMEOUT_S = 5
_DATABASES = ("postgresql", "mysql", "mssql", "oracle")


def _first_line(err: BaseException) -> str:
    text = str(getattr(err, "orig", None) or err).strip().splitlines()
    return mask_text(text[0] if text else type(err).__name__)


_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


def check_local_file(path: str | Path, *, setting: str, value: str, must_exist: bool = False,
                     kind: str | None = None, role: str | None = None) -> None:
    """A local store file (``kind`` sqlite or journal): it exists (when ``must_exist``), or its folder can be
    created and written; an existing one is a file of that kind (a folder, a text file given as a SQLite
    database, or a damaged journal fail here, not half-way through a sweep), and a SQLite one holds the
    ``role``'s tables (see check_store_kind)."""
    if not str(path).strip():
        raise SpecError([f"{setting}={mask_url(value)!r} names no file; fix: give a path, e.g. "
                         f"{'sqlite:///mlflow/mlflow.db' if kind == 'sqlite' else 'optuna/NAME.journal'}"])
    path = Path(path).expanduser()
    if path.exists() and not path.is_file():
        raise SpecError([f"{setting}={mask_url(value)!r}: {path} is a folder (or not a regular file), not a store "
                         "file; fix: give a file path inside it, e.g. " + str(path / ("mlflow.db" if kind == "sqlite"
                                                                                      else "sweep.journal"))])
    if must_exist and not path.is_file():
        raise SpecError([f"{setting}={mask_url(value)!r}: {path} does not exist; fix: check the path (a report "
                         "reads the store the sweep wrote; pass its --tracking-uri)"])
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise SpecError([f"{setting}={mask_url(value)!r}: {path} cannot be read and written by this user; "
                             "fix: change its permissions or use another path"])
        if kind == "sqlite":
            _check_sqlite_file(path, setting=setting, value=value)
            if role is not None:
                check_store_kind(_sqlite_tables(path, setting=setting, value=value), role=role, setting=setting,
                                 value=value, must_exist=must_exist, shared=False)
        elif kind == "journal":
            check_journal(path, setting=setting)
        return
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir() or not accepts_files(folder):
        raise SpecError([f"{setting}={mask_url(value)!r}: cannot create {path} ({folder} is not a writable "
                         "folder); fix: use a path in a folder you can write"])


def _check_sqlite_file(path: Path, *, setting: str, value: str) -> None:
    with path.open("rb") as f:
        head = f.read(len(_SQLITE_HEADER))
    if head and head != _SQLITE_HEADER:  # an empty file is a database SQLite may still initialise
        raise SpecError([f"{setting}={mask_url(value)!r}: {path} is not a SQLite database (it holds other data, "
                         "which sal leaves alone); fix: give the path of a database file, or a new one"])


# Tables only one of the two tools creates (both keep an alembic_version table: the one that finds the other's
# revision in it fails, Optuna advising `pip install -U optuna`, MLflow "Can't locate revision").
_OWN_TABLES = {"tracking": ({"experiments", "runs"}, "MLflow tracking store"),
               "storage": ({"studies", "trials"}, "Optuna storage")}


def check_store_kind(tables: set[str], *, role: str, setting: str, value: str, must_exist: bool,
                     shared: bool = True) -> None:
    """A database's ``tables`` fit its ``role`` (tracking: MLflow's, storage: Optuna's). Refused: the other tool's
    database (each would write its tables into it); when ``must_exist`` (a command that only reads) an empty
    one, where reading would create the tool's tables; and for a SQLite file (not ``shared``) another program's
    database. Read, never written."""
    own, name = _OWN_TABLES[role]
    other, other_name = _OWN_TABLES["storage" if role == "tracking" else "tracking"]
    shown = mask_url(value)
    if own & tables:  # any of them: another launcher may be creating the rest right now
        return
    flag = "--storage" if role == "tracking" else "--tracking-uri"
    if other & tables:
        raise SpecError([f"{setting}={shown!r} is an {other_name}, not an {name}; fix: pass the {name} as {setting}, "
                         f"and this one as {flag} (sal writes neither tool's tables into the other's database)"])
    if must_exist and not tables:
        raise SpecError([f"{setting}={shown!r} holds no {name} (the database is empty, and reading it would create "
                         f"one); fix: pass the {setting} the sweep wrote"])
    if tables and not shared and "alembic_version" not in tables:  # both tools start with alembic_version
        listed = ", ".join(sorted(tables)[:5])
        raise SpecError([f"{setting}={shown!r} is a SQLite database of another program (tables {listed}), which sal "
                         "leaves alone; fix: give a new file, or the store sal wrote"])


def _sqlite_tables(path: Path, *, setting: str, value: str) -> set[str]:
    import sqlite3

    try:  # read-only: opening a file that is not yet a database must not make it one
        conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise SpecError([f"{setting}={mask_url(value)!r}: {path} cannot be read as a SQLite database ({err}); fix: "
                         "give the path of a database file, or a new one"]) from None


def store_tables(url: str) -> set[str] | None:
    """The tables of the database of ``url`` (sqlite:///FILE or a server's), read without creating anything;
    None for a SQLite file that does not exist yet."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).expanduser()
        return _sqlite_tables(path, setting="--storage", value=url) if path.is_file() else None
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            return set(sqlalchemy.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _check_connect_timeout(url: str, *, setting: str) -> None:
    """libpq's ``connect_timeout`` is whole seconds; the preflight sets its own, so a value libpq cannot read
    would pass here and then fail every connection MLflow makes (which it retries for minutes)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        value = make_url(url).query.get("connect_timeout")
    except ArgumentError:
        return  # reported by the connection below
    for v in (value,) if isinstance(value, str) else (value or ()):
        if not v.strip().lstrip("-").isdigit():
            raise SpecError([f"{setting}={mask_url(url)!r}: connect_timeout={v!r} is not a whole number of "
                             "seconds; fix: e.g. ?connect_timeout=10, or leave it out"])


def check_database(url: str, *, setting: str, role: str | None = None, must_exist: bool = False) -> None:
    """Connect to a database URL (SQLAlchemy) with a short timeout and run ``SELECT 1``; with ``role``, its
    tables must fit it (check_store_kind)."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    shown = mask_url(url)
    _check_connect_timeout(url, setting=setting)
    try:
        engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
                                          poolclass=sqlalchemy.pool.NullPool)
    except (NoSuchModuleError, ArgumentError, ModuleNotFoundError) as err:
        raise SpecError([f"{setting}={shown!r} is not a database URL sal can open ({_first_line(err)}); fix: "
                         "use postgresql://user@host:port/db (or a .journal file / sqlite:///file.db)"]) from None
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
            if role is not None:
                check_store_kind(set(sqlalchemy.inspect(conn).get_table_names()), role=role, setting=setting,
                                 value=url, must_exist=must_exist)
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
        check_local_file(url, setting="--storage", value=url, must_exist=must_exist, kind="journal")
    elif url.startswith("sqlite:///"):
        check_local_file(url.removeprefix("sqlite:///"), setting="--storage", value=url, must_exist=must_exist,
                         kind="sqlite", role="storage")
    elif url.split("://", 1)[0].split("+", 1)[0] in _DATABASES:
        check_database(url, setting="--storage", role="storage", must_exist=must_exist)
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
        check_local_file(uri.removeprefix("sqlite:///"), setting="--tracking-uri", value=uri, must_exist=must_exist,
                         kind="sqlite", role="tracking")
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme in _DATABASES:
        check_database(uri, setting="--tracking-uri", role="tracking", must_exist=must_exist)
    elif scheme == "databricks":
        return  # authenticated by MLflow's own configuration; nothing to check without it
    else:
        raise SpecError([f"--tracking-uri={mask_url(uri)!r} is not a tracking store sal can use; fix: use "
                         "sqlite:///path/mlflow.db, http(s)://host:port of an MLflow server or postgresql://... "
                         "(or $MLFLOW_TRACKING_URI)"])


def check_devices(specs, *, gpus: list[str] | None = None) -> None:
    """Every device a run would use exists on this machine: a missing ``cuda:3`` would otherwise first create a
    run (RUNNING, then FAILED) for each seed. ``gpus`` (the --gpus numbers) replace the specs' devices."""
    import torch

    count = torch.cuda.device_count()
    have = f"this machine has {count} CUDA device(s)" + (f" (cuda:0..cuda:{count - 1})" if count else "")
    if gpus:
        missing = [g for g in gpus if int(g) >= count]
        if missing:
            raise SpecError([f"--gpus={','.join(gpus)}: cuda:{missing[0]} does not exist; {have}; fix: list only "
                             "devices this machine has (nvidia-smi shows them), or leave --gpus out"])
        return
    for device in sorted({s.train.device for s in specs}):
        check_device(device, setting="train.device")


def check_device(device: str, *, setting: str) -> None:
    """``device`` (auto, cpu, mps, cuda, cuda:N) exists on this machine; ``setting`` names where it was given."""
    import torch

    if device in ("auto", "cpu"):
        return
    count = torch.cuda.device_count()
    if device == "mps":
        ok = torch.backends.mps.is_available()
    else:
        index = device.partition(":")[2]
        ok = count > (int(index) if index.isdigit() else 0)
    if not ok:
        have = f"this machine has {count} CUDA device(s)" + (f" (cuda:0..cuda:{count - 1})" if count else "")
        raise SpecError([f"{setting}={device!r}: no such device; {have}; fix: set {setting} to auto (or cpu, or a "
                         "cuda:N that exists)"])


def check_recorded_store(ref, name: str, uri: str, *, new_store: bool = False) -> None:
    """A queue that exists keeps to the MLflow store it recorded (``sal.tracking_uri``): launched again with
    another ``--tracking-uri`` it would train every run again there and point its later workers at it.
    ``new_store`` (--new-tracking-store) says that is the intent. Reads only; a queue not yet created passes."""
    import optuna

    from ..tracking.storeuri import same_store
    from .workqueue import TRACKING_URI

    if ref.is_journal and not Path(ref.url).is_file():
        return
    if not ref.is_journal and not _OWN_TABLES["storage"][0] <= (store_tables(ref.url) or set()):
        return  # no queue yet: opening it through Optuna would create its tables before the launch is decided
    found = [s for s in optuna.get_all_study_summaries(ref.open()) if s.study_name == name]
    recorded = found[0].user_attrs.get(TRACKING_URI) if found else None
    if recorded is None or new_store or same_store(recorded, uri):
        return
    raise SpecError([f"--tracking-uri={mask_url(uri)!r} is not the MLflow store {name!r} was run with "
                     f"({recorded}); its finished runs are there. fix: pass --tracking-uri {recorded} (with its "
                     "password, if any), or add --new-tracking-store to train every run again into the new store"])


def check_artifact_root(uri: str, *, storage: str | None = None, joining: bool = False) -> None:
    """A sweep over several machines (a PostgreSQL queue, or a joining `sal worker`) that logs to a database
    store needs an artifact root all of them reach: the default is a folder of this machine."""
    from ..tracking.store import ARTIFACT_ENV, default_local_artifacts

    several = joining or (storage is not None and storage.split("://", 1)[0].split("+", 1)[0] in _DATABASES)
    local = default_local_artifacts(uri)
    if several and local:
        raise SpecError([f"--tracking-uri={mask_url(uri)!r} is a database store whose artifact root would be "
                         f"{local}, a folder of this machine; the other machines of this sweep would each write "
                         "their own. fix: serve the store with mlflow/server.sh and pass --tracking-uri "
                         f"http://host:5000, or set {ARTIFACT_ENV} to a shared folder or an s3:// / gs:// URI"])
