"""The ``local`` backend: trials in this process, one after another."""

from __future__ import annotations

import socket

from autocompress.measure.gate import NoGate
from autocompress.pipeline.hooks import TrialHooks
from autocompress.study._trial import run_trial
from autocompress.study.records import new_record
from autocompress.study.session import Session, process_teacher
from autocompress.techniques.distill import TeacherCache


def run(session: Session) -> None:
    """Run trials here until the session's budget is recorded."""
    options = session.options.check()  # one line when the device is not here
    teacher = process_teacher(session.task, options, run=session.teacher, gate=NoGate())
    progress = session.start()
    cache = TeacherCache(session.task)
    try:
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
