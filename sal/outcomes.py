"""What became of a sweep's trials, in words a user can act on.

Optuna has one FAIL state for several things sal does with the queue: a duplicate closed when claimed
(two launchers queued one cell), a trial given back on Ctrl-C or re-queued because its worker died, and
a run that really crashed. Only the last is a failure; the summary names each (from the ``sal.status``
user attr and Optuna's retry history) so "fail 13" beside "0 failed" cannot alarm anyone.
"""

from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState

from .core.names import ATTR_MESSAGE
from .queue.engine import KEY, STATUS

__all__ = ["trial_outcome", "outcome_counts", "describe_outcomes", "unresolved_failures", "describe_failures"]

_ORDER = ["complete", "pruned", "running", "waiting", "duplicate (closed: an older trial holds the cell)",
          "given back (interrupted), queued again", "re-queued (its worker died)",
          "re-queued (heartbeat lost)", "failed"]


def _retried(study: optuna.Study) -> set[int]:
    """Numbers of trials that the engine or Optuna queued again as a new trial."""
    return {n for t in study.get_trials(deepcopy=False) for n in t.system_attrs.get("retry_history", [])}


def trial_outcome(trial: FrozenTrial, retried: set[int]) -> str:
    """One trial's outcome, one of ``_ORDER``."""
    if trial.state != TrialState.FAIL:
        return trial.state.name.lower()
    status = str(trial.user_attrs.get(STATUS, ""))
    if status.startswith("duplicate"):
        return _ORDER[4]
    if status == "interrupted":
        return _ORDER[5]
    if status == "worker died":
        return _ORDER[6]
    if not status and trial.number in retried:
        return _ORDER[7]
    return "failed"


def outcome_counts(study: optuna.Study) -> dict[str, int]:
    """{outcome: count} in a fixed, readable order."""
    retried = _retried(study)
    counts = Counter(trial_outcome(t, retried) for t in study.get_trials(deepcopy=False))
    return {k: counts[k] for k in _ORDER + sorted(set(counts) - set(_ORDER)) if counts.get(k)}


def describe_outcomes(study: optuna.Study) -> str:
    """E.g. ``35 complete, 13 duplicate (closed: an older trial holds the cell), 2 failed``."""
    counts = outcome_counts(study)
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no trials"


def unresolved_failures(study: optuna.Study) -> list[FrozenTrial]:
    """Failed trials whose work no other trial finished or holds (a retried cell that completed is fine)."""
    retried = _retried(study)
    trials = study.get_trials(deepcopy=False)
    settled = {t.user_attrs.get(KEY) for t in trials if t.state != TrialState.FAIL and t.user_attrs.get(KEY)}
    return [t for t in trials if trial_outcome(t, retried) == "failed"
            and (t.user_attrs.get(KEY) is None or t.user_attrs.get(KEY) not in settled)]


def describe_failures(failed: list[FrozenTrial], *, limit: int = 5) -> list[str]:
    """The failure messages, grouped: ``3 x RuntimeError: ... (trials 4, 7, 9)``, most frequent first."""
    groups: dict[str, list[int]] = {}
    for t in failed:
        message = str(t.user_attrs.get(ATTR_MESSAGE) or "").strip()
        first = message.splitlines()[-1] if message else "no message stored (the error is in the log above)"
        groups.setdefault(first[:300], []).append(t.number)
    ranked = sorted(groups.items(), key=lambda kv: -len(kv[1]))
    lines = [f"{len(numbers)} x {message} (trials {', '.join(map(str, numbers[:8]))}"
             f"{', ...' if len(numbers) > 8 else ''})" for message, numbers in ranked[:limit]]
    if len(ranked) > limit:
        lines.append(f"... and {len(ranked) - limit} other messages")
    return lines
