"""Pareto fronts: dominance, the front of a set of trials, 2-D staircases, exact hypervolume.

The one home of front logic for the controller, the report, ``compare`` and the tests.
Objectives are ``(name, direction)`` pairs, ``{"name", "direction"}`` mappings or objects with
those attributes. A trial's objective values are read with
:func:`autocompress.measure.metrics.comparable`, so timings from different processes are compared as
ratios to their own teacher.

Hypervolume: every objective is divided by the teacher's value and turned into
minimization (maximized objectives are negated). In that space the teacher sits at
``(-1, 1, 1)`` for ``(accuracy, size_bytes, latency_ms)``. Default reference point (see
:func:`default_reference`): ``0`` for a maximized objective and ``1.1`` for a minimized one
(10 % larger / slower than the teacher), so the teacher itself scores ``acc_ratio x 0.1 x 0.1``.
The algorithm slices along the last objective (HSO) down to an exact 2-D sweep.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from autocompress.errors import AutoCompressError
from autocompress.measure.directions import DIRECTIONS, Direction
from autocompress.measure.metrics import comparable
from autocompress.study.records import TrialState

Point = tuple[float, ...]

MAXIMIZE_REFERENCE = 0.0
MINIMIZE_REFERENCE = 1.1


def _name_direction(objective: Any) -> tuple[str, Direction]:
    """``{"name", "direction"}`` mapping, ``(name, direction)`` pair or object with those attributes."""
    if isinstance(objective, Mapping):
        name, direction = objective["name"], objective["direction"]
    elif isinstance(objective, Sequence) and not isinstance(objective, str):
        name, direction = objective
    else:
        name, direction = objective.name, objective.direction
    direction = str(getattr(direction, "value", direction)).lower()
    if direction not in DIRECTIONS:
        raise AutoCompressError(
            f"objective {name!r}: direction must be 'minimize' or 'maximize', but got {direction!r}"
        )
    return str(name), Direction(direction)


def default_reference(objectives: Sequence[Any]) -> Point:
    """Zero for maximized objectives, 1.1x teacher for minimized ones (normalized space)."""
    return tuple(
        MAXIMIZE_REFERENCE if _name_direction(o)[1] == Direction.MAXIMIZE else MINIMIZE_REFERENCE
        for o in objectives
    )


def normalize(
    points: Iterable[Mapping[str, float] | Sequence[float]],
    objectives: Sequence[Any],
    teacher: Mapping[str, float],
) -> list[Point]:
    """Map metric points to minimization space: ``value / teacher``, negated if maximized.

    ``points`` are metric dicts (looked up by objective name) or sequences in objective order.

    >>> normalize([{"accuracy": 0.49, "size_bytes": 50}], [("accuracy", "maximize"),
    ...     ("size_bytes", "minimize")], {"accuracy": 0.98, "size_bytes": 100})
    [(-0.5, 0.5)]
    """
    specs = [_name_direction(o) for o in objectives]
    scales = []
    for name, direction in specs:
        base = teacher.get(name)
        if base is None or float(base) == 0.0:
            raise AutoCompressError(
                f"teacher value for objective {name!r} is {base!r}; normalization needs a "
                "non-zero teacher measurement (check pareto.json 'teacher')"
            )
        sign = -1.0 if direction == Direction.MAXIMIZE else 1.0
        scales.append(sign / float(base))
    result = []
    for point in points:
        if isinstance(point, Mapping):
            values = [point[name] for name, _ in specs]
        else:
            values = list(point)
        if len(values) != len(specs):
            raise AutoCompressError(
                f"point {point!r} has {len(values)} values but there are {len(specs)} objectives"
            )
        result.append(tuple(float(v) * s for v, s in zip(values, scales, strict=True)))
    return result


def _hv2(points: list[Point], reference: Point) -> float:
    """Exact 2-D area: sweep by the first coordinate, keep the running minimum of the second."""
    area, best_y = 0.0, reference[1]
    for x, y in sorted(points):
        if y < best_y:
            area += (reference[0] - x) * (best_y - y)
            best_y = y
    return area


def _hv(points: list[Point], reference: Point) -> float:
    dim = len(reference)
    if not points:
        return 0.0
    if dim == 1:
        return reference[0] - min(p[0] for p in points)
    if dim == 2:
        return _hv2(points, reference)
    # Slice along the last objective: between consecutive levels the dominated region is the
    # (d-1)-dimensional hypervolume of the points already reached, times the slice height.
    ordered = sorted(points, key=lambda p: p[-1])
    volume = 0.0
    for i, point in enumerate(ordered):
        upper = ordered[i + 1][-1] if i + 1 < len(ordered) else reference[-1]
        height = upper - point[-1]
        if height > 0.0:
            volume += height * _hv([p[:-1] for p in ordered[: i + 1]], reference[:-1])
    return volume


def hypervolume(points_min: Iterable[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact volume dominated by ``points_min`` (all objectives minimized) and bounded by ``reference``.

    Points not strictly better than the reference in every objective add nothing.

    >>> hypervolume([(1.0, 2.0), (2.0, 1.0)], (3.0, 3.0))
    3.0
    """
    ref = tuple(float(r) for r in reference)
    inside = []
    for p in points_min:
        point = tuple(float(v) for v in p)
        if len(point) != len(ref):
            raise AutoCompressError(
                f"point {point!r} has {len(point)} values but the reference has {len(ref)}"
            )
        if all(v < r for v, r in zip(point, ref, strict=True)):
            inside.append(point)
    return _hv(_nondominated(inside), ref)


def _nondominated(points: list[Point]) -> list[Point]:
    """Drop dominated and duplicate points; they add no volume but cost time in the recursion."""
    unique = sorted(set(points))
    keep = []
    for p in unique:
        if not any(q != p and _weakly_dominates(q, p) for q in unique):
            keep.append(p)
    return keep


def hypervolume_history(
    records: Iterable[Mapping[str, Any]],
    objectives: Sequence[Any],
    teacher: Mapping[str, float],
    reference: Sequence[float] | None = None,
) -> list[tuple[int, float]]:
    """Hypervolume of the front of the first k complete trials, for k = 1..n.

    ``records`` are ``trials.jsonl`` rows; only ``state == "complete"`` rows that hold every
    objective count, taken in trial-number order. Returns ``(trial number, hypervolume)`` pairs.
    """
    rows = sorted(
        (r for r in records if r.get("state") == TrialState.COMPLETE), key=lambda r: r["number"]
    )
    values = [(r, point(r, objectives, teacher)) for r in rows]
    complete = [(r, v) for r, v in values if v is not None]
    ref = tuple(reference) if reference is not None else default_reference(objectives)
    points = normalize([v for _, v in complete], objectives, teacher)
    history: list[tuple[int, float]] = []
    reached: list[Point] = []
    volume = 0.0
    for (record, _), p in zip(complete, points, strict=True):
        if not any(_weakly_dominates(q, p) for q in reached):
            reached = [q for q in reached if not _weakly_dominates(p, q)] + [p]
            volume = hypervolume(reached, ref)
        history.append((int(record["number"]), volume))
    return history


def _weakly_dominates(a: Point, b: Point) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True))


# -- dominance and fronts ----------------------------------------------------------------------


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, d in zip(a, b, directions, strict=True):
        if d == Direction.MINIMIZE:
            x, y = -x, -y
        if x < y:
            return False
        if x > y:
            better = True
    return better


def point(
    record: Mapping[str, Any], objectives: Sequence[Any], teacher: Mapping[str, Any] | None
) -> list[float] | None:
    """A record's objective values on the run teacher's scale, or None if one is missing."""
    values = [comparable(record, _name_direction(o)[0], teacher) for o in objectives]
    return None if any(v is None for v in values) else [float(v) for v in values]  # type: ignore[arg-type]


def front(
    records: Iterable[Mapping[str, Any]],
    objectives: Sequence[Any],
    teacher: Mapping[str, Any] | None = None,
) -> list[Mapping[str, Any]]:
    """Complete records holding every objective that no other such record dominates."""
    directions = [_name_direction(o)[1] for o in objectives]
    done = []
    for r in records:
        if r.get("state", TrialState.COMPLETE) == TrialState.COMPLETE:
            p = point(r, objectives, teacher)
            if p is not None:
                done.append((r, p))
    return [
        r for r, v in done if not any(dominates(w, v, directions) for _, w in done if w is not v)
    ]


def on_target(record: Mapping[str, Any], name: str) -> dict[str, Any] | None:
    """``record`` as measured on target ``name`` of a several-target search: that target's
    figures as its metrics, the teacher timed on that runtime in its process as its teacher;
    None when the record holds no figures for ``name`` (not measured, or the target failed)."""
    entry = ((record.get("metrics") or {}).get("targets") or {}).get(name)
    if not entry or "error" in entry:
        return None
    teachers = (record.get("teacher") or {}).get("targets") or {}
    return {
        "number": record["number"],
        "state": record.get("state", TrialState.COMPLETE),
        "policy": record.get("policy"),
        "metrics": entry,
        "teacher": teachers.get(name) or entry.get("teacher"),
    }


def target_fronts(
    records: Iterable[Mapping[str, Any]], objectives: Sequence[Any], teacher: Mapping[str, Any]
) -> dict[str, list[Mapping[str, Any]]]:
    """Per target of a several-target search (``teacher["targets"]``), the front of the records
    computed on that target's own figures, on the scale of the run's teacher on that target."""
    rows = list(records)
    out: dict[str, list[Mapping[str, Any]]] = {}
    for name, own in (teacher.get("targets") or {}).items():
        views = [v for v in (on_target(r, name) for r in rows) if v is not None]
        out[name] = front(views, objectives, own)
    return out


def front_2d(
    records: Sequence[Mapping[str, Any]],
    x: tuple[str, str],
    y: tuple[str, str],
    teacher: Mapping[str, Any] | None = None,
) -> list[Mapping[str, Any]]:
    """Records non-dominated in the (x, y) projection, sorted by x: the staircase of a plot."""
    sign = {Direction.MINIMIZE: 1.0, Direction.MAXIMIZE: -1.0}
    pts = []
    for r in records:
        p = point(r, [x, y], teacher)
        if p is not None:
            pts.append((sign[x[1]] * p[0], sign[y[1]] * p[1], r))
    out, best_y = [], float("inf")
    for _, py, r in sorted(pts, key=lambda t: (t[0], t[1])):
        if py < best_y:
            out.append(r)
            best_y = py
    return out


def staircase(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``(cost, gain)`` points sorted by cost, kept where the gain rises: the steps to draw."""
    steps: list[tuple[float, float]] = []
    for cost, gain in sorted(points):
        if not steps or gain > steps[-1][1]:
            steps.append((cost, gain))
    return steps
