"""``sal ui``: run ``mlflow ui`` for a store without showing its password, and stop all of it on request.

The store URI goes to MLflow through ``MLFLOW_BACKEND_STORE_URI`` (MLflow's own variable for
``--backend-store-uri``): a process's environment is readable only by its user, its command line by every
user (``ps``). ``mlflow ui`` starts a web server in further processes; it runs in a process group of its
own, and Ctrl-C, SIGTERM or SIGHUP (its terminal closed) to sal stops that whole group (SIGTERM, then
SIGKILL after a grace period), so no server is left holding the port. A port another program holds is
refused before anything starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

__all__ = ["serve", "check_port_free", "GRACE_S"]

GRACE_S = 10  # seconds mlflow's server gets to stop before it is killed


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # asked to stop, or the terminal closed


class _Stop(Exception):
    """SIGTERM or SIGHUP arrived: leave the wait and stop the group."""


def _on_stop(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise _Stop


def check_port_free(port: int) -> None:
    """127.0.0.1:``port`` can be bound (as mlflow's server will); SpecError naming --port otherwise."""
    import socket

    from ..spec.config import SpecError

    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no obstacle
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            raise SpecError([f"--port={port}: 127.0.0.1:{port} is in use or not available ({err.strerror}); fix: "
                             "stop what holds it, or pass another --port, e.g. --port 5001"]) from None


def serve(uri: str, *, port: int) -> int:
    """Run ``mlflow ui`` on 127.0.0.1:``port`` until it exits or sal is asked to stop (then 0)."""
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port)]
    previous = {sig: signal.signal(sig, _on_stop) for sig in _STOP_SIGNALS}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)  # its own group: stopped as one below
    try:
        return proc.wait()
    except (KeyboardInterrupt, _Stop):
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone already
            return
        try:
            proc.wait(timeout=GRACE_S)
        except subprocess.TimeoutExpired:
            continue
        # mlflow ui has exited; its server workers may still be stopping: give the group the same grace
        if sig == signal.SIGTERM and not _group_gone(proc.pid):
            continue
        return


def _group_gone(pgid: int) -> bool:
    import time

    deadline = time.monotonic() + GRACE_S
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False
