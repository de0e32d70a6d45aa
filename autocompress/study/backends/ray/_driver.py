"""The driver's side of Tune: the searcher that asks the session, the stopper, the watch.

Tune pickles each of them into its checkpoints (``search_gen_state-*.json``,
``experiment_state-*.json``, ``tuner.pkl``): each pickles *without* the session it serves
(task, teacher, data loaders, cached teacher outputs), so those files stay a few kB whatever the
model. A resumed search starts Tune afresh and repairs from ``trials.jsonl``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

from ray import tune
from ray.tune.search import ConcurrencyLimiter, Searcher

from autocompress.study._controller import Proposal
from autocompress.study._ladder_run import Job, LadderRun
from autocompress.study.backends._tune_outcome import (
    METRIC,
    TIME_ATTR,
    error_failure,
    error_text,
    finite,
    outcome,
)
from autocompress.study.records import TrialState, new_record
from autocompress.study.samplers import halving_spec
from autocompress.study.session import Session


# -- the searcher: Tune asks, the controller answers ---------------------------------------
class ControllerSearcher(Searcher):
    """A Tune searcher backed by the search's :class:`~autocompress.study._controller.Controller`."""

    def __init__(self, session: Session) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.session = session
        self.live: dict[str, Proposal] = {}
        self.errored: dict[str, Proposal] = {}
        self.epochs: dict[str, list[dict[str, Any]]] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.started: dict[str, float] = {}
        self.kept: dict[str, dict[str, Any]] = {}  # big result values, kept out of Tune's state
        spec = halving_spec(session.config.scheduler)
        self.ladder = LadderRun(session, spec) if spec is not None else None
        self.jobs: dict[str, Job] = {}  # the ladder's job each Tune trial runs

    def set_search_properties(self, metric, mode, config, **spec) -> bool:  # noqa: ANN001
        return True  # the controller owns the space

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles the searcher into its checkpoints: without the session (task, teacher,
        data), and without the live tables, which only the driver that runs them can use."""
        state = dict(self.__dict__)
        state.update(session=None, live={}, errored={}, epochs={}, last={}, started={}, kept={})
        state.update(ladder=None, jobs={})
        return state

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study and trials.jsonl in the run directory are the state."""

    def restore(self, checkpoint_path: str) -> None:
        """A resumed search starts Tune afresh; the controller repairs from trials.jsonl."""

    def _budget_used(self) -> int:
        return self.session.controller.n_finished + len(self.live) + len(self.errored)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.ladder is not None:
            return self._suggest_job(trial_id)
        session = self.session
        spent = session.budget is not None and session.budget.spent and self._budget_used() > 0
        if session.failures.aborted or spent or self._budget_used() >= session.config.trials:
            return Searcher.FINISHED
        proposal = self.session.ask()
        self.live[trial_id] = proposal
        self.epochs[trial_id] = []
        self.started[trial_id] = time.perf_counter()
        return {
            "number": proposal.number,
            "policy": proposal.policy.to_dict(),
            "seed": proposal.seed,
            "out_dir": str(self.session.run_dir.trial_dir(proposal.number).resolve()),
            # a start's final accuracy steers the bisection: ASHA judges proposals only
            "full": proposal.start is not None,
        }

    def _suggest_job(self, trial_id: str) -> dict[str, Any] | str | None:
        """The ladder's next job; None (ask again later) while it waits for results."""
        assert self.ladder is not None
        job = self.ladder.next_job()
        if job is None:
            return Searcher.FINISHED if self.ladder.finished else None
        self.live[trial_id] = job.proposal
        self.jobs[trial_id] = job
        self.epochs[trial_id] = []
        self.started[trial_id] = time.perf_counter()
        number = job.proposal.number
        return {
            "number": number,
            "policy": job.policy.to_dict(),
            "seed": job.proposal.seed,
            "out_dir": str(self.session.run_dir.trial_dir(number).resolve()),
            "full": True,  # one result per job: the ladder ranks the rung's record
            "rung": job.rung,
            "final": job.final,
        }

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self.last[trial_id] = result
        epochs = self.epochs.setdefault(trial_id, [])
        if "record" not in result and TIME_ATTR in result:
            if not epochs or epochs[-1]["epoch"] != result[TIME_ATTR]:
                epochs.append({"epoch": result[TIME_ATTR], "accuracy": finite(result.get(METRIC))})

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        proposal = self.live.pop(trial_id, None)
        if proposal is None:
            return
        if error:
            # the error text comes with the callback that Tune calls right after this
            self.errored[trial_id] = proposal
            return
        result = {**(result or self.last.get(trial_id) or {}), **self.kept.pop(trial_id, {})}
        self.on_trial_result(trial_id, result)  # Tune skips it for the result a scheduler stops
        end = outcome(result, timeout_s=self.session.options.timeout_s)
        record = self._new_record(
            trial_id, proposal, end.state, result, trial=end.trial, error=end.error
        )
        if end.failure is not None:
            record["failure"] = end.failure
        self._record(trial_id, proposal, record)

    def on_error(self, trial_id: str, message: str) -> None:
        proposal = self.errored.pop(trial_id, None)
        if proposal is None:
            return
        result = {**(self.last.get(trial_id) or {}), **self.kept.pop(trial_id, {})}
        record = self._new_record(trial_id, proposal, TrialState.FAILED, result, error=message)
        record["failure"] = error_failure(message)
        self._record(trial_id, proposal, record)

    def flush_errors(self) -> None:
        """Errored trials whose message never came: record them anyway."""
        for trial_id in list(self.errored):
            self.on_error(trial_id, "the trial's worker failed (no error message from Ray)")

    def flush_live(self) -> None:
        """Proposals Tune never finished nor reported (the search ended around them)."""
        for trial_id in list(self.live):
            self.errored[trial_id] = self.live.pop(trial_id)
            self.on_error(trial_id, "Ray Tune ended the search before the trial reported")

    def _new_record(
        self,
        trial_id: str,
        proposal: Proposal,
        state: str,
        result: Mapping[str, Any],
        *,
        trial: Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> dict[str, Any]:
        """The session's record; the teacher is the worker's when it reported one."""
        teacher = json.loads(result["teacher"]) if result.get("teacher") else None
        return new_record(
            proposal,
            state=state,
            teacher=teacher or self.session.teacher,
            trial=trial,
            error=error,
            epochs=self.epochs.get(trial_id, []),
            duration_s=round(time.perf_counter() - self.started[trial_id], 3),
            where={key: result.get(key) for key in ("node", "node_ip", "host")},
        )

    def _record(self, trial_id: str, proposal: Proposal, record: dict[str, Any]) -> None:
        for table in (self.epochs, self.last, self.started, self.kept):
            table.pop(trial_id, None)
        job = self.jobs.pop(trial_id, None)
        if job is not None and self.ladder is not None:
            self.ladder.done(job, record)  # type: ignore[arg-type]
            return
        self.session.complete(proposal, record)


def _trial_error(trial: Any) -> str:
    exc = None
    with contextlib.suppress(Exception):
        exc = trial.get_pickled_error()
    if exc is None:
        with contextlib.suppress(Exception):
            exc = trial.get_error()
    return error_text(exc)


class _TuneSays(logging.Handler):
    """Tune's own log lines naming a trial (``Could not re-use actor for trial trial_7: ...``),
    kept per trial name while the search runs."""

    LOGGER = "ray.tune.execution.tune_controller"

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: dict[str, str] = {}
        logging.getLogger(self.LOGGER).addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            text = record.getMessage().splitlines()[0]
            match = re.search(r"\btrial (\S+?):", text)
            if match:
                self.lines[match.group(1)] = text

    def about(self, trial_name: str) -> str | None:
        return self.lines.get(trial_name)

    def close(self) -> None:
        logging.getLogger(self.LOGGER).removeHandler(self)
        super().close()


BIG_RESULT_KEYS = ("record", "teacher")


class TrialWatch(tune.Callback):
    """Hands the error text of a failed trial (exception or dead worker) to the searcher, and
    records the trials Tune ended without telling the searcher (a failed actor reuse: Tune
    marks the trial ERROR and never calls ``on_trial_complete`` nor ``on_trial_error``)."""

    def __init__(self, searcher: ControllerSearcher, limiter: ConcurrencyLimiter) -> None:
        self.searcher = searcher
        self.limiter = limiter
        self.said = _TuneSays()  # Tune logs why it drops a trial; it writes no error file

    def __getstate__(self) -> dict[str, Any]:
        # driver-side only: see ControllerSearcher
        return {"searcher": None, "limiter": None, "said": None}

    def close(self) -> None:
        if self.said is not None:
            self.said.close()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.searcher.on_error(trial.trial_id, _trial_error(trial))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        """The whole record and the worker's teacher go to the searcher, not into the result
        Tune keeps as the trial's ``last_result`` (written into every experiment checkpoint,
        and grown with the model's layer count); Tune lets callbacks edit results in place."""
        kept = {k: result.pop(k) for k in BIG_RESULT_KEYS if k in result}
        if kept and self.searcher is not None:
            self.searcher.kept.setdefault(trial.trial_id, {}).update(kept)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.record_lost(trials, ended=("ERROR",))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.record_lost(trials, ended=("ERROR", "TERMINATED"))

    def record_lost(self, trials: list, *, ended: tuple[str, ...]) -> int:
        """Trials in ``ended`` states that the searcher still holds as running: each becomes a
        ``failed`` record with Tune's reason; the concurrency slot they held is given back."""
        lost = 0
        for trial in trials:
            if trial.status not in ended or trial.trial_id not in self.searcher.live:
                continue
            reason = self.said.about(str(trial)) if self.said is not None else None
            if reason is None:
                error = _trial_error(trial)
                reason = error if error != error_text(None) else "Tune reported no reason"
            self.limiter.on_trial_complete(trial.trial_id, error=True)  # -> searcher.errored
            self.searcher.on_error(
                trial.trial_id,
                f"Ray Tune ended the trial ({trial.status}) without running it to the end: "
                f"{reason}",
            )
            lost += 1
        return lost


class TrialStopper(tune.stopper.Stopper):
    """Backstop for ``trial_timeout_s`` (workers check it themselves) and fail-fast."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __getstate__(self) -> dict[str, Any]:
        return {"session": None}  # Tune checkpoints the stopper: not the session it reads

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        if self.session is None:
            return False
        limit = self.session.options.timeout_s
        return limit is not None and result.get("time_total_s", 0) > limit

    def stop_all(self) -> bool:
        return self.session is not None and self.session.failures.aborted is not None
