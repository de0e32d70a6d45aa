"""The metric registry: every metric a trial can report, declared once, with how it is measured.

Objectives, constraints, progress lines, MLflow, the report, ``compare``, ``export --by`` and the
CLI summary read this table. A metric with a ``measure`` function is measured by the pipeline on
every candidate's artifact and on the teacher's (:func:`measure_all` over a
:class:`MeasureContext`); adding one is a module calling :func:`register` (plus a preset naming
it, if wanted) and it appears everywhere.

``timed`` metrics are wall-clock timings of one process: a record's value is only comparable
with the teacher timed in the same process (see :func:`comparable`).

>>> METRICS["latency_ms"].direction == "minimize"
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from autocompress.measure.directions import Direction

__all__ = [
    "METRICS",
    "MeasureContext",
    "Metric",
    "comparable",
    "format_value",
    "measure_all",
    "register",
    "summary",
    "teacher_metrics",
]


@dataclass
class MeasureContext:
    """What a metric is measured from: one artifact as its target loaded it (a candidate's, or
    the teacher's when ``baseline`` is None). ``runtime`` (bytes of the files and the timings,
    taken once, interleaved with the teacher when paired) and ``counts`` (params, MACs) are
    taken on first use; ``values`` holds the metrics measured so far, in registry order."""

    task: Any
    target: Any
    student: Any  # the trained module the artifact was written from
    deployed: Any  # the artifact as loaded back (callable like an nn.Module)
    path: Path  # the artifact file
    baseline: Mapping[str, Any] | None  # the run teacher's figures; None: this is the teacher
    take_runtime: Callable[[], dict[str, Any]]
    take_counts: Callable[[], dict[str, int]]
    values: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def runtime(self) -> dict[str, Any]:
        return self.take_runtime()

    @cached_property
    def counts(self) -> dict[str, int]:
        return self.take_counts()

    @property
    def teacher(self) -> dict[str, Any]:
        """The teacher this candidate is compared with: the run's, with the timings taken
        interleaved with it in this process when paired."""
        return {**(self.baseline or {}), **self.runtime.get("teacher_paired", {})}


Measure = Callable[[MeasureContext], float | None]


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
    # how the pipeline measures it (None: recorded by something else, or not on every target)
    measure: Measure | None = field(default=None, compare=False, repr=False)

    @property
    def axis(self) -> str:
        return self.label or self.name


METRICS: dict[str, Metric] = {}


def register(metric: Metric) -> Metric:
    if metric.direction not in tuple(Direction):
        raise ValueError(f"metric {metric.name!r}: direction {metric.direction!r}")
    METRICS[metric.name] = metric
    return metric


def _runtime(key: str) -> Measure:
    return lambda ctx: ctx.runtime[key]


def _count(key: str) -> Measure:
    return lambda ctx: ctx.counts[key]


def _ratio(key: str) -> Measure:
    """The teacher's ``key`` over the candidate's: how many times better the candidate is."""
    return lambda ctx: ctx.teacher[key] / ctx.values[key]


# what the metrics of a kind share: latencies, counts of the deployed model, ratios to the teacher
_TIMING: dict[str, Any] = {"structural": True, "timed": True, "spec": ".3f", "suffix": " ms"}
_COUNT: dict[str, Any] = {"structural": True, "spec": ","}
_RATIO: dict[str, Any] = {"teacher": False, "spec": ".2f"}

# the built-in metrics, in the order records, summaries and tables show them
for _metric in (
    Metric(
        "accuracy",
        Direction.MAXIMIZE,
        "",
        "the task's metric on the deployable artifact",
        measure=lambda ctx: ctx.task.evaluate(ctx.deployed),
    ),
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
        measure=_runtime("size_bytes"),
    ),
    Metric(
        "latency_ms",
        Direction.MINIMIZE,
        "ms",
        "median of timed runs of the loaded artifact, 1 intra-op thread, after warm-up",
        label="latency (ms)",
        measure=_runtime("latency_ms"),
        **_TIMING,
    ),
    Metric(
        "latency_p90_ms",
        Direction.MINIMIZE,
        "ms",
        "90th percentile of the same timed runs",
        label="p90 (ms)",
        measure=_runtime("latency_p90_ms"),
        **_TIMING,
    ),
    Metric(
        "params",
        Direction.MINIMIZE,
        "",
        "parameters of the deployed model",
        measure=_count("params"),
        **_COUNT,
    ),
    Metric(
        "macs",
        Direction.MINIMIZE,
        "",
        "multiply-accumulates of one forward pass on the example inputs (measure.count_macs)",
        label="MACs",
        measure=_count("macs"),
        **_COUNT,
    ),
    Metric(
        "speedup",
        Direction.MAXIMIZE,
        "x",
        "teacher latency / trial latency, both timed in the trial's process",
        measure=_ratio("latency_ms"),
        **_RATIO,
    ),
    Metric(
        "compression",
        Direction.MAXIMIZE,
        "x",
        "teacher artifact bytes / trial artifact bytes",
        measure=_ratio("size_bytes"),
        **_RATIO,
    ),
):
    register(_metric)


def measure_all(ctx: MeasureContext) -> dict[str, Any]:
    """Every registered metric with a ``measure`` on ``ctx``'s artifact, in registry order (on
    the teacher, those the teacher has); a metric that answers None is left out. The runtime's
    other figures (``latency_retakes``, ``teacher_paired``) follow when it was taken."""
    for name, metric in METRICS.items():
        if metric.measure is None or (ctx.baseline is None and not metric.teacher):
            continue
        value = metric.measure(ctx)
        if value is not None:
            ctx.values[name] = value
    extra = ctx.__dict__.get("runtime") or {}
    return {**ctx.values, **{k: v for k, v in extra.items() if k not in METRICS}}


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
    own = (record.get("teacher") or metrics.get("teacher") or {}).get(name)
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
    scaled = value if metric.scale == 1 else value * metric.scale  # a count stays an int
    return format(scaled, metric.spec) + metric.suffix


def summary(metrics: Mapping[str, Any]) -> str:
    """Every registered metric ``metrics`` holds, on one line: ``accuracy 0.9712  ...``."""
    return "  ".join(f"{n} {format_value(n, metrics[n])}" for n in METRICS if n in metrics)
