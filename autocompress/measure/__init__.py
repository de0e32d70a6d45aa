"""Measuring: latency timing (paired with the teacher), the timing gate, the metric registry."""

from __future__ import annotations

from autocompress.measure.directions import DIRECTIONS, Direction
from autocompress.measure.gate import FileGate, Gate, NoGate, trial_gate
from autocompress.measure.metrics import (
    METRICS,
    MeasureContext,
    Metric,
    comparable,
    format_value,
    register,
    teacher_metrics,
)
from autocompress.measure.timing import (
    MeasureSettings,
    count_macs,
    count_params,
    measure_latency,
    measure_paired,
    threads,
)

__all__ = [
    "DIRECTIONS",
    "Direction",
    "FileGate",
    "Gate",
    "METRICS",
    "MeasureContext",
    "MeasureSettings",
    "Metric",
    "NoGate",
    "comparable",
    "count_macs",
    "count_params",
    "format_value",
    "measure_latency",
    "measure_paired",
    "register",
    "teacher_metrics",
    "threads",
    "trial_gate",
]
