"""Objective sets: what the search optimizes, what it must not break, how latency is timed.

A preset lists ``objectives`` (a metric and a direction each), ``constraints`` (a metric and one
bound: ``max``/``min`` absolute, ``max_drop`` in points below the baseline, ``max_ratio`` of the
baseline) and ``latency`` measurement settings.

>>> objs = load_objectives("edge")
>>> objs.directions == ["maximize", "minimize", "minimize"]
True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocompress.errors import ConfigError
from autocompress.measure.directions import DIRECTIONS, Direction
from autocompress.measure.metrics import METRICS
from autocompress.study.presets import check_keys, read_preset, to_number


@dataclass(frozen=True)
class _Bound:
    """How one kind of bound turns a value into a violation (> 0 is infeasible)."""

    violation: Callable[[float, float, float | None], float]
    relative: bool
    text: str  # how a broken bound reads: "{value} > {bound}"


def _need(baseline: float | None) -> float:
    assert baseline is not None
    return baseline


BOUNDS: dict[str, _Bound] = {
    "max": _Bound(lambda v, b, base: v - b, False, "{value:g} > {bound:g}"),
    "min": _Bound(lambda v, b, base: b - v, False, "{value:g} < {bound:g}"),
    "max_drop": _Bound(
        lambda v, b, base: (_need(base) - v) - b,
        True,
        "{value:g} is more than {bound:g} below the baseline {baseline:g}",
    ),
    "max_ratio": _Bound(
        lambda v, b, base: v / _need(base) - b,
        True,
        "{value:g} > {bound:g} x baseline {baseline:g}",
    ),
}


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Direction

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "direction": self.direction}


@dataclass(frozen=True)
class Constraint:
    """``metric`` must stay within ``value`` under ``bound`` (one of ``BOUNDS``)."""

    metric: str
    bound: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, self.bound: self.value}

    def __str__(self) -> str:
        return f"{self.metric} {self.bound} {self.value:g}"

    @property
    def structural(self) -> bool:
        return METRICS[self.metric].structural

    def violation(self, metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> float:
        """Optuna's convention: ``<= 0`` is feasible."""
        rule = BOUNDS[self.bound]
        if self.metric not in metrics:
            raise KeyError(f"constraint {self}: metric {self.metric!r} was not measured")
        base = None
        if rule.relative:
            if baseline is None or self.metric not in baseline:
                raise KeyError(f"constraint {self} needs the baseline's {self.metric}")
            base = float(baseline[self.metric])
        return float(rule.violation(float(metrics[self.metric]), self.value, base))

    def describe_break(self, metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> str:
        base = baseline.get(self.metric) if baseline else None
        detail = BOUNDS[self.bound].text.format(
            value=float(metrics[self.metric]), bound=self.value, baseline=base or 0.0
        )
        return f"constraint {self} broken: {self.metric} {detail}"


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured: intra-op threads, batch size, timed repeats, warm-up runs."""

    threads: int = 1
    batch_size: int = 1
    repeats: int = 30
    warmup: int = 5
    # each candidate timed interleaved with the teacher in its own process (measure_paired)
    paired: bool = True

    def to_dict(self) -> dict[str, int | bool]:
        out: dict[str, int | bool] = {
            "threads": self.threads,
            "batch_size": self.batch_size,
            "repeats": self.repeats,
            "warmup": self.warmup,
        }
        if not self.paired:  # written only when off: older run directories keep their hash
            out["paired"] = False
        return out


@dataclass(frozen=True)
class ObjectiveSet:
    """Objectives with directions, constraints, and latency settings."""

    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()
    latency: LatencySettings = field(default_factory=LatencySettings)
    source: str = field(default="<dict>", compare=False)

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def directions(self) -> list[Direction]:
        return [o.direction for o in self.objectives]

    def values(self, metrics: Mapping[str, Any]) -> list[float]:
        """The objective values of one trial, in order."""
        missing = [m for m in self.metrics if m not in metrics]
        if missing:
            raise KeyError(f"objective metric(s) not measured: {', '.join(missing)}")
        return [float(metrics[m]) for m in self.metrics]

    def constraint_values(
        self, metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None
    ) -> list[float]:
        """One value per constraint, ``<= 0`` feasible (for ``trial.set_constraint``)."""
        return [c.violation(metrics, baseline) for c in self.constraints]

    @property
    def has_structural_constraints(self) -> bool:
        return any(c.structural for c in self.constraints)

    def structural_violation(
        self, metrics: Mapping[str, Any], baseline: Mapping[str, Any] | None
    ) -> str | None:
        """The first broken constraint among those checkable before training, else None.

        Constraints on metrics absent from ``metrics`` are skipped.
        """
        for c in self.constraints:
            if c.structural and c.metric in metrics and c.violation(metrics, baseline) > 0:
                return c.describe_break(metrics, baseline)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "objectives": [o.to_dict() for o in self.objectives],
            "constraints": [c.to_dict() for c in self.constraints],
            "latency": self.latency.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> ObjectiveSet:
        check_keys(source, "", data, ("objectives", "constraints", "latency"))
        raw = data.get("objectives")
        if not isinstance(raw, list) or not raw:
            raise ConfigError(
                f"{source}: objectives: must be a non-empty list of "
                f"{{metric, direction}}, got {raw!r}"
            )
        objectives = tuple(_objective(o, source, f"objectives[{i}]") for i, o in enumerate(raw))
        seen = [o.metric for o in objectives]
        for i, metric in enumerate(seen):
            if metric in seen[:i]:
                raise ConfigError(f"{source}: objectives[{i}].metric: {metric} is listed twice")
        raw_c = data.get("constraints") or []
        if not isinstance(raw_c, list):
            raise ConfigError(f"{source}: constraints: must be a list, got {raw_c!r}")
        constraints = tuple(
            _constraint(c, source, f"constraints[{i}]") for i, c in enumerate(raw_c)
        )
        return cls(
            objectives=objectives,
            constraints=constraints,
            latency=_latency(data.get("latency") or {}, source),
            source=source,
        )


def _metric(value: Any, source: str, key: str) -> str:
    if value not in METRICS:
        raise ConfigError(
            f"{source}: {key}: unknown metric {value!r}; choose from {', '.join(METRICS)}"
        )
    return value


def _objective(data: Any, source: str, key: str) -> Objective:
    check_keys(source, key, data, ("metric", "direction"))
    metric = _metric(data.get("metric"), source, f"{key}.metric")
    direction = data.get("direction", METRICS[metric].direction)
    if direction not in DIRECTIONS:
        raise ConfigError(f"{source}: {key}.direction: {direction!r} must be maximize or minimize")
    return Objective(metric=metric, direction=Direction(direction))


def _constraint(data: Any, source: str, key: str) -> Constraint:
    check_keys(source, key, data, ("metric", *BOUNDS))
    metric = _metric(data.get("metric"), source, f"{key}.metric")
    bounds = [b for b in BOUNDS if b in data]
    if len(bounds) != 1:
        raise ConfigError(
            f"{source}: {key}: give exactly one bound of {', '.join(BOUNDS)}, got {bounds or 'none'}"
        )
    bound = bounds[0]
    value = float(to_number(source, f"{key}.{bound}", data[bound]))
    if bound in ("max_drop", "max_ratio") and value < 0:
        raise ConfigError(f"{source}: {key}.{bound}: {value:g} must be >= 0")
    if BOUNDS[bound].relative and not METRICS[metric].teacher:
        raise ConfigError(
            f"{source}: {key}: {bound} on {metric} is relative to the teacher, whose {metric} is 1 "
            f"by definition; use min instead"
        )
    return Constraint(metric=metric, bound=bound, value=value)


def _latency(data: Any, source: str) -> LatencySettings:
    keys = tuple(LatencySettings().to_dict())
    check_keys(source, "latency", data, (*keys, "paired"))
    minimum = {"threads": 1, "batch_size": 1, "repeats": 20, "warmup": 0}
    values: dict[str, Any] = {}
    paired = data.get("paired", True)
    if not isinstance(paired, bool):
        raise ConfigError(f"{source}: latency.paired: {paired!r} must be true or false")
    values["paired"] = paired
    for key in keys:
        value = data.get(key, getattr(LatencySettings, key))
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum[key]:
            raise ConfigError(
                f"{source}: latency.{key}: {value!r} must be an integer >= {minimum[key]}"
            )
        values[key] = value
    return LatencySettings(**values)


def load_objectives(name_or_path: str | Path) -> ObjectiveSet:
    """A preset from ``objectives/`` by name (``"edge"``) or a YAML file path."""
    data, source = read_preset(name_or_path, "objectives")
    return ObjectiveSet.from_dict(data, source=source)
