"""The checks that protect a sweep before anything is created or computed: one set for ``sal ablate``,
``sal study run`` and ``sal compare`` and for their twins in the Python API (``sal.run_ablation``,
``sal.run_study``, ``sal.compare``), so a check added for one protects every caller.

Two steps, because ``--dry-run`` stops between them: ``check_specs`` (what the runs need: a user's model
and data functions, workers, devices, data folders) and ``check_stores`` (the queue and the MLflow store
reachable, the queue keeping to the store it recorded, artifacts every machine of the sweep reaches).
"""

from __future__ import annotations

from collections.abc import Iterable

from ..spec.config import RunSpec, SpecError

__all__ = ["check_specs", "check_stores", "parse_gpus", "ablation_specs", "study_specs", "compare_specs"]


def check_specs(specs: Iterable[RunSpec], *, workers: int = 1, gpus: list[str] | None = None) -> None:
    """What the runs need, checked on ``specs`` (one per configuration that trains, or its corners)."""
    from ..queue.preflight import check_devices
    from ..training.plugin_check import check_plugins
    from .datacheck import check_specs_data

    specs = list(specs)
    check_plugins(specs)  # a user's model/data functions, before any compute
    if workers < 1:
        raise SpecError([f"--workers={workers} must be at least 1; fix: --workers 1"])
    check_devices(specs, gpus=gpus)
    check_specs_data(specs)  # a layout the loader reads wrongly, a wrong class count


def check_stores(ref, name: str, uri: str, *, new_store: bool = False, recorded: bool = True) -> None:
    """The queue ``ref`` and the tracking store ``uri`` before anything is written to them. ``recorded``:
    the queue's record of its MLflow store is checked (``new_store`` allows another one on purpose)."""
    from ..queue.preflight import check_artifact_root, check_recorded_store, check_storage, check_tracking

    check_storage(ref.url)
    check_tracking(uri)
    if recorded:
        check_recorded_store(ref, name, uri, new_store=new_store)
    check_artifact_root(uri, storage=ref.url)


def parse_gpus(value: str | list[str] | None) -> list[str] | None:
    """``--gpus 0,1`` (or a list of numbers from the API) as device numbers."""
    if not value:
        return None
    gpus = [g.strip() for g in value.split(",")] if isinstance(value, str) else [str(g).strip() for g in value]
    gpus = [g for g in gpus if g]
    if not all(g.isdigit() for g in gpus):
        raise SpecError([f"--gpus={value!r} must list device numbers; fix: e.g. --gpus 0,1"])
    return gpus


def ablation_specs(items) -> list[RunSpec]:
    return [i.spec for i in items]


def study_specs(spec) -> list[RunSpec]:
    """The corners of the search space stand for every trial (sal.spec.study_spec.corner_specs)."""
    from ..spec.study_spec import corner_specs

    return corner_specs(spec)


def compare_specs(spec) -> list[RunSpec]:
    """Every method's tuning corners."""
    from .compare import tuning_spec

    return [s for cell in spec.methods for s in study_specs(tuning_spec(spec, cell))]
