"""Ctrl-C is never lost: an interrupt some library swallowed still stops training at the next epoch."""

from __future__ import annotations

import os
import signal

import pytest

from sal.core import interrupts
from sal.core.names import ATTR_STATUS
from sal.training.run import TrainingRun
from sal.training.seeds import start_seeds
from tests.helpers import tiny_spec


@pytest.fixture
def sal_sigint(monkeypatch):
    previous = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(interrupts, "_requested", False)
    interrupts.install()
    yield
    signal.signal(signal.SIGINT, previous)


def _swallowed_ctrl_c() -> None:
    try:  # what a finalizer or a library's broad `except BaseException: pass` does to the interrupt
        os.kill(os.getpid(), signal.SIGINT)  # Python runs the handler at the next bytecode, inside this try
    except KeyboardInterrupt:
        pass


def test_a_swallowed_ctrl_c_stops_a_run_at_the_next_epoch(sal_sigint):
    run = TrainingRun(tiny_spec(train={"epochs": 3}))
    run.step()
    assert not interrupts.requested()
    _swallowed_ctrl_c()
    assert interrupts.requested()
    with pytest.raises(KeyboardInterrupt):
        run.step()
    assert run.epoch == 1  # no further epoch was trained


def test_a_swallowed_ctrl_c_stops_packed_seeds_at_the_next_epoch(sal_sigint):
    group = start_seeds([tiny_spec(seed=s, train={"epochs": 3, "pack": "on"}) for s in (1, 2)])
    group.step()
    _swallowed_ctrl_c()
    with pytest.raises(KeyboardInterrupt):
        group.step()


def test_without_a_ctrl_c_check_does_nothing(sal_sigint):
    interrupts.check()
    assert not interrupts.requested()


def _converted_ctrl_c():
    """What MLflow's store does to a Ctrl-C that lands inside it: the KeyboardInterrupt becomes its own error
    (seen on a packed ablation: the CLI exited 1 with "MlflowException" instead of 130)."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
    except KeyboardInterrupt as err:
        raise RuntimeError("a library's error, raised while handling the interrupt") from err


def test_an_error_a_library_makes_of_a_ctrl_c_is_the_ctrl_c_for_a_seed(sal_sigint):
    from sal.sweeps.ablation_worker import _train_or_fail

    def on_epoch(epoch, row):
        _converted_ctrl_c()

    # without the rule the seed ends FAILED ("crashed") and its trial would not be given back as interrupted
    with pytest.raises(KeyboardInterrupt):
        _train_or_fail(tiny_spec(train={"epochs": 2}), on_epoch)


def test_the_work_loop_gives_back_a_trial_whose_run_failed_after_a_ctrl_c(sal_sigint, tmp_path):
    import optuna

    from sal.queue.engine import StorageRef
    from sal.queue.workqueue import Queue, work

    ref = StorageRef(str(tmp_path / "q.journal"))
    optuna.create_study(study_name="ic", storage=ref.open()).enqueue_trial({}, user_attrs={"k": "a"})
    queue = Queue(ref, "ic")

    class Job:
        wait = False

        def claim(self, q):
            return q.claim()

        def run(self, q, claimed):
            _converted_ctrl_c()

    with pytest.raises(KeyboardInterrupt):
        work(queue, Job(), poll_s=0)
    first, retry = queue.trials()  # without the rule: the trial stays RUNNING, given back by nobody
    assert first.state.name == "FAIL" and first.user_attrs[ATTR_STATUS] == "interrupted"
    assert retry.state.name == "WAITING" and retry.system_attrs["failed_trial"] == first.number


def test_the_cli_exits_130_when_a_ctrl_c_surfaces_as_another_error(sal_sigint, tmp_path, capsys, monkeypatch):
    from sal import cli

    def interrupted_command(args):
        _converted_ctrl_c()

    monkeypatch.setitem(cli._COMMANDS, "ablate", interrupted_command)
    spec = tmp_path / "a.yaml"
    spec.write_text("name: a\n")
    assert cli.main(["ablate", str(spec)]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted; finished runs are kept") and "RuntimeError" not in err
