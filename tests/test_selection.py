"""Which cell a run belongs to: decided once (sal.stats.selection.cell_of), for a frame of runs and for one run."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sal.core.names import TAG_CELL
from sal.stats.selection import cell_of, run_cell


def test_a_run_without_a_cell_tag_belongs_to_its_method():
    runs = pd.DataFrame({f"tags.{TAG_CELL}": ["sal_fast", np.nan, ""], "tags.method": ["sal", "adam", "sgd"]})
    assert cell_of(runs).tolist() == ["sal_fast", "adam", "sgd"]
    assert [run_cell(r) for _, r in runs.iterrows()] == ["sal_fast", "adam", "sgd"]
    # runs logged by `sal train` carry no cell tag at all
    assert cell_of(runs[["tags.method"]]).tolist() == ["sal", "adam", "sgd"]


def test_a_grid_key_is_built_and_read_by_one_type():
    from sal.core.gridkey import GridKey, Place

    key = GridKey(Place("sal", "digits", "lr=0.01"), "ab12cd34ef56", 7)
    assert str(key) == "sal|digits|lr=0.01|ab12cd34ef56|seed=7"  # the format stored queues and records hold
    assert GridKey.parse(str(key)) == key and GridKey.group_of(str(key)) == key.group
    assert Place.parse("adam|digits|") == Place("adam", "digits", "") and str(Place("adam", "digits")) == "adam|digits|"
