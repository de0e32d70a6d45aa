"""The fault-injection suite's tally: what was tried on purpose and how it ended.

Tests marked ``faults`` add to it; ``tests/conftest.py`` prints the summary line at the end
of the session (``pytest -m faults`` runs the suite alone).
"""

from __future__ import annotations

from collections import Counter

TALLY: Counter[str] = Counter()


def bad_input(*, clean: bool) -> None:
    TALLY["bad_inputs"] += 1
    TALLY["bad_inputs_clean"] += int(clean)


def failing_search(*, failed_trials: int, completed: bool) -> None:
    TALLY["failed_trials"] += failed_trials
    TALLY["failing_searches"] += 1
    TALLY["failing_searches_completed"] += int(completed)


def fail_fast_stop(*, failed_trials: int) -> None:
    """A search stopped on purpose because its first trials all failed."""
    TALLY["failed_trials"] += failed_trials
    TALLY["fail_fast_stops"] += 1


def kills(backend: str, *, count: int, lost: int, duplicated: int, resumed: bool) -> None:
    TALLY[f"kills_{backend}"] += count
    TALLY["lost"] += lost
    TALLY["duplicated"] += duplicated
    TALLY["kill_runs"] += 1
    TALLY["kill_runs_resumed"] += int(resumed)


def summary_line() -> str | None:
    t = TALLY
    if not t:
        return None
    return (
        f"fault injection: bad inputs {t['bad_inputs_clean']}/{t['bad_inputs']} answered cleanly"
        f" | trials failed on purpose {t['failed_trials']}, searches completed anyway "
        f"{t['failing_searches_completed']}/{t['failing_searches']}, stopped by fail-fast "
        f"{t['fail_fast_stops']}"
        f" | driver SIGKILLs local {t['kills_local']}, ray {t['kills_ray']}, resumed to the end "
        f"{t['kill_runs_resumed']}/{t['kill_runs']}: trials lost {t['lost']}, duplicated "
        f"{t['duplicated']} (trials.jsonl, study.db, MLflow)"
    )
