"""One spelling per MLflow store, so that a queue can tell whether it is asked to log somewhere else.

``sqlite:///mlflow.db`` run from /home/a and ``sqlite:////home/a/mlflow.db`` are one store; the same
relative URI run from another folder is another. The launcher records the absolute form with the queue
(``sal.tracking_uri``), so workers started anywhere on the machine log to the same file.
"""

from __future__ import annotations

from pathlib import Path

from ..core.redact import mask_url

__all__ = ["canonical_store_uri", "same_store"]


def canonical_store_uri(uri: str) -> str:
    """A SQLite URI with an absolute path; every other URI unchanged."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = uri.removeprefix("sqlite:///")
        if path.strip():
            return f"sqlite:///{Path(path).expanduser().absolute()}"
    return uri


def same_store(recorded: str, uri: str) -> bool:
    """Whether ``uri`` is the store a queue recorded (masked, as sal records it)."""
    return recorded in (mask_url(canonical_store_uri(uri)), mask_url(uri))
