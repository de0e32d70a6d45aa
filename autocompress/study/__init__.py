"""The search: config, objectives, presets, the controller (Optuna), the session and its
trials, the measured start, failures, the Pareto front, the run directory, progress, the
search space and the backends that run trials (local, Ray Tune).

Names load lazily (PEP 562): ``import autocompress.study`` does not import Optuna or Ray.
"""

from __future__ import annotations

from autocompress._lazy import lazy_names
from autocompress.study import space

__getattr__, __all__ = lazy_names(
    __name__,
    {
        "._controller": ("Proposal",),
        "._start": ("StartPlan", "auto_count", "kept_bits", "space_levels", "uniform_name"),
        ".backends.ray": ("make_scheduler",),
        ".budget": ("Budget", "MAX_TRIALS", "parse_budget"),
        ".config": ("SearchConfig",),
        ".failures": ("FailureMonitor", "SearchAborted", "no_feasible_trial"),
        ".halving": ("HalvingLadder", "HalvingSpec"),
        ".objectives": ("LatencySettings", "ObjectiveSet", "load_objectives"),
        ".pareto": (
            "default_reference",
            "dominates",
            "front",
            "front_2d",
            "hypervolume",
            "hypervolume_history",
            "normalize",
            "staircase",
        ),
        ".presets": ("preset_dir",),
        ".records": ("STATES", "TrialRecord", "TrialState", "new_record", "trial_record"),
        ".rundir": ("RunDir", "atomic_write_bytes", "atomic_write_text", "read_jsonl"),
        ".samplers": ("SAMPLERS", "SCHEDULERS", "register_sampler", "register_scheduler"),
        ".session": ("STUDY_KEYS", "SearchResult", "finish", "prepare"),
        ".space": space.__all__,  # the search space, read from YAML and resolved per model
        ".space.units": ("prune_units",),
    },
)
