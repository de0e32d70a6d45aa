"""The ``local`` backend: trials in this process, one after another."""

from __future__ import annotations

import socket

from autocompress.measure.gate import NoGate
from autocompress.study._trial import run_trial
from autocompress.study.records import new_record
from autocompress.study.session import Session, process_teacher
from autocompress.techniques.distill import TeacherCache


def run(session: Session) -> None:
    """Run trials here until the session's budget is recorded."""
    teacher = process_teacher(
        session.task,
        target=session.config.target,
        objectives=session.objectives,
        run=session.teacher,
        gate=NoGate(),
        target_options=session.config.target_options,
    )
    training = session.config.training()  # one line when the device is not here
    progress = session.start()
    cache = TeacherCache(session.task)
    try:
        while session.remaining > 0:
            proposal = session.ask()
            outcome = run_trial(
                session.task,
                proposal.policy,
                number=proposal.number,
                objectives=session.objectives,
                baseline=teacher,
                out_dir=session.run_dir.trial_dir(proposal.number),
                target=session.config.target,
                importance=session.config.importance,
                seed=proposal.seed,
                teacher_cache=cache,
                on_stage=lambda s, n=proposal.number: progress.stage(n, s),
                timeout_s=session.config.trial_timeout_s,
                target_options=session.config.target_options,
                training=training,
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
