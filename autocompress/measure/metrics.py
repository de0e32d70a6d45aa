"""The metric registry: every metric a trial can report, declared once.

Objectives, constraints, progress lines, MLflow, the report and ``compare`` read this table;
adding a metric the pipeline measures is one :func:`register` call here plus a preset naming it.

``timed`` metrics are wall-clock timings of one process: a record's value is only comparable
with the teacher timed in the same process (see :func:`comparable`).

>>> METRICS["latency_ms"].direction == "minimize"
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autocompress.measure.directions import Direction

__all__ = ["METRICS", "Metric", "comparable", "format_value", "register"]


@dataclass(frozen=True)
class Metric:
    """One metric: how it is named, which way is better, and how it is measured."""

    name: str
    direction: Direction
    unit: str
    measured: str  # how it is measured, for people reading the registry
    structural: bool = False  # known from the pruned structure alone, before training
    timed: bool = False  # a timing of one process: compare as a ratio to that process' teacher
    teacher: bool = True  # the teacher has a value of it
    label: str = ""
    scale: float = 1.0  # display value = stored value * scale
    spec: str = ".4g"  # format spec of the display value
    suffix: str = ""  # after the display value, e.g. " KiB"

    @property
    def axis(self) -> str:
        return self.label or self.name


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.direction not in tuple(Direction):
        raise ValueError(f"metric {metric.name!r}: direction {metric.direction!r}")
    METRICS[metric.name] = metric
    return metric


register(Metric("accuracy", Direction.MAXIMIZE, "", "the task's metric on the deployable artifact"))
register(
    Metric(
        "size_bytes",
        Direction.MINIMIZE,
        "B",
        "bytes of the artifact file on disk",
        structural=True,
        label="size (KiB)",
        scale=1 / 1024,
        spec=".1f",
        suffix=" KiB",
    )
)
register(
    Metric(
        "latency_ms",
        Direction.MINIMIZE,
        "ms",
        "median of timed runs of the loaded artifact, 1 intra-op thread, after warm-up",
        structural=True,
        timed=True,
        label="latency (ms)",
        spec=".3f",
        suffix=" ms",
    )
)
register(
    Metric(
        "latency_p90_ms",
        Direction.MINIMIZE,
        "ms",
        "90th percentile of the same timed runs",
        structural=True,
        timed=True,
        label="p90 (ms)",
        spec=".3f",
        suffix=" ms",
    )
)
register(
    Metric(
        "params",
        Direction.MINIMIZE,
        "",
        "parameters of the deployed model",
        structural=True,
        spec=",",
    )
)
register(
    Metric(
        "macs",
        Direction.MINIMIZE,
        "",
        "multiply-accumulates of one forward pass on the example inputs (measure.count_macs)",
        structural=True,
        label="MACs",
        spec=",",
    )
)
register(
    Metric(
        "speedup",
        Direction.MAXIMIZE,
        "x",
        "teacher latency / trial latency, both timed in the trial's process",
        teacher=False,
        spec=".2f",
    )
)
register(
    Metric(
        "compression",
        Direction.MAXIMIZE,
        "x",
        "teacher artifact bytes / trial artifact bytes",
        teacher=False,
        spec=".2f",
    )
)


def teacher_metrics() -> tuple[str, ...]:
    """Metrics the teacher is measured on (the keys of ``teacher.json``)."""
    return tuple(name for name, m in METRICS.items() if m.teacher)


def structural() -> frozenset[str]:
    return frozenset(name for name, m in METRICS.items() if m.structural)


def comparable(
    record: Mapping[str, Any], name: str, teacher: Mapping[str, Any] | None
) -> float | None:
    """A record's value of ``name`` on the run's one teacher scale.

    Non-timed metrics are returned as measured. A timed one is the ratio to the teacher timed in
    the record's own process (``record["teacher"]``), times the run teacher's value: records
    timed on different nodes or processes are compared by their ratios, never raw.
    """
    metrics = record.get("metrics") or {}
    value = metrics.get(name)
    if value is None:
        return None
    metric = METRICS.get(name)
    own = (record.get("teacher") or metrics.get("baseline") or {}).get(name)
    run = (teacher or {}).get(name)
    if metric is None or not metric.timed or not own or not run:
        return float(value)
    return float(value) / float(own) * float(run)


def format_value(name: str, value: Any) -> str:
    """A value for people: scaled and formatted as the registry says, ``-`` when missing."""
    if value is None:
        return "-"
    metric = METRICS.get(name)
    if metric is None or isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return format(value * metric.scale, metric.spec) + metric.suffix
