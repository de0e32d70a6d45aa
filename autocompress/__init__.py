"""autocompress: search compression policies for trained PyTorch models.

One function per command (``apply``, ``search`` / ``search_config``, ``inspect``, ``report``,
``export``, ``compare``, ``sync``; in ``autocompress.api``) and the objects they take.
``import autocompress`` stays lean: the command functions, Optuna, Ray, MLflow and plotting
load only where used (PEP 562).

>>> from autocompress import Policy, apply, compress, search  # doctest: +SKIP
"""

from __future__ import annotations

from autocompress._lazy import lazy_names
from autocompress.errors import AutoCompressError, ConfigError
from autocompress.pipeline._artifact import measure_baseline
from autocompress.pipeline._compress import (
    CompressResult,
    MeasureSettings,
    compress,
    load_artifact,
    measure_teacher,
)
from autocompress.pipeline.hooks import TrialHooks
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy, load_policy
from autocompress.study.objectives import load_objectives
from autocompress.study.space import load_space
from autocompress.task import Task, load_task
from autocompress.techniques.importance import Importance, register_importance

_COMMANDS = ("apply", "compare", "export", "inspect", "report", "search", "search_config", "sync")
__getattr__, _ = lazy_names(__name__, {".api": _COMMANDS})

__all__ = [
    "AutoCompressError",
    "CompressOptions",
    "CompressResult",
    "ConfigError",
    "Importance",
    "MeasureSettings",
    "Policy",
    "Task",
    "TrialHooks",
    "apply",
    "compare",
    "compress",
    "export",
    "inspect",
    "load_artifact",
    "load_objectives",
    "load_policy",
    "load_space",
    "load_task",
    "measure_baseline",
    "measure_teacher",
    "register_importance",
    "report",
    "search",
    "search_config",
    "sync",
]
