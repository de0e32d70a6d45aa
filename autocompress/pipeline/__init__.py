"""One policy, end to end: :func:`compress` resolves a policy on a task, applies the techniques,
fine-tunes, writes the target's artifact and measures it; :func:`load_artifact` reads it back.
:class:`CompressOptions` is what a trial runs with, :class:`TrialHooks` what it calls back.
:func:`estimate_recovery` estimates a policy's recovered accuracy cheaply (``proxy``).
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
from autocompress.pipeline.proxy import (
    ProxyTrust,
    RecoveryEstimate,
    estimate_recovery,
    proxy_trust,
    spearman,
)

__all__ = [
    "CompressOptions",
    "CompressResult",
    "ProxyTrust",
    "RecoveryEstimate",
    "MeasureSettings",
    "StageCallback",
    "StopTrial",
    "TrialHooks",
    "compress",
    "estimate_recovery",
    "load_artifact",
    "measure_baseline",
    "measure_teacher",
    "proxy_trust",
    "resolve_policy",
    "spearman",
]
