"""The base of every spec model: pydantic with unknown keys refused (a typo far more often than intent).

Its own module so that method modules can declare their specs without importing sal.config, which
builds the run spec from them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Strict"]


class Strict(BaseModel):
    # allow_inf_nan=False: every float setting is finite (optim.lr: .inf would train to divergence)
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)
