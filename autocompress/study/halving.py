"""Multi-objective successive halving over fine-tuning epochs: the rungs and the promotion rule.

A policy is judged first at rung 0 (no fine-tuning: the pipeline recalibrates BatchNorm after
pruning, so this is the zero-shot estimate), then the best ``1/eta`` of them at a short
fine-tune, and so on up to the trial's full epochs (``rungs: [0, 1, full]``). Size and latency
are exact at every rung (they do not depend on fine-tuning): only accuracy improves. So a rung
ranks its trials by **non-dominated rank** on all the objectives, crowding distance breaking
ties (NSGA-II's order; then exclusive hypervolume, for a front's ends), not by accuracy alone:
a small, fast, less accurate policy survives beside a big, slow, accurate one.

A rung of 0 epochs ranks by a proxy (``_rungs.rung0_estimate``); the ladder lets it cut only while
``rung0_ranks`` holds, which the search sets from the proxy's measured rank correlation with the
next rung (``_ladder_run``): otherwise every trial goes up from it.

Trials enter in brackets of ``eta ** (len(rungs) - 1)`` (synchronous successive halving): once
every member of a bracket has reported at a rung, the top ``ceil(n / eta)`` of the ``n`` that
reached it are promoted, the others stop there, and those decisions are final. The last,
partly filled bracket decides when :meth:`HalvingLadder.close` says no trial will enter.

:class:`HalvingLadder` holds no model and runs nothing: a backend runs the ``(number, rung)``
jobs it hands out (``autocompress.study._ladder_run``), the same on every backend.

>>> ladder = HalvingLadder(HalvingSpec(rungs=(0, 1, "full"), eta=2))  # brackets of 4
>>> for n, point in enumerate([(-0.9, 100.0), (-0.8, 10.0), (-0.7, 50.0), (-0.6, 90.0)]):
...     ladder.enter(n, top=2)
...     ladder.add(n, 0, point)
>>> sorted(ladder.next_job() for _ in range(2)), [s.number for s in ladder.take_stopped()]
([(0, 1), (1, 1)], [2, 3])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autocompress.study.pareto import hypervolume

FULL = "full"  # the last rung: the trial's own fine-tuning epochs
DEFAULT_RUNGS: tuple[int | str, ...] = (0, 1, FULL)
DEFAULT_ETA = 3

Point = tuple[float, ...]  # one value per objective, every one to be minimized


@dataclass(frozen=True)
class HalvingSpec:
    """``scheduler: {name: halving, rungs: [0, 1, full], eta: 3}``: rungs in fine-tuning epochs
    (increasing integers, then ``full``), and ``eta``: one in ``eta`` goes up a rung."""

    rungs: tuple[int | str, ...] = DEFAULT_RUNGS
    eta: int = DEFAULT_ETA

    def __post_init__(self) -> None:
        problem = spec_problem(self.rungs, self.eta)
        if problem:
            from autocompress.errors import ConfigError

            raise ConfigError(problem)
        object.__setattr__(self, "rungs", tuple(self.rungs))

    @property
    def bracket(self) -> int:
        """Trials per bracket: enough for one to reach the last rung."""
        return int(self.eta ** (len(self.rungs) - 1))

    def epochs(self, rung: int, full: int) -> int:
        """Fine-tuning epochs at ``rung`` of a trial whose full budget is ``full`` epochs."""
        value = self.rungs[rung]
        return full if value == FULL else min(int(value), full)

    def top(self, full: int) -> int:
        """A trial's last rung: the first that runs its full epochs."""
        return next(r for r in range(len(self.rungs)) if self.epochs(r, full) >= full)

    def to_dict(self) -> dict[str, Any]:
        return {"name": "halving", "rungs": list(self.rungs), "eta": self.eta}


def spec_problem(rungs: Any, eta: Any) -> str | None:
    """What is wrong with ``rungs`` / ``eta`` (one line naming the key), or None."""
    if isinstance(eta, bool) or not isinstance(eta, int) or eta < 2:
        return f"scheduler.eta: {eta!r} must be an integer >= 2"
    if not isinstance(rungs, list | tuple) or len(rungs) < 2 or rungs[-1] != FULL:
        return (
            f"scheduler.rungs: {rungs!r} must be a list of at least two rungs in fine-tuning "
            "epochs ending with full, e.g. [0, 1, full]"
        )
    epochs = rungs[:-1]
    if not all(isinstance(e, int) and not isinstance(e, bool) and e >= 0 for e in epochs):
        return f"scheduler.rungs: {rungs!r}: each rung before full must be an integer >= 0"
    if any(b <= a for a, b in zip(epochs, epochs[1:], strict=False)):
        return f"scheduler.rungs: {rungs!r} must increase"
    return None


# -- the order of a rung: non-dominated rank, then crowding distance --------------------------
def _dominates(a: Point, b: Point) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def nondominated_fronts(points: Mapping[int, Point]) -> list[list[int]]:
    """The keys of ``points`` in successive non-dominated fronts (rank 0 first)."""
    left = dict(points)
    fronts = []
    while left:
        front = [k for k, p in left.items() if not any(_dominates(q, p) for q in left.values())]
        fronts.append(sorted(front))
        for k in front:
            del left[k]
    return fronts


def crowding(points: Mapping[int, Point], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II crowding distance of each member of ``front`` (its ends: infinite)."""
    distance = dict.fromkeys(front, 0.0)
    if len(front) <= 2:
        return dict.fromkeys(front, math.inf)
    for axis in range(len(points[front[0]])):
        ordered = sorted(front, key=lambda k: (points[k][axis], k))
        low, high = points[ordered[0]][axis], points[ordered[-1]][axis]
        distance[ordered[0]] = distance[ordered[-1]] = math.inf
        if high == low:
            continue
        for before, k, after in zip(ordered, ordered[1:], ordered[2:], strict=False):
            distance[k] += (points[after][axis] - points[before][axis]) / (high - low)
    return distance


def contribution(points: Mapping[int, Point], front: Sequence[int]) -> dict[int, float]:
    """Each member's exclusive hypervolume in ``front``, each axis scaled to the front's range
    (reference 1.1): it orders the ends of a front, whose crowding distances are all infinite
    (with three objectives and a few trials, often the whole front)."""
    axes = range(len(points[front[0]]))
    low = [min(points[k][a] for k in front) for a in axes]
    span = [max(points[k][a] for k in front) - low[a] for a in axes]
    scaled = {
        k: tuple((points[k][a] - low[a]) / span[a] if span[a] else 0.0 for a in axes) for k in front
    }
    reference = (1.1,) * len(low)
    whole = hypervolume(scaled.values(), reference)
    return {
        k: whole - hypervolume([p for j, p in scaled.items() if j != k], reference) for k in front
    }


def ranked(points: Mapping[int, Point]) -> list[tuple[int, int]]:
    """``(key, non-dominated rank)`` best first: by rank, then larger crowding distance, then
    larger exclusive hypervolume, then key (the earlier trial)."""
    order = []
    for rank, front in enumerate(nondominated_fronts(points)):
        spread, volume = crowding(points, front), contribution(points, front)
        order += [(k, rank) for k in sorted(front, key=lambda k: (-spread[k], -volume[k], k))]
    return order


# -- the ladder ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stop:
    """A trial that goes no higher: stopped at ``rung``, ``place`` of ``of`` there."""

    number: int
    rung: int
    rank: int  # its non-dominated rank at that rung (0: on the rung's front)
    place: int  # 1-based, in the rung's order
    of: int  # trials that reached the rung in its bracket
    promoted: int  # how many of them went up


@dataclass
class _Bracket:
    size: int
    tops: dict[int, int] = field(default_factory=dict)  # member -> its last rung
    reached: dict[int, dict[int, Point | None]] = field(default_factory=dict)  # rung -> results
    waiting: dict[int, set[int]] = field(default_factory=dict)  # rung -> members yet to report
    decided: set[int] = field(default_factory=set)
    cut: dict[int, bool] = field(default_factory=dict)  # rung -> whether its decision ranked
    closed: bool = False

    @property
    def full(self) -> bool:
        return self.closed or len(self.tops) >= self.size


class HalvingLadder:
    """Brackets of trials climbing the rungs of a :class:`HalvingSpec`.

    ``enter(number, top)`` a new trial at rung 0; ``add(number, rung, point)`` its result there
    (``point`` None: it failed or broke an exact constraint: it goes no higher);
    ``next_job()`` a promoted ``(number, rung)`` to run (``withdraw(number)`` one that will not
    run after all); ``take_stopped()`` the trials stopped since the last call. A trial whose
    ``rung`` is its ``top`` is fully trained: it is ranked with its bracket at that rung (and
    may take a place at the top) but needs no job.
    """

    def __init__(self, spec: HalvingSpec, *, rung0_ranks: bool = True) -> None:
        self.spec = spec
        # False: a rung of 0 epochs (the proxy) promotes every trial that can climb; its
        # decisions rank only while this holds (the caller validates the proxy, see _ladder_run)
        self.rung0_ranks = rung0_ranks
        self.brackets: list[_Bracket] = []
        self._of: dict[int, _Bracket] = {}
        self._jobs: list[tuple[int, int]] = []
        self._stopped: list[Stop] = []

    def enter(self, number: int, *, top: int) -> None:
        if not self.brackets or self.brackets[-1].full:
            self.brackets.append(_Bracket(size=self.spec.bracket))
        bracket = self.brackets[-1]
        bracket.tops[number] = top
        bracket.waiting.setdefault(0, set()).add(number)
        self._of[number] = bracket

    def add(self, number: int, rung: int, point: Sequence[float] | None) -> None:
        bracket = self._of[number]
        bracket.waiting[rung].discard(number)
        bracket.reached.setdefault(rung, {})[number] = None if point is None else tuple(point)
        self._decide(bracket)

    def close(self) -> None:
        """No trial enters any more: the last bracket decides with the trials it has."""
        if self.brackets and not self.brackets[-1].closed:
            self.brackets[-1].closed = True
            self._decide(self.brackets[-1])

    def next_job(self) -> tuple[int, int] | None:
        return self._jobs.pop(0) if self._jobs else None

    @property
    def has_jobs(self) -> bool:
        return bool(self._jobs)

    def withdraw(self, number: int) -> None:
        """A promoted trial that will not run (the budget is spent): expect no result of it."""
        bracket = self._of[number]
        for waiting in bracket.waiting.values():
            waiting.discard(number)
        self._decide(bracket)

    def ranked(self, number: int, rung: int) -> bool:
        """Whether ``rung``'s decision for ``number``'s bracket ranked (cut) its trials."""
        return self._of[number].cut.get(rung, True)

    def take_stopped(self) -> list[Stop]:
        stopped, self._stopped = self._stopped, []
        return stopped

    @property
    def busy(self) -> bool:
        """Trials still climbing: waiting for a result, a decision, or a job to be taken."""
        return bool(self._jobs) or any(
            any(b.waiting.values()) or self._undecided(b) for b in self.brackets
        )

    def _undecided(self, bracket: _Bracket) -> bool:
        return any(
            rung not in bracket.decided and self._climbing(bracket, rung)
            for rung in bracket.reached
        )

    def _climbing(self, bracket: _Bracket, rung: int) -> list[int]:
        """Members at ``rung`` that could still go up (rankable, not yet at their top)."""
        results = bracket.reached.get(rung, {})
        return [n for n, p in results.items() if p is not None and bracket.tops[n] > rung]

    def _decide(self, bracket: _Bracket) -> None:
        """Decide every rung of ``bracket`` whose members have all reported."""
        if not bracket.full:
            return
        for rung in range(len(self.spec.rungs) - 1):
            if rung in bracket.decided or bracket.waiting.get(rung):
                continue
            if rung > 0 and rung - 1 not in bracket.decided:
                return
            results = bracket.reached.get(rung, {})
            bracket.decided.add(rung)
            points = {n: p for n, p in results.items() if p is not None}
            order = ranked(points)
            quota = math.ceil(len(results) / self.spec.eta)
            unscreened = rung == 0 and self.spec.rungs[0] == 0 and not self.rung0_ranks
            bracket.cut[rung] = not unscreened
            if unscreened:
                quota = len(results)  # the proxy is not trusted: every trial goes up
            chosen = {n for n, _ in order[:quota]}
            climbing = set(self._climbing(bracket, rung))
            promoted = sorted(climbing & chosen)
            for n in promoted:
                bracket.waiting.setdefault(rung + 1, set()).add(n)
                self._jobs.append((n, rung + 1))
            for place, (n, rank) in enumerate(order, start=1):
                if n in climbing - chosen:
                    self._stopped.append(Stop(n, rung, rank, place, len(results), len(chosen)))


__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_RUNGS",
    "FULL",
    "HalvingLadder",
    "HalvingSpec",
    "Stop",
    "contribution",
    "crowding",
    "nondominated_fronts",
    "ranked",
    "spec_problem",
]
