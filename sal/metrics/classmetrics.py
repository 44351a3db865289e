"""Per-class precision, recall and F1 on a run's test split (the SAL paper's Table 5), from a confusion
matrix accumulated on the device during the test pass (no extra host syncs).

The averages follow scikit-learn's ``classification_report``: over the classes that occur among the labels
or the predictions, macro = the plain mean, weighted = weighted by support; a class never predicted has
precision 0 (and a class never present, recall 0), as with ``zero_division=0``.
"""

from __future__ import annotations

import re

import numpy as np
import torch

__all__ = ["confusion_counts", "class_report", "class_f1_metrics", "class_of_metric", "PER_CLASS_METRICS",
           "MAX_CLASS_METRICS"]

PER_CLASS_METRICS = ("test/f1_macro", "test/f1_weighted", "test/precision_macro", "test/recall_macro")
# Each class's F1 is also a metric (so a report reads it with the run, without an artifact per run); above
# this many classes only the per_class.csv artifact keeps them (a metric per class would flood the UI).
MAX_CLASS_METRICS = 100
_CLASS_F1 = re.compile(r"^test/class(\d+)/f1$")


def confusion_counts(y: torch.Tensor, pred: torch.Tensor, classes: int) -> torch.Tensor:
    """[classes, classes] counts, row = true class, column = predicted class (on y's device)."""
    return torch.bincount(y * classes + pred, minlength=classes * classes).reshape(classes, classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num, dtype=float), where=den > 0)


def class_report(confusion: np.ndarray) -> tuple[list[dict], dict[str, float]]:
    """(rows of class, precision, recall, f1, support; the final metrics of PER_CLASS_METRICS)."""
    c = np.asarray(confusion, float)
    tp, support, predicted = np.diag(c), c.sum(axis=1), c.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    rows = [{"class": k, "precision": float(precision[k]), "recall": float(recall[k]), "f1": float(f1[k]),
             "support": int(support[k])} for k in range(len(c))]
    seen = (support > 0) | (predicted > 0)
    if not seen.any():
        return rows, {}
    weights = support[seen] / support[seen].sum() if support[seen].sum() else np.zeros(seen.sum())
    final = {"test/f1_macro": float(f1[seen].mean()), "test/f1_weighted": float((f1[seen] * weights).sum()),
             "test/precision_macro": float(precision[seen].mean()), "test/recall_macro": float(recall[seen].mean())}
    return rows, final


def class_f1_metrics(rows: list[dict]) -> dict[str, float]:
    """``test/class<k>/f1`` for each class of ``class_report``'s rows (none above MAX_CLASS_METRICS classes)."""
    if len(rows) > MAX_CLASS_METRICS:
        return {}
    return {f"test/class{row['class']}/f1": row["f1"] for row in rows}


def class_of_metric(name: str) -> int | None:
    """The class of a ``test/class<k>/f1`` metric name, else None."""
    match = _CLASS_F1.match(name)
    return int(match.group(1)) if match else None
