"""Progress of a search: trial i/N, states so far, best per objective, elapsed and ETA.

The stage leads each line: ``trial i/N`` while searching, ``polish i/K`` in the polish stage
(``study.polish``), where each line also gives the candidate's search-time accuracy.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from autocompress.measure.directions import Direction
from autocompress.measure.metrics import format_value
from autocompress.study.budget import MAX_TRIALS, Budget, format_seconds
from autocompress.study.records import STATES, TrialState


def summarize(
    records: Iterable[Mapping[str, Any]], metrics: Sequence[str], directions: Sequence[str]
) -> tuple[Counter, dict[str, float]]:
    states: Counter = Counter()
    best: dict[str, float] = {}
    for r in records:
        states[r["state"]] += 1
        if r["state"] != TrialState.COMPLETE:
            continue
        for m, d in zip(metrics, directions, strict=True):
            v = float(r["metrics"][m])
            if m not in best or (v > best[m] if d == Direction.MAXIMIZE else v < best[m]):
                best[m] = v
    return states, best


class SearchProgress:
    """A rich progress bar on a terminal; one line per finished trial otherwise."""

    def __init__(
        self,
        total: int,
        metrics: Sequence[str],
        directions: Sequence[str],
        *,
        done: int = 0,
        budget: Budget | None = None,
        stage: str = "search",
    ) -> None:
        self.total = total
        self.noun = "trial" if stage == "search" else stage
        self.budget = budget
        self.bounded = total < MAX_TRIALS  # else only the budget bounds the search
        self.metrics = list(metrics)
        self.directions = list(directions)
        self.start = time.monotonic()
        self.done_at_start = done
        self._bar = None
        if sys.stderr.isatty():
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(
                TextColumn(
                    f"[bold]{self.noun} {{task.completed}}/{{task.total}}"
                    if self.bounded
                    else f"[bold]{self.noun} {{task.completed}} (budget)"
                ),
                BarColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                transient=False,
            )
            self._task = self._bar.add_task(
                "", total=total if self.bounded else None, completed=done
            )
            self._bar.start()

    def stage(self, number: int, stage: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=f"trial #{number}: {stage}")

    def finished(
        self, records: Sequence[Mapping[str, Any]], record: Mapping[str, Any], *, note: str = ""
    ) -> str:
        states, best = summarize(records, self.metrics, self.directions)
        n = len(records)
        elapsed = time.monotonic() - self.start
        ran = n - self.done_at_start
        eta = elapsed / ran * (self.total - n) if ran > 0 else float("nan")
        timing = f" | elapsed {elapsed:.0f}s" + (f" eta {eta:.0f}s" if self.bounded else "")
        if self.budget is not None:
            timing += f" | budget left {format_seconds(self.budget.left())}"
        line = (
            f"{self.noun} {n}{f'/{self.total}' if self.bounded else ''} #{record['number']} "
            f"{record['state']}"
            + (f" ({record['error']})" if record.get("error") else "")
            + (f" | {note}" if note else "")
            + _targets_note(record)
            + _rungs_note(record)
            + " | "
            + " ".join(f"{s}={states[s]}" for s in STATES)
            + " | best "
            + ", ".join(f"{m} {format_value(m, v)}" for m, v in best.items())
            + timing
        )
        if self._bar is not None:
            self._bar.update(self._task, completed=n)
            self._bar.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)
        return line

    def note(self, line: str) -> None:
        """One line between the trial lines (e.g. a decision of the search)."""
        if self._bar is not None:
            self._bar.console.print(line)
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _rungs_note(record: Mapping[str, Any]) -> str:
    """Successive halving: the accuracy that ranked the trial at each rung it reached."""
    entries = record.get("rungs") or []
    if len(entries) < 2:
        return ""
    steps = [f"{e.get('epochs')} ep {format_value('accuracy', e.get('accuracy'))}" for e in entries]
    return f" | rungs {' -> '.join(steps)}"


def _targets_note(record: Mapping[str, Any]) -> str:
    """A several-target search: each other target's latency, or its error, by name."""
    entries = ((record.get("metrics") or {}).get("targets") or {}).items()
    parts = [
        f"{name} failed: {e['error']}"
        if "error" in e
        else f"{name} {format_value('latency_ms', e.get('latency_ms'))}"
        for name, e in entries
        if name != (record.get("metrics") or {}).get("target")
    ]
    return f" | also {'; '.join(parts)}" if parts else ""
