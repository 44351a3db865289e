"""Which command a spec file is for, told from its top-level keys.

A file given to the wrong command (an ablation to ``sal train --config`` or ``sal compare``) would otherwise
fail with every key listed as unknown, or with the whole file printed as one bad value; it is named as what
it is, with the command that runs it.
"""

from __future__ import annotations

from ..core.spec_base import SpecError

__all__ = ["COMMANDS", "kind_of", "check_kind"]

COMMANDS = {"run": "sal train --config {path}", "ablation": "sal ablate {path}",
            "study": "sal study run {path}", "compare": "sal compare {path}"}
_RUN_KEYS = {"seed", "data", "model", "optim", "method", "train", "analysis"}
_ARTICLE = {"run": "a run", "ablation": "an ablation", "study": "a study", "compare": "a compare"}


def kind_of(raw: dict) -> str | None:
    """'ablation', 'study', 'compare' or 'run' by the keys only that kind has; None when it cannot tell."""
    if "cells" in raw or "axes" in raw:
        return "ablation"
    if "methods" in raw and ("tuning" in raw or "evaluation" in raw):
        return "compare"
    if "space" in raw or "n_trials" in raw or "objectives" in raw or "objective" in raw:
        return "study"
    if raw and set(raw) <= _RUN_KEYS and "base" not in raw:
        return "run"
    return None


def check_kind(raw: dict, path: str, expected: str) -> None:
    """Refuse a spec of another kind than the command's, pointing to the command that runs it."""
    found = kind_of(raw)
    if found is not None and found != expected:
        raise SpecError([f"{path} is {_ARTICLE[found]} spec, not {_ARTICLE[expected]} spec; fix: run it with "
                         f"`{COMMANDS[found].format(path=path)}`"])
