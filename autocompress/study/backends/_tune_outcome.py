"""How a Ray Tune trial ended, read from its last result: the record state and why.

A trial that reported its record ends in the state the worker measured; one stopped by Tune
over ``trial_timeout_s``, stopped by ASHA after an epoch, ended without a result, or whose
worker raised or died becomes a ``failed`` or ``pruned`` record saying so. No Ray import: Tune's
results are plain dicts.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from autocompress.study.records import TrialState

METRIC = "accuracy"
TIME_ATTR = "epoch"


def finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def report_value(value: Any) -> float:
    """What the scheduler compares: NaN (ignored by ASHA's percentiles) when there is none."""
    value = finite(value)
    return math.nan if value is None else value


@dataclass(frozen=True)
class Outcome:
    state: str
    trial: dict[str, Any] | None = None  # the worker's record, when it reported one
    error: str | None = None
    failure: str | None = None  # the record's ``failure`` kind, when known


def outcome(result: dict[str, Any], *, timeout_s: float | None) -> Outcome:
    """The end of a trial whose last result is ``result``."""
    if "record" in result:
        trial = json.loads(result["record"])
        return Outcome(trial["state"], trial=trial)
    if timeout_s is not None and result.get("time_total_s", 0) > timeout_s:
        error = f"stopped by Tune over trial_timeout_s={timeout_s:g}"
        return Outcome(TrialState.FAILED, error=error, failure="timeout")
    if result.get(TIME_ATTR):
        error = (
            f"stopped by ASHA after epoch {result[TIME_ATTR]} "
            f"({METRIC} {finite(result.get(METRIC))})"
        )
        return Outcome(TrialState.PRUNED, error=error)
    return Outcome(TrialState.FAILED, error="the trial ended without reporting a result")


def error_failure(message: str) -> str:
    """The ``failure`` kind of a trial that raised or whose worker died, from its error text."""
    died = any(word in message.lower() for word in ("died", "worker failed", "exit"))
    return "worker-died" if died else "exception"


def error_text(exc: BaseException | None) -> str:
    """One line naming the exception that ended a trial (its cause, for Ray's wrappers)."""
    if exc is None:
        return "the trial's worker failed"
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        exc = cause
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip()
    return text[:500]
