"""What a search tells a tracker, and in which words: the :class:`Tracker` protocol and the
trial states.

A tracker is a plug-in point: any object with these four methods can follow a search
(``run_search(config, tracker=...)``); :class:`autocompress.integrations.mlflow.MlflowTracker`
is the one shipped. The driver calls them in this order, from one thread:

- ``start_search(config)`` once, with the resolved config as a plain dict;
- ``sync(records)`` with every record already in ``trials.jsonl`` (a resumed search), then
  ``log_trial(record)`` after each finished trial, then ``sync(records)`` again at the end;
- ``finish(pareto_numbers, files, models)`` last: the front's trial numbers, the report files,
  and the trial directories of the front's models.

A tracker that also has ``log_polish(record)`` (:class:`PolishTracker`, as the MLflow one) hears
each finished polish (a ``polish.jsonl`` record, ``number`` its trial's) after the polish
stage, before ``finish``; it must log each one once (a resumed search hands them all again).

A record is one ``trials.jsonl`` object (:class:`autocompress.study.records.TrialRecord`, read
through the ``Mapping`` interface); its ``state`` is a :class:`TrialState`. A tracker must not
raise for its own service's failures: a search goes on without tracking.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


class TrialState(StrEnum):
    """How a trial ended; equal to the string ``trials.jsonl`` holds."""

    COMPLETE = "complete"  # measured, every constraint met
    INFEASIBLE = "infeasible"  # measured (or cut short by its structure), a constraint broken
    FAILED = "failed"  # raised, timed out, or a value not finite
    PRUNED = "pruned"  # stopped early by the scheduler (ASHA; halving: ``stopped_at_rung``)


STATES = tuple(TrialState)


@runtime_checkable
class Tracker(Protocol):
    """Follows one search: what the session calls, in the order the module docstring says."""

    def start_search(self, config: Mapping[str, Any]) -> Any:
        """The search starts (or resumes) with this resolved config."""
        ...

    def log_trial(self, record: Mapping[str, Any]) -> Any:
        """One trial finished; called once per trial, in the order trials finish."""
        ...

    def sync(self, records: Sequence[Mapping[str, Any]]) -> Any:
        """Every record so far: log those not logged yet (a resume, an outage)."""
        ...

    def finish(
        self, pareto_numbers: set[int], files: Sequence[Path], models: Mapping[int, Path]
    ) -> Any:
        """The search ended: the front's numbers, the report files, the front's models."""
        ...


@runtime_checkable
class PolishTracker(Protocol):
    """A tracker that also logs the polish stage's results (optional)."""

    def log_polish(self, record: Mapping[str, Any]) -> Any:
        """One polished trial (``polish.jsonl``'s record); called again on a resume."""
        ...


__all__ = ["STATES", "PolishTracker", "Tracker", "TrialState"]
