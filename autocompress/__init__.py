"""autocompress: search compression policies for trained PyTorch models.

``import autocompress`` stays lean: Ray, MLflow and plotting load only where used.
"""

from __future__ import annotations

from .compress import CompressResult, MeasureSettings, compress, load_artifact, measure_baseline
from .errors import AutoCompressError
from .policy import Policy, load_policy
from .task import Task, load_task

__all__ = [
    "AutoCompressError",
    "CompressResult",
    "MeasureSettings",
    "Policy",
    "Task",
    "compress",
    "load_artifact",
    "load_policy",
    "load_task",
    "measure_baseline",
]
