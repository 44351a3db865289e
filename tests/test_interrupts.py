"""Ctrl-C is never lost: an interrupt some library swallowed still stops training at the next epoch."""

from __future__ import annotations

import os
import signal

import pytest

from sal.core import interrupts
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
