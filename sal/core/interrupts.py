"""Ctrl-C that is never lost.

Python raises KeyboardInterrupt wherever the main thread happens to be when SIGINT arrives. Raised inside
a finalizer or a library's broad handler it can be swallowed, and the sweep would then train on and exit 0
with its running trials never given back. The handler below also records the request, and the training
loops call ``check()`` at each epoch, so a swallowed interrupt is raised again at the next epoch boundary
and the CLI still exits 130.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["install", "check", "requested", "raise_if_requested"]

_requested = False


def _on_sigint(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    global _requested
    _requested = True
    raise KeyboardInterrupt


def install() -> None:
    """Take over SIGINT in this process (the CLI and each worker process call it; a library user's own
    handler is left alone). Also undoes an inherited 'ignore SIGINT' (a shell's background job), so
    Ctrl-C of a process group always reaches sal."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def requested() -> bool:
    return _requested


def check() -> None:
    """Raise KeyboardInterrupt if Ctrl-C arrived earlier (called between epochs)."""
    if _requested:
        raise KeyboardInterrupt


def raise_if_requested(err: BaseException) -> None:
    """Raise KeyboardInterrupt from ``err`` if Ctrl-C arrived: an error that surfaces after it is the Ctrl-C
    (a library, e.g. MLflow's store, turns the KeyboardInterrupt raised inside it into its own exception), so
    the running trials are given back as interrupted, not failed, and the CLI exits 130."""
    if _requested:
        raise KeyboardInterrupt from err
