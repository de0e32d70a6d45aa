"""One policy, end to end: :func:`compress` resolves a policy on a task, applies the techniques,
fine-tunes, writes the target's artifact and measures it; :func:`load_artifact` reads it back.
:class:`CompressOptions` is what a trial runs with, :class:`TrialHooks` what it calls back.
"""

from __future__ import annotations

from autocompress.pipeline._artifact import measure_baseline
from autocompress.pipeline._compress import (
    CompressResult,
    MeasureSettings,
    compress,
    load_artifact,
    measure_teacher,
    resolve_policy,
)
from autocompress.pipeline.hooks import StageCallback, StopTrial, TrialHooks
from autocompress.pipeline.options import CompressOptions

__all__ = [
    "CompressOptions",
    "CompressResult",
    "MeasureSettings",
    "StageCallback",
    "StopTrial",
    "TrialHooks",
    "compress",
    "load_artifact",
    "measure_baseline",
    "measure_teacher",
    "resolve_policy",
]
