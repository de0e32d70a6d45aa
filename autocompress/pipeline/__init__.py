"""One policy, end to end: :func:`compress` resolves a policy on a task, applies the techniques,
fine-tunes, writes the target's artifact and measures it; :func:`load_artifact` reads it back.
"""

from __future__ import annotations

from autocompress.pipeline._compress import (
    CompressResult,
    MeasureSettings,
    StageCallback,
    StopTrial,
    compress,
    load_artifact,
    measure_baseline,
    resolve_policy,
)

__all__ = [
    "CompressResult",
    "MeasureSettings",
    "StageCallback",
    "StopTrial",
    "compress",
    "load_artifact",
    "measure_baseline",
    "resolve_policy",
]
