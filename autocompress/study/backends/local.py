"""The ``local`` backend: trials in this process, one after another (with ``scheduler:
halving``, the ladder's jobs one after another: ``autocompress.study._ladder_run``); so are
the polishes."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from autocompress.measure.gate import NoGate
from autocompress.pipeline.hooks import TrialHooks
from autocompress.pipeline.options import CompressOptions
from autocompress.study._ladder_run import LadderRun
from autocompress.study._rungs import run_rung
from autocompress.study._trial import run_trial
from autocompress.study.records import new_record
from autocompress.study.samplers import halving_spec
from autocompress.study.session import Session, process_teacher
from autocompress.techniques.distill import TeacherCache

if TYPE_CHECKING:
    from autocompress.study.polish import PolishJob


def run(session: Session) -> None:
    """Run trials here until the session's budget is recorded."""
    options = session.options.check()  # one line when the device is not here
    teacher = process_teacher(session.task, options, run=session.teacher, gate=NoGate())
    progress = session.start()
    cache = TeacherCache(session.task)
    spec = halving_spec(session.config.scheduler)
    try:
        if spec is not None:
            _run_ladder(LadderRun(session, spec), options, teacher, cache)
            return
        while session.remaining > 0:
            proposal = session.ask()
            outcome = run_trial(
                session.task,
                proposal.policy,
                options.replace(seed=proposal.seed),
                TrialHooks(on_stage=lambda s, n=proposal.number: progress.stage(n, s)),
                number=proposal.number,
                objectives=session.objectives,
                teacher=teacher,
                out_dir=session.run_dir.trial_dir(proposal.number),
                teacher_cache=cache,
            )
            record = new_record(
                proposal,
                state=outcome["state"],
                teacher=teacher,
                trial=outcome,
                where={"host": socket.gethostname()},
            )
            session.complete(proposal, record)
    finally:
        session.stop()


def polish(
    session: Session, jobs: list[PolishJob], may_start: Callable[[], bool]
) -> Iterator[tuple[PolishJob, Mapping[str, Any], Mapping[str, Any]]]:
    """The polish stage's candidates here, one after another (``study.polish``)."""
    options = session.options.check()
    teacher = process_teacher(session.task, options, run=session.teacher, gate=NoGate())
    cache = TeacherCache(session.task)
    progress = session.progress
    for job in jobs:
        if not may_start():
            return
        outcome = run_trial(
            session.task,
            job.policy,
            options.replace(seed=job.seed, timeout_s=job.timeout_s),
            TrialHooks(on_stage=lambda s, n=job.number: progress.stage(n, s) if progress else None),
            number=job.number,
            objectives=session.objectives,
            teacher=teacher,
            out_dir=job.out_dir,
            teacher_cache=cache,
        )
        yield job, outcome, teacher


def _run_ladder(
    ladder: LadderRun, options: CompressOptions, teacher: dict[str, Any], cache: TeacherCache
) -> None:
    """The ladder's jobs, one after another, until it has none."""
    session, progress = ladder.session, ladder.session.progress
    while (job := ladder.next_job()) is not None:
        number = job.proposal.number
        rung = f"rung {job.rung} ({job.policy.finetune.epochs} ep)"
        outcome = run_rung(
            session.task,
            job.policy,
            options.replace(seed=job.proposal.seed),
            TrialHooks(on_stage=lambda s, n=number, r=rung: progress.stage(n, f"{r}: {s}")),
            rung=job.rung,
            final=job.final,
            number=number,
            objectives=session.objectives,
            teacher=teacher,
            out_dir=session.run_dir.trial_dir(number),
            teacher_cache=cache,
        )
        record = new_record(
            job.proposal,
            state=outcome["state"],
            teacher=teacher,
            trial=outcome,
            where={"host": socket.gethostname()},
        )
        ladder.done(job, record)
