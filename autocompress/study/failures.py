"""Failing trials: what kind of failure a record is, a per-trial time limit, and fail-fast.

A failed trial never stops a search, but a search whose first trials all fail is almost
always a broken task or space: :class:`FailureMonitor` stops it after ``fail_fast_after``
such trials with one line naming the distinct errors, instead of burning the budget.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from autocompress.errors import AutoCompressError
from autocompress.measure.gate import Gate
from autocompress.study.records import TrialState

# failure kinds, from the exception a trial ended with (by class name: no imports needed)
KINDS: dict[str, str] = {
    "DivergedError": "diverged",
    "TrialTimeout": "timeout",
    "MemoryError": "out-of-memory",
}


class TrialTimeout(Exception):
    """A trial ran longer than ``trial_timeout_s``."""


class SearchAborted(AutoCompressError):
    """The first trials of a search all failed; the message lists their distinct errors."""


def failure_kind(exc: BaseException) -> str:
    return KINDS.get(type(exc).__name__, "exception")


class Deadline:
    """Raises :class:`TrialTimeout` at a step, stage or epoch boundary past ``limit_s``."""

    def __init__(self, limit_s: float | None) -> None:
        self.limit_s = limit_s
        self.start = time.monotonic()

    def check(self, where: str = "") -> None:
        if self.limit_s is None:
            return
        elapsed = time.monotonic() - self.start
        if elapsed > self.limit_s:
            at = f" at {where}" if where else ""
            raise TrialTimeout(
                f"the trial ran {elapsed:.1f} s, over trial_timeout_s={self.limit_s:g}{at}"
            )


class DeadlineGate:
    """A :class:`~autocompress.measure.gate.Gate` that also checks a deadline at every training step."""

    def __init__(self, inner: Gate, deadline: Deadline) -> None:
        self.inner = inner
        self.deadline = deadline

    def step(self) -> None:
        self.deadline.check("a training step")
        self.inner.step()

    def exclusive(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.exclusive()

    def released(self) -> contextlib.AbstractContextManager[None]:
        return self.inner.released()


class FailureMonitor:
    """Counts failed records; aborts when the first ``fail_fast_after`` ones all failed.

    Only trials run by this driver count, so a resumed search whose old trials failed gets
    a fresh chance once the task is fixed. ``fail_fast_after=0`` never aborts.
    """

    def __init__(self, *, fail_fast_after: int = 5) -> None:
        self.fail_fast_after = fail_fast_after
        self.seen = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.aborted: str | None = None

    def observe(self, record: Mapping[str, Any]) -> None:
        self.seen += 1
        if record.get("state") != TrialState.FAILED:
            return
        self.failed += 1
        self.errors[_first_line(record.get("error"))] += 1
        k = self.fail_fast_after
        if k and self.aborted is None and self.failed == self.seen == k:
            self.aborted = self._summary()

    def _summary(self) -> str:
        distinct = "; ".join(f"{n}x {err}" for err, n in self.errors.most_common(3))
        more = len(self.errors) - 3
        tail = f"; and {more} other error(s)" if more > 0 else ""
        return (
            f"search stopped: the first {self.failed} trials all failed ({distinct}{tail}); "
            "fix the task or space, or raise fail_fast_after (0 never stops)"
        )

    def raise_if_aborted(self) -> None:
        if self.aborted is not None:
            raise SearchAborted(self.aborted)


def _first_line(error: Any) -> str:
    lines = [ln for ln in str(error or "unknown error").splitlines() if ln.strip()]
    return (lines[0] if lines else "unknown error")[:200]


def no_feasible_trial(records: list[Mapping[str, Any]]) -> str | None:
    """When no trial completed: one line saying which constraints the trials broke, else None."""
    if not records or any(r.get("state") == TrialState.COMPLETE for r in records):
        return None
    broken: Counter[str] = Counter()
    for r in records:
        if r.get("state") == TrialState.INFEASIBLE:
            for part in str(r.get("error") or "").split("; "):
                broken[part.split(" broken")[0].split(":")[0].strip()] += 1
    states = Counter(r.get("state") for r in records)
    if not broken:
        return f"no trial completed ({dict(states)}); see the errors in trials.jsonl"
    which = ", ".join(f"{c} (broken by {n})" for c, n in broken.most_common())
    return (
        f"no trial met the constraints: {which}, of {len(records)} trials; "
        "relax them in the objectives file or widen the search space"
    )
