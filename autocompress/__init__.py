"""autocompress: search compression policies for trained PyTorch models.

``import autocompress`` stays lean: Optuna, Ray, MLflow and plotting load only where used.

>>> from autocompress import Policy, compress, search  # doctest: +SKIP
"""

from __future__ import annotations

from autocompress.api import search
from autocompress.errors import AutoCompressError, ConfigError
from autocompress.pipeline._compress import (
    CompressResult,
    MeasureSettings,
    compress,
    load_artifact,
    measure_baseline,
)
from autocompress.pipeline.hooks import TrialHooks
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy, load_policy
from autocompress.study.objectives import load_objectives
from autocompress.study.space import load_space
from autocompress.task import Task, load_task
from autocompress.techniques.importance import Importance, register_importance

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
    "compress",
    "load_artifact",
    "load_objectives",
    "load_policy",
    "load_space",
    "load_task",
    "measure_baseline",
    "register_importance",
    "search",
]
