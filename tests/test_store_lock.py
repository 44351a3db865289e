"""Launchers that start together on a new SQLite MLflow store: one creates its tables, none crashes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from sal.tracking.store import runs_frame

# Import first, then wait for a common start time, so the processes reach the new store together.
LAUNCHER = """
import sys, time
from sal.tracking.store import log_summary
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
log_summary(sys.argv[1], "race", run_name="launcher", tags={}, params={}, metrics={"x": 1.0})
"""


@pytest.mark.subprocess
def test_launchers_racing_on_a_fresh_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    start_at = str(time.time() + 15)  # after every process has imported mlflow (seconds on 2 busy cores)
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCHER, uri, start_at], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outcomes = [(p.wait(timeout=180), p.stderr.read()) for p in procs]
    assert [code for code, _ in outcomes] == [0, 0, 0], "\n".join(err[-2000:] for _, err in outcomes)
    assert len(runs_frame(uri, ["race"])) == 3
