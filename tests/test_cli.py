"""``sal train`` end to end against a real MLflow SQLite store; bad input exits 2 and writes nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sal.cli import main
from sal.core.names import EVENT_DEFORM, EVENT_NOISE, EVENT_REVERT, METRIC_STRESS, TAG_KIND
from sal.tracking.store import client_for, run_history, runs_frame

CONTRACT_EPOCH = ["train/loss", "train/acc", "val/loss", "val/acc", METRIC_STRESS, EVENT_NOISE, EVENT_DEFORM,
                  EVENT_REVERT, "time/epoch_s"]
CONTRACT_FINAL = ["test/acc", "test/top5", "test/loss", "time/train_s", "mem/peak_mb", "time/infer_ms"]
CONTRACT_TAGS = [TAG_KIND, "method", "dataset", "model", "optimizer", "seed", "git_sha", "config_hash"]


def test_sal_train_logs_one_run_with_every_contract_name(mlflow_uri, capsys):
    args = ["--tracking-uri", mlflow_uri, "train", "--experiment", "cli-e2e", "--set", "train.epochs=3",
            "--set", "method.warmup=1", "--set", "seed=4", "--set", "model.width=8"]
    assert main(args) == 0
    assert "status finished" in capsys.readouterr().out
    runs = runs_frame(mlflow_uri, ["cli-e2e"])
    assert len(runs) == 1
    run = runs.iloc[0]
    assert run["status"] == "FINISHED"
    for tag in CONTRACT_TAGS:
        assert run[f"tags.{tag}"], tag
    assert (run[f"tags.{TAG_KIND}"], run["tags.method"], run["tags.dataset"], run["tags.seed"]) == (
        "train", "sal", "digits", "4")
    assert run["params.method.rho"] == "0.0005" and run["params.train.epochs"] == "3"
    client = client_for(mlflow_uri)
    for key in CONTRACT_EPOCH:
        steps = [m.step for m in client.get_metric_history(run["run_id"], key)]
        assert sorted(steps) == [1, 2, 3], key
    for key in CONTRACT_FINAL:
        assert run[f"metrics.{key}"] == run[f"metrics.{key}"], key  # present and not NaN
    assert 0 <= run["metrics.test/acc"] <= 1
    artifacts = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"spec.yaml", "history.csv", "per_class.csv"} <= artifacts  # per_class.csv: the paper's Table 5
    assert 0 <= run["metrics.test/f1_macro"] <= 1
    history = run_history(mlflow_uri, run["run_id"])
    assert list(history["epoch"]) == [1, 2, 3]
    stress = [m.value for m in sorted(client.get_metric_history(run["run_id"], METRIC_STRESS), key=lambda m: m.step)]
    assert stress == pytest.approx(list(history[METRIC_STRESS]))


@pytest.mark.parametrize("args,needle", [
    (["--set", "method.s_noise=0.5"], "method.s_noise=0.5 is above method.s_yield"),
    (["--set", "optim.lr=-0.1"], "optim.lr=-0.1"),
    (["--set", "method.rhoo=1"], "method.rhoo: unknown setting"),
    (["--set", "train.epochs=0"], "train.epochs=0"),
    (["--config", "missing.yaml"], "does not exist"),
])
@pytest.mark.subprocess
def test_bad_input_exits_2_names_the_key_and_writes_nothing(tmp_path, args, needle):
    db = tmp_path / "mlflow.db"
    proc = subprocess.run([sys.executable, "-m", "sal", "--tracking-uri", f"sqlite:///{db}", "train", *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert needle in proc.stderr and "fix:" in proc.stderr
    assert not db.exists()  # no MLflow store, so no run
    assert list(tmp_path.iterdir()) == []


@pytest.mark.subprocess
def test_sal_ui_serves_the_store_on_localhost(mlflow_uri):
    import json
    import socket
    import time
    import urllib.request

    assert main(["--tracking-uri", mlflow_uri, "train", "--experiment", "cli-ui", "--set", "train.epochs=1",
                 "--set", "method.name=base"]) == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "sal", "--tracking-uri", mlflow_uri, "ui", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        assert proc.stdout.readline().startswith(f"MLflow UI on http://127.0.0.1:{port}")
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search",
                                         data=b'{"max_results": 100}', headers={"Content-Type": "application/json"})
        deadline, names = time.time() + 90, None
        while time.time() < deadline and names is None:
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    names = {e["name"] for e in json.load(response)["experiments"]}
            except OSError:
                time.sleep(1)
        assert names is not None and "cli-ui" in names
        # the report's query works against a tracking server as against the SQLite file
        over_http = runs_frame(f"http://127.0.0.1:{port}", ["cli-ui"])
        assert len(over_http) == 1
        assert list(over_http["run_id"]) == list(runs_frame(mlflow_uri, ["cli-ui"])["run_id"])
    finally:
        import os
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.subprocess
def test_a_run_that_crashes_is_one_line_and_exit_1(tmp_path, capsys):
    empty = tmp_path / "no_images"
    empty.mkdir()
    code = main(["--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}", "train", "--set", "data.name=imagefolder",
                 "--set", f"data.root={empty}", "--set", "method.name=base", "--set", "train.epochs=1"])
    out = capsys.readouterr().out
    # old main: a traceback (exit 1 from Python) and no MLflow run
    assert code == 1 and "status failed: FileNotFoundError" in out
    assert runs_frame(f"sqlite:///{tmp_path / 'm.db'}", ["sal-train"])["status"].tolist() == ["FAILED"]


@pytest.mark.parametrize("port", ["99999", "0", "-1"])
def test_sal_ui_refuses_a_port_out_of_range(port, tmp_path, capsys):
    """Before the fix: mlflow's traceback and exit 0; now exit 2 naming --port, before any store is created."""
    db = tmp_path / "m.db"
    assert main(["--tracking-uri", f"sqlite:///{db}", "ui", "--port", port]) == 2
    err = capsys.readouterr().err
    assert f"--port={port} must be in 1..65535" in err and "fix:" in err
    assert not db.exists()
