"""Per-class test metrics (the SAL paper's Table 5): sal's report of a confusion matrix against
scikit-learn's classification_report on the same predictions, and a run that logs them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import classification_report

from sal.metrics.classmetrics import class_report, confusion_counts
from sal.training.run import train
from tests.helpers import tiny_spec


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_metrics_match_scikit_learns_classification_report(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))  # class 4 is never predicted
    if seed == 2:
        y[y == 3] = 0  # class 3 never occurs but is predicted
    confusion = confusion_counts(torch.tensor(y), torch.tensor(pred), 5).numpy()
    rows, final = class_report(confusion)
    ref = classification_report(y, pred, output_dict=True, zero_division=0)
    for r in rows:
        if str(r["class"]) in ref:
            got, want = (r["precision"], r["recall"], r["f1"], r["support"]), ref[str(r["class"])]
            assert got == pytest.approx((want["precision"], want["recall"], want["f1-score"], want["support"]))
    assert final["test/f1_macro"] == pytest.approx(ref["macro avg"]["f1-score"])
    assert final["test/f1_weighted"] == pytest.approx(ref["weighted avg"]["f1-score"])
    assert final["test/precision_macro"] == pytest.approx(ref["macro avg"]["precision"])
    assert final["test/recall_macro"] == pytest.approx(ref["macro avg"]["recall"])


def test_a_run_logs_the_per_class_table_of_its_test_split():
    result = train(tiny_spec())
    assert sum(r["support"] for r in result.per_class) == result.final["test/n_samples"]
    correct = sum(r["recall"] * r["support"] for r in result.per_class)  # the diagonal of the confusion matrix
    assert correct / result.final["test/n_samples"] == pytest.approx(result.final["test/acc"])
    assert 0.0 <= result.final["test/f1_macro"] <= 1.0 and "test/f1_weighted" in result.final
