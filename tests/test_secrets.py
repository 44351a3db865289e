"""A password in the storage or tracking URL appears nowhere: not on stdout or stderr, not in log lines, report
files, MLflow params, tags or artifacts, nor in Optuna's attrs (both databases are dumped and searched)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import uuid

import psycopg
import pytest
import yaml
from psycopg import sql

from sal.core.names import ATTR_TRACKING_URI
from tests.helpers import PG, TINY_BASE


def test_mask_url_hides_only_the_password():
    from sal.core.redact import mask_text, mask_url

    assert mask_url("postgresql://alice:s3cr%40t@db.lab:5432/sal") == "postgresql://alice:***@db.lab:5432/sal"
    assert mask_url("postgresql://alice@db/sal") == "postgresql://alice@db/sal"
    assert mask_url("sqlite:////home/a/mlflow.db") == "sqlite:////home/a/mlflow.db"
    assert mask_url("http://u:p@host:5000") == "http://u:***@host:5000"
    text = "could not open 'postgresql+psycopg://bob:hunter2@10.0.0.1/x' nor http://c:d@e"
    assert mask_text(text) == "could not open 'postgresql+psycopg://bob:***@10.0.0.1/x' nor http://c:***@e"


@pytest.fixture()
def secret_databases():
    """A role with a password owning two fresh databases (Optuna's and MLflow's); dropped afterwards.
    The local server trusts connections, so the password is not checked: it only has to stay hidden."""
    tag = uuid.uuid4().hex[:10]
    # a quote, a double quote and a space: characters an earlier mask stopped at, leaving the rest shown
    role, password = f"sal_secret_{tag}", f"pw'{uuid.uuid4().hex[:16]}\" {uuid.uuid4().hex[:16]}"
    names = [f"sal_optuna_{tag}", f"sal_mlflow_{tag}"]
    admin = psycopg.connect(autocommit=True, **PG)
    admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    for name in names:
        admin.execute(f"CREATE DATABASE {name} OWNER {role}")
    try:
        yield password, [f"postgresql://{role}:{password}@{PG['host']}:{PG['port']}/{n}" for n in names], names
    finally:
        for name in names:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.close()


def _shown(password: str, text: str) -> bool:
    """Whether ``text`` shows the password or any part of it between its quotes and spaces."""
    return any(part in text for part in [password, *re.split(r"['\" ]", password)] if len(part) >= 8)


def _sal(tmp_path, *args):
    # a PostgreSQL queue is a sweep over machines: its database store needs a shared artifact root
    env = {**os.environ, "SAL_ARTIFACT_ROOT": str(tmp_path / "artifacts")}
    proc = subprocess.run([sys.executable, "-m", "sal", "-v", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=400, env=env)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.postgres
def test_a_password_in_storage_and_tracking_urls_appears_nowhere(tmp_path, secret_databases):
    password, (storage, tracking), names = secret_databases
    spec = tmp_path / "hush.yaml"
    spec.write_text(yaml.safe_dump({"name": "hush", "base": TINY_BASE, "seeds": 3, "baseline": "adam",
                                    "cells": {"adam": {"method.name": "base"}, "sam": {"method.name": "sam"}}}))
    study = tmp_path / "hushs.yaml"
    study.write_text(yaml.safe_dump({"name": "hushs", "base": {**TINY_BASE, "method": {"name": "sal", "warmup": 0}},
                                     "seeds": 1, "n_trials": 2, "pruner": {"name": "none"},
                                     "space": {"method.rho": {"low": 1e-4, "high": 1e-2, "log": True}}}))
    outputs = []
    for args in (["ablate", str(spec), "--storage", storage, "--tracking-uri", tracking],
                 ["report", "hush", "--out", "rep", "--tracking-uri", tracking],
                 ["study", "run", str(study), "--storage", storage, "--tracking-uri", tracking],
                 ["study", "status", "hushs", "--storage", storage],
                 ["study", "best", "hushs", "--storage", storage, "--out", "best.yaml"]):
        code, output = _sal(tmp_path, *args)
        assert code == 0, output
        outputs.append(output)
    # and an error about the URL (a database that does not exist) names it masked
    code, output = _sal(tmp_path, "ablate", str(spec), "--storage", storage + "_missing", "--tracking-uri", tracking)
    assert code == 2 and ":***@" in output
    outputs.append(output)
    assert "queue postgresql://" in outputs[0] and ":***@" in outputs[0]  # the URL is shown, masked
    for output in outputs:
        assert not _shown(password, output)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {"report.md", "report.html", "summary.csv", "best.yaml"} <= {p.name for p in written}
    assert any(p.name == "spec.yaml" for p in written)  # MLflow's artifacts land in $SAL_ARTIFACT_ROOT
    assert [p for p in written if _shown(password, p.read_bytes().decode(errors="replace"))] == []
    assert ":***@" in (tmp_path / "rep" / "report.md").read_text()
    for name in names:  # every MLflow param, tag and metric, every Optuna attr
        dump = subprocess.run(["pg_dump", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"], name],
                              capture_output=True, text=True, timeout=120, check=True).stdout
        assert "hush" in dump and not _shown(password, dump)


# --- every credential form libpq and SQLAlchemy accept ---
@pytest.mark.parametrize("text, shown", [
    ("postgresql://alice@db/sal?password=hunter2", "postgresql://alice@db/sal?password=***"),
    ("postgresql://alice@db/sal?sslmode=require&password=hunter2&x=1",
     "postgresql://alice@db/sal?sslmode=require&password=***&x=1"),
    ("postgresql://db/sal?user=alice&PASSWORD=hunter2", "postgresql://db/sal?user=alice&PASSWORD=***"),
    ("host=db user=alice password=hunter2 dbname=sal", "host=db user=alice password=*** dbname=sal"),
    ("host=db password = 'hunter2 two' dbname=sal", "host=db password = *** dbname=sal"),
    ("postgresql://db/sal?sslpassword=hunter2", "postgresql://db/sal?sslpassword=***"),
    ("postgresql://alice:hunter2@db/sal?password=hunter2", "postgresql://alice:***@db/sal?password=***"),
])
def test_mask_text_hides_a_password_in_every_form(text, shown):
    from sal.core.redact import has_mask, mask_text

    assert mask_text(text) == shown and "hunter2" not in mask_text(text)
    assert has_mask(mask_text(text))


def test_the_queue_records_no_password_given_in_the_query():
    from sal.queue.workqueue import TRACKING_URI, worker_record

    stored = worker_record("postgresql://alice@db/mlflow?password=hunter2")[TRACKING_URI]
    assert stored == "postgresql://alice@db/mlflow?password=***"


@pytest.mark.postgres
def test_query_passwords_stay_hidden_from_ablate_and_landscape(tmp_path, secret_databases):
    """Before the fix: `sal landscape` printed the raw URI in its last line, and a `?password=` was printed by
    the launcher and stored in the queue's sal.tracking_uri attr."""
    import optuna

    password, (storage, tracking), names = secret_databases
    storage, tracking = (u.replace(f":{password}@", "@") + f"?password={password}" for u in (storage, tracking))
    spec = tmp_path / "lands.yaml"
    base = {**TINY_BASE, "model": {"name": "cnn", "width": 4}, "analysis": {"save_weights": True}}
    spec.write_text(yaml.safe_dump({"name": "lands", "base": base, "seeds": 1, "baseline": "adam",
                                    "cells": {"adam": {"method.name": "base"}}}))
    outputs = []
    for args in (["ablate", str(spec), "--storage", storage, "--tracking-uri", tracking],
                 ["landscape", "lands", "--what", "trace", "--samples", "32", "--probes", "2", "--device", "cpu",
                  "--tracking-uri", tracking]):
        code, output = _sal(tmp_path, *args)
        assert code == 0, output
        outputs.append(output)
    assert "password=***" in outputs[0] and "logged to 1 runs in postgresql://" in outputs[1]
    assert not any(_shown(password, o) for o in outputs)
    from sal.queue.engine import StorageRef

    attrs = optuna.load_study(study_name="lands", storage=StorageRef(storage).open()).user_attrs
    assert attrs[ATTR_TRACKING_URI].endswith("?password=***")
    for name in names:
        dump = subprocess.run(["pg_dump", "-h", PG["host"], "-p", str(PG["port"]), "-U", PG["user"], name],
                              capture_output=True, text=True, timeout=120, check=True).stdout
        assert "lands" in dump and not _shown(password, dump)


def _descendants(pid: int) -> dict[int, str]:
    """Every live process below ``pid`` with its command line (as `ps` shows it to any user)."""
    from pathlib import Path

    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    found, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        for child, ppid in parent.items():
            if ppid == p and child not in found:
                try:
                    found[child] = (Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
                except OSError:
                    continue
                frontier.append(child)
    return found


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.postgres
def test_sal_ui_shows_no_password_in_ps_and_sigterm_stops_every_process(secret_databases):
    """Before the fix: `mlflow ui --backend-store-uri postgresql://u:PW@...` was on the command line (any user's
    `ps` shows it), and SIGTERM to `sal ui` left mlflow ui and its server running."""
    import signal
    import time

    from tests.helpers import free_port, wait_until_serving

    password, (_, tracking), _ = secret_databases
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sal", "--tracking-uri", tracking, "ui", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(proc, port)
        children = _descendants(proc.pid)
        assert len(children) >= 2  # mlflow ui and the web server it starts
        assert [c for c in children.values() if _shown(password, c)] == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in children):
            time.sleep(0.5)
        assert [cmd for p, cmd in children.items() if _alive(p)] == []
        assert not _shown(password, proc.stdout.read())
    finally:
        if proc.poll() is None:
            proc.kill()
        for p in _descendants(proc.pid):
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGKILL)


# --- passwords with quotes, spaces, '@', escapes: masked as each parser reads them ---
def _parsed_passwords(text: str) -> set[str]:
    """The password as SQLAlchemy, urllib (MLflow's HTTP client) and libpq read ``text``: every one must go."""
    from urllib.parse import unquote, urlsplit

    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import make_url

    found = set()
    if "://" in text:
        url = make_url(text)
        found |= {url.password, url.query.get("password")}
        found.add(urlsplit(text).password)
    with contextlib.suppress(Exception):  # libpq refuses some forms SQLAlchemy takes (a space in a URL)
        found.add(conninfo_to_dict(text).get("password"))
    found = {p for p in found if p}
    return found | {unquote(p) for p in found} | {p.replace("%", "%25") for p in found}


@pytest.mark.parametrize("text, shown", [
    ("postgresql://u:S3cr3t'PW@host/db", "postgresql://u:***@host/db"),
    ('postgresql://u:S3cr3t"PW@host/db', "postgresql://u:***@host/db"),
    ("postgresql://u:S3cr3t PW@host/db", "postgresql://u:***@host/db"),
    ("postgresql+psycopg://u:S3cr3t@PW@host:5432/db", "postgresql+psycopg://u:***@host:5432/db"),  # urllib: last '@'
    ("postgresql://u:p%40ss%27%20x@host/db", "postgresql://u:***@host/db"),
    ("postgresql://u:S3c/r3t?PW@host/db", "postgresql://u:***@host/db"),  # SQLAlchemy: anything but '@'
    ("postgresql://my user:S3cr3t@host/db", "postgresql://my user:***@host/db"),
    ("postgresql://u@host/db?password=S3cr3t'PW", "postgresql://u@host/db?password=***"),
    ("postgresql://u@host/db?password=a b\"c@d&sslmode=require", "postgresql://u@host/db?password=***&sslmode=require"),
    ("postgresql://u@host/db?pass%77ord=S3cr3t", "postgresql://u@host/db?pass%77ord=***"),
    ("postgresql://u@host:5432/db?password=S3cr3t@PW", "postgresql://u@host:5432/db?password=***"),
    ("host=h password='a b' dbname=db", "host=h password=*** dbname=db"),
    ("host=h password='it\\'s \\\\ me' dbname=db", "host=h password=*** dbname=db"),
    ("host=h password=S3cr3t'PW\"x dbname=db", "host=h password=*** dbname=db"),
    ("host=h password=a\\ b dbname=db", "host=h password=*** dbname=db"),
    ("host=h password='never closed", "host=h password=***"),
])
def test_every_password_sqlalchemy_urllib_or_libpq_reads_is_masked(text, shown):
    from sal.core.redact import has_mask, mask_text

    passwords = _parsed_passwords(text)
    assert passwords or text.endswith("'never closed")  # the form carries a password (libpq refuses the last)
    masked = mask_text(text)
    assert masked == shown and has_mask(masked)
    assert [p for p in passwords if p in masked] == []
    # inside an error message, quoted, beside another URL: still masked, and the other URL kept
    line = f"could not open '{text}' (MLflow at http://127.0.0.1:5000/api)"
    assert [p for p in passwords if p in mask_text(line)] == []
    assert mask_text(mask_text(line)) == mask_text(line)


def test_masking_keeps_ports_hosts_and_urls_without_a_password():
    from sal.core.redact import mask_text, mask_url

    # in a text a '://' before the '@' reads as a second URL; a URL alone is read as SQLAlchemy reads it
    assert mask_url("postgresql://u:S3c://r3t@host/db") == "postgresql://u:***@host/db"

    for text in ("queue postgresql://alice@db:5432/sal; MLflow http://127.0.0.1:5000",
                 "MLflow tracking server on http://127.0.0.1:5000 (runs: postgresql://mlflow@dbhost/mlflow)",
                 "sqlite:////home/a b/mlflow.db", "host=db user=alice dbname=sal"):
        assert mask_text(text) == text


@pytest.mark.subprocess
@pytest.mark.parametrize("backend", [
    "postgresql://mlflow@db/mlflow?password=S3cr3tPW",
    "postgresql://mlflow@db/mlflow?sslmode=require&PassWord=S3cr3tPW",
    "postgresql://mlflow@db/mlflow?sslpassword=S3cr3tPW",
    "postgresql://mlflow@db/mlflow?pass%57ord=S3cr3tPW",
    "postgresql://mlflow:S3cr3t'PW@db/mlflow",
    "postgresql://mlflow:S3cr3t PW@db/mlflow",
    "postgresql://mlflow:S3c/r3tPW@db/mlflow",
    "mysql://mlflow:S3cr3tPW@db/mlflow",
    "host=db password=S3cr3tPW",
])
def test_the_server_script_refuses_a_password_and_never_shows_it(backend):
    """Before the fix: a ?password= went onto `mlflow server`'s command line (which `ps` shows to every user),
    and the error for a URL that is not PostgreSQL's printed it. The script stops before starting anything (and
    --host without --allowed-hosts, refused after the password check, keeps a regression from starting a server)."""
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "mlflow" / "server.sh"
    proc = subprocess.run([str(script), "--backend", backend, "--host", "0.0.0.0"], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2 and proc.stdout == ""
    assert ("holds a password" if backend.startswith("postgresql") else "not a PostgreSQL URL") in proc.stderr
    assert "S3c" not in proc.stderr and "fix:" in proc.stderr
