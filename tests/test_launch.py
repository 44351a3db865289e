"""One set of checks before a sweep (sal/sweeps/launch.py), for the CLI and the Python API alike: the API ran
without the CLI's checks of workers, devices, data, the queue's recorded MLflow store and the artifact root."""

from __future__ import annotations

import pytest

import sal
from sal.spec.config import SpecError
from sal.sweeps.launch import parse_gpus
from tests.helpers import write_ablation, write_study


def test_the_api_refuses_what_the_cli_refuses_before_any_compute(tmp_path):
    path = write_ablation(tmp_path, "apichecks", seeds=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SpecError, match="--workers=0 must be at least 1"):
        sal.run_ablation(path, storage=str(tmp_path / "q.journal"), tracking_uri=uri, workers=0)
    with pytest.raises(SpecError, match="--gpus"):
        sal.run_study(write_study(tmp_path, "apistudy"), storage=str(tmp_path / "s.journal"), tracking_uri=uri,
                      gpus="zero")
    assert not (tmp_path / "q.journal").exists() and not (tmp_path / "mlflow.db").exists()  # nothing written


@pytest.mark.store
def test_the_api_keeps_a_queue_to_its_own_mlflow_store(tmp_path):
    # run_ablation into store A, then again with store B: the CLI refused, the API trained everything again in B
    path = write_ablation(tmp_path, "apistore", seeds=1, cells={"adam": {"method.name": "base"}})
    journal = str(tmp_path / "q.journal")
    sal.run_ablation(path, storage=journal, tracking_uri=f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(SpecError, match="is not the MLflow store"):
        sal.run_ablation(path, storage=journal, tracking_uri=f"sqlite:///{tmp_path / 'b.db'}")
    out = sal.run_ablation(path, storage=journal, tracking_uri=f"sqlite:///{tmp_path / 'b.db'}",
                           new_tracking_store=True)  # said on purpose: trained again into b
    assert out["failed_workers"] == 0


def test_gpus_are_device_numbers_from_the_cli_or_the_api():
    assert parse_gpus("0, 1") == ["0", "1"] and parse_gpus([2, 3]) == ["2", "3"] and parse_gpus(None) is None
    with pytest.raises(SpecError, match="must list device numbers"):
        parse_gpus("cuda:0")
