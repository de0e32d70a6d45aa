"""The polish stage: after the search, the picked candidates re-trained with the full budget.

:func:`polish_stage` runs once the backend's trial loop ended (the ``ray`` backend calls it
still connected to its cluster; ``api.run_search`` then calls it for any backend). It picks
the candidates (``study._polish_plan``), skips those ``polish.jsonl`` already holds (a driver
killed during the polish and resumed redoes none), and hands the rest to the backend's
``polish(session, jobs, may_start)``: ``local`` runs them here one after another, ``ray`` as
Ray tasks in parallel, each with a trial's resources. Each candidate is the trial's policy
with the polish's fine-tuning, re-trained from the teacher with the trial's seed, converted
and measured on its artifact by :func:`autocompress.study._trial.run_trial`, exactly as a
trial (paired teacher timing included), into ``trials/<n>/polish/``.

Each finished polish is appended to ``polish.jsonl`` (search cost: the trial's
``duration_s`` in ``trials.jsonl``; polish cost: the polish record's ``duration_s``), then
``pareto.json`` is rewritten with polished points in place of their search-time versions.

Budget (``budget: 30m``): the search stops asking trials when the polish's reserve is left: its
estimated cost from the finished trials, at most ``POLISH_BUDGET_SHARE`` of the budget; the polish starts a candidate only while time is left (the polishes running
then finish).
"""

from __future__ import annotations

import dataclasses
import socket
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autocompress.integrations.tracker import PolishTracker
from autocompress.measure.metrics import format_value
from autocompress.policy import Policy
from autocompress.study._polish_plan import (
    pick_candidates,
    polish_epochs,
    polish_reserve,
    polish_settings,
    polished_policy,
)
from autocompress.study._progress import SearchProgress
from autocompress.study.backends import get_backend
from autocompress.study.records import TrialState, new_record
from autocompress.study.session import Session


@dataclass(frozen=True)
class PolishJob:
    """One candidate to polish: its trial's number and seed, the polished policy, where."""

    number: int
    policy: Policy
    seed: int
    out_dir: Path
    timeout_s: float | None = None  # the trial timeout scaled by the polish's epochs


# a backend's polish: runs ``jobs`` (starting one only while ``may_start()``), yields each
# finished one with its trial record (``run_trial``'s) and the teacher it was compared with
Execute = Callable[
    [Session, list[PolishJob], Callable[[], bool]],
    Iterator[tuple[PolishJob, Mapping[str, Any], Mapping[str, Any]]],
]


def polish_jobs(session: Session) -> tuple[list[PolishJob], int]:
    """The candidates still to polish, and how many were picked in all."""
    settings = polish_settings(session.config.polish)
    if settings is None or session.failures.aborted is not None:
        return [], 0
    controller = session.controller
    picked = pick_candidates(
        controller.records.values(), session.objectives, controller.teacher, settings
    )
    if settings.epochs is None:  # a search without fine-tuning (post-training) stays one
        picked = [r for r in picked if Policy.from_dict(r["policy"]).finetune.epochs > 0]
    jobs = []
    for record in picked:
        earlier = controller.polishes.get(int(record["number"]))
        if earlier is not None and earlier.get("state") != TrialState.FAILED:
            continue
        policy = Policy.from_dict(record["policy"])
        timeout = session.options.timeout_s
        if timeout is not None:
            timeout *= max(1.0, polish_epochs(policy, settings) / max(1, policy.finetune.epochs))
        jobs.append(
            PolishJob(
                number=int(record["number"]),
                policy=polished_policy(policy, settings),
                seed=int(record.get("seed", session.config.seed + record["number"])),
                out_dir=session.run_dir.polish_dir(int(record["number"])).resolve(),
                timeout_s=timeout,
            )
        )
    return jobs, len(picked)


def polish_stage(session: Session, execute: Execute | None = None) -> None:
    """Polish what is left to polish with the backend's ``execute`` (None: the local
    backend's, here one after another). Called again when all is polished, it does nothing
    but hand the tracker what it may not have logged yet."""
    jobs, picked = polish_jobs(session)
    if jobs and session.budget is not None and session.budget.left() <= 0:
        if not getattr(session, "polish_skip_told", False):  # the stage may be called twice
            session.polish_skip_told = True  # type: ignore[attr-defined]
            print(
                f"polish: the budget is spent; {len(jobs)} of {picked} candidates not polished "
                "(resume with a budget to polish them)",
                file=sys.stderr,
                flush=True,
            )
        jobs = []
    if jobs:
        execute = execute or get_backend("local").load().polish
        budget = session.budget

        def may_start() -> bool:
            return budget is None or budget.left() > 0

        session.stop()  # the search's progress ends here
        session.progress = SearchProgress(
            picked,
            session.objectives.metrics,
            session.objectives.directions,
            done=picked - len(jobs),
            budget=budget,
            stage="polish",
        )
        done = [dict(r) for r in session.controller.polishes.values()]
        try:
            for job, trial, teacher in execute(session, jobs, may_start):  # type: ignore[misc]
                record = _polish_record(session, job, trial, teacher)
                session.controller.add_polish(record)
                session.controller.write_pareto()
                done.append(record)
                search = session.controller.records[job.number]
                before = (search.get("metrics") or {}).get("accuracy")
                note = f"search-time accuracy {format_value('accuracy', before)}"
                session.progress.finished(done, record, note=note)
        finally:
            session.stop()
    if isinstance(session.tracker, PolishTracker):
        for record in session.controller.polishes.values():
            session.tracker.log_polish(record)  # each logged once (the tracker's ledger)


def _polish_record(
    session: Session, job: PolishJob, trial: Mapping[str, Any], teacher: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``polish.jsonl`` record: a trial record of the polished policy, linked to its trial."""
    record = dict(
        new_record(
            job,
            state=trial["state"],
            teacher=teacher,
            trial=trial,
            where={"host": socket.gethostname()},
        )
    )
    search = session.controller.records[job.number]
    record["stage"] = "polish"
    record["artifact"] = str(Path("trials") / str(job.number) / "polish")
    record["search_duration_s"] = search.get("duration_s")  # the search-time trial's cost
    return record


def with_budget_share(session: Session, share: float) -> None:
    """Keep at most ``share`` of the session's budget for the polish (the search stops
    earlier): the session narrows the reserve to the polish's estimated cost as trials finish
    (``_polish_plan.polish_reserve``)."""
    settings = polish_settings(session.config.polish)
    if session.budget is not None and settings is not None:
        cap = share * session.budget.seconds
        session.budget = dataclasses.replace(session.budget, reserve=cap)
        session.reserve = lambda records: polish_reserve(records, settings, cap)


__all__ = ["Execute", "PolishJob", "polish_jobs", "polish_stage", "with_budget_share"]
