from __future__ import annotations

import itertools
import random

import pytest

from autocompress.errors import AutoCompressError
from autocompress.study.pareto import (
    default_reference,
    hypervolume,
    hypervolume_history,
    normalize,
)

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "size_bytes", "direction": "minimize"},
    {"name": "latency_ms", "direction": "minimize"},
]
BASELINE = {"accuracy": 0.98, "size_bytes": 654321, "latency_ms": 1.1}


def box_union_volume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    """Brute force: compress coordinates into a grid and add every cell some point dominates."""
    inside = [p for p in points if all(v < r for v, r in zip(p, reference, strict=True))]
    axes = [sorted({p[d] for p in inside} | {reference[d]}) for d in range(len(reference))]
    volume = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        low = [axes[d][i] for d, i in enumerate(cell)]
        if any(all(p[d] <= low[d] for d in range(len(low))) for p in inside):
            size = 1.0
            for d, i in enumerate(cell):
                size *= axes[d][i + 1] - axes[d][i]
            volume += size
    return volume


@pytest.mark.parametrize("dim", [2, 3, 4])
@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_box_union(dim: int, seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randint(1, 9)
    # Coarse values give ties and duplicates, which exercise the edge cases.
    points = [
        tuple(rng.choice([0.1, 0.25, 0.4, 0.5, 0.7, 0.9, 1.2]) for _ in range(dim))
        for _ in range(n)
    ]
    points += [tuple(rng.random() for _ in range(dim)) for _ in range(n)]
    reference = tuple([1.0] * dim)
    assert hypervolume(points, reference) == pytest.approx(box_union_volume(points, reference))


def test_known_values() -> None:
    assert hypervolume([(1.0, 2.0), (2.0, 1.0)], (3.0, 3.0)) == pytest.approx(3.0)
    assert hypervolume([(0.0, 0.0, 0.0)], (1.0, 2.0, 3.0)) == pytest.approx(6.0)
    # A point on the reference boundary (or beyond it) adds nothing.
    assert hypervolume([(1.0, 0.0), (5.0, -1.0)], (1.0, 1.0)) == 0.0
    assert hypervolume([], (1.0, 1.0)) == 0.0


def test_dominated_point_changes_nothing() -> None:
    front = [(0.2, 0.5, 0.3), (0.5, 0.1, 0.6)]
    ref = (1.0, 1.0, 1.0)
    assert hypervolume([*front, (0.6, 0.6, 0.6)], ref) == pytest.approx(hypervolume(front, ref))


def test_normalize_to_minimization_space() -> None:
    points = normalize(
        [{"accuracy": 0.49, "size_bytes": 654321 / 2, "latency_ms": 2.2}, (0.98, 654321, 1.1)],
        OBJECTIVES,
        BASELINE,
    )
    assert points[0] == pytest.approx((-0.5, 0.5, 2.0))
    assert points[1] == pytest.approx((-1.0, 1.0, 1.0))


def test_normalize_rejects_missing_baseline_and_bad_direction() -> None:
    with pytest.raises(AutoCompressError, match="latency_ms"):
        normalize([(1.0, 1.0, 1.0)], OBJECTIVES, {"accuracy": 1.0, "size_bytes": 1.0})
    with pytest.raises(AutoCompressError, match="direction"):
        normalize([(1.0,)], [("accuracy", "up")], {"accuracy": 1.0})


def test_default_reference_scores_the_teacher() -> None:
    ref = default_reference(OBJECTIVES)
    assert ref == (0.0, 1.1, 1.1)
    teacher = normalize([BASELINE], OBJECTIVES, BASELINE)
    assert hypervolume(teacher, ref) == pytest.approx(1.0 * 0.1 * 0.1)


def _record(number: int, state: str, acc: float | None, size: float, lat: float) -> dict:
    metrics = {"size_bytes": size, "latency_ms": lat}
    if acc is not None:
        metrics["accuracy"] = acc
    return {"number": number, "state": state, "metrics": metrics}


def test_history_is_monotone_and_uses_only_complete_trials() -> None:
    records = [
        _record(3, "complete", 0.95, 300000, 0.6),
        _record(0, "complete", 0.98, 654321, 1.1),
        _record(1, "infeasible", None, 100000, 0.2),
        _record(2, "complete", 0.97, 400000, 0.9),
        _record(4, "failed", None, 1, 0.01),
        _record(5, "complete", 0.90, 700000, 1.5),  # worse than the reference: adds nothing
        _record(6, "pruned", 0.99, 1, 0.01),
    ]
    history = hypervolume_history(records, OBJECTIVES, BASELINE)
    assert [n for n, _ in history] == [0, 2, 3, 5]
    values = [v for _, v in history]
    assert values == sorted(values)
    assert values[-1] == values[-2]
    complete = [r["metrics"] for r in records if r["state"] == "complete"]
    expected = hypervolume(normalize(complete, OBJECTIVES, BASELINE), (0.0, 1.1, 1.1))
    assert values[-1] == pytest.approx(expected)


def test_history_two_objectives_with_custom_reference() -> None:
    objectives = OBJECTIVES[:2]
    records = [
        _record(0, "complete", 0.98, 654321, 1.0),
        _record(1, "complete", 0.49, 65432.1, 1.0),
    ]
    history = hypervolume_history(records, objectives, BASELINE, reference=(0.0, 2.0))
    assert history[0][1] == pytest.approx(1.0 * 1.0)
    assert history[1][1] == pytest.approx(1.0 * 1.0 + 0.5 * 0.9)


def test_dimension_mismatch_is_an_error() -> None:
    with pytest.raises(AutoCompressError, match="reference"):
        hypervolume([(1.0, 2.0)], (3.0, 3.0, 3.0))
