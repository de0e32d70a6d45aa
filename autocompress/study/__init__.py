"""The search: config, objectives, presets, the controller (Optuna), the session and its
trials, the measured start, failures, the Pareto front, the run directory, progress, the
search space and the backends that run trials (local, Ray Tune).

Names load lazily (PEP 562): ``import autocompress.study`` does not import Optuna or Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "Budget": "autocompress.study.budget",
    "FailureMonitor": "autocompress.study.failures",
    "GLOBAL_BITS": "autocompress.study.space",
    "GLOBAL_PRUNE": "autocompress.study.space",
    "HierarchicalSpace": "autocompress.study.space",
    "LatencySettings": "autocompress.study.objectives",
    "LayerSpace": "autocompress.study.space",
    "MAX_TRIALS": "autocompress.study.budget",
    "ObjectiveSet": "autocompress.study.objectives",
    "Param": "autocompress.study.space",
    "Proposal": "autocompress.study._controller",
    "ResolvedSpace": "autocompress.study.space",
    "RunDir": "autocompress.study.rundir",
    "SAMPLERS": "autocompress.study.samplers",
    "SCHEDULERS": "autocompress.study.samplers",
    "STATES": "autocompress.study.records",
    "STUDY_KEYS": "autocompress.study.session",
    "SearchAborted": "autocompress.study.failures",
    "SearchConfig": "autocompress.study.config",
    "SearchResult": "autocompress.study.session",
    "SearchSpace": "autocompress.study.space",
    "StartPlan": "autocompress.study._start",
    "atomic_write_bytes": "autocompress.study.rundir",
    "atomic_write_text": "autocompress.study.rundir",
    "auto_count": "autocompress.study._start",
    "start_spec": "autocompress.study.space",
    "default_reference": "autocompress.study.pareto",
    "dominates": "autocompress.study.pareto",
    "finish": "autocompress.study.session",
    "front": "autocompress.study.pareto",
    "front_2d": "autocompress.study.pareto",
    "hypervolume": "autocompress.study.pareto",
    "hypervolume_history": "autocompress.study.pareto",
    "kept_bits": "autocompress.study._start",
    "load_objectives": "autocompress.study.objectives",
    "load_space": "autocompress.study.space",
    "make_scheduler": "autocompress.study.backends.ray",
    "new_record": "autocompress.study.records",
    "no_feasible_trial": "autocompress.study.failures",
    "normalize": "autocompress.study.pareto",
    "parse_budget": "autocompress.study.budget",
    "prepare": "autocompress.study.session",
    "preset_dir": "autocompress.study.presets",
    "prune_units": "autocompress.study.space.units",
    "read_jsonl": "autocompress.study.rundir",
    "register_sampler": "autocompress.study.samplers",
    "register_scheduler": "autocompress.study.samplers",
    "space_levels": "autocompress.study._start",
    "staircase": "autocompress.study.pareto",
    "uniform_name": "autocompress.study._start",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_WHERE)
