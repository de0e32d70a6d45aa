"""The ``ray`` backend: Ray Tune decides where trials run; the session asks, tells and records.

Tune sees a :class:`ControllerSearcher`: ``suggest`` is the session's ask, ``on_trial_complete``
turns Tune's last result into a record (:func:`autocompress.session.new_record`) and hands it
to the session (tell, ``trials.jsonl``, ``pareto.json``, MLflow, report). Trial processes only
write their own trial folder.

Each worker process times the teacher once (:func:`autocompress.session.process_teacher`) and
every record carries it: a trial's latency is compared as a ratio to its own node's teacher.
Ray's console output (configuration box, TensorBoard hint) is hidden unless ``verbose``.

The task (teacher, data) and the teacher's outputs on every training batch are put in the
object store once per search (``tune.with_parameters``); each trial runs with one CPU and one
intra-op thread. ASHA stops weak trials after their first epochs; those become ``pruned``
records, never on the Pareto front. Baselines and the measured start are never stopped.

Paths: trial folders are the run directory's absolute paths, so the workers must see the
driver's filesystem (true for a local cluster; on a remote cluster mount the run directory at
the same path on every node, or keep ``keep_models`` artifacts elsewhere). Ray's temp folder is
``<run_dir>/ray/tmp`` when that path is short enough for Ray's AF_UNIX sockets, else
``/tmp/ac-ray-<hash of run dir>``; Tune's storage is ``<run_dir>/ray``.

Example::

    config = SearchConfig(name="demo", task="task.py:build", backend="ray", trials=16)
    run_search(config)  # starts a local cluster; or set ``address`` / RAY_ADDRESS
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher

from ..controller import Proposal
from ..distill import TeacherCache
from ..gate import trial_gate
from ..policy import Policy
from ..session import Session, new_record, process_teacher
from ..trial import run_trial
from ._ray_env import environ, quiet, ray_log_level, ray_temp_dir, task_modules, worker_pythonpath
from ._tune_outcome import (
    METRIC,
    TIME_ATTR,
    error_failure,
    error_text,
    finite,
    outcome,
    report_value,
)

if TYPE_CHECKING:
    from ..objectives import ObjectiveSet
    from ..task import Task


# -- the searcher: Tune asks, the controller answers ---------------------------------------
class ControllerSearcher(Searcher):
    """A Tune searcher backed by the search's :class:`~autocompress.controller.Controller`."""

    def __init__(self, session: Session) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.session = session
        self.live: dict[str, Proposal] = {}
        self.errored: dict[str, Proposal] = {}
        self.epochs: dict[str, list[dict[str, Any]]] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.started: dict[str, float] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:  # noqa: ANN001
        return True  # the controller owns the space

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study and trials.jsonl in the run directory are the state."""

    def restore(self, checkpoint_path: str) -> None:
        """A resumed search starts Tune afresh; the controller repairs from trials.jsonl."""

    def _budget_used(self) -> int:
        return self.session.controller.n_finished + len(self.live) + len(self.errored)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.session.failures.aborted or self._budget_used() >= self.session.config.trials:
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
            "full": proposal.baseline is not None,
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
        result = result or self.last.get(trial_id) or {}
        self.on_trial_result(trial_id, result)  # Tune skips it for the result a scheduler stops
        end = outcome(result, timeout_s=self.session.config.trial_timeout_s)
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
        result = self.last.get(trial_id) or {}
        record = self._new_record(trial_id, proposal, "failed", result, error=message)
        record["failure"] = error_failure(message)
        self._record(trial_id, proposal, record)

    def flush_errors(self) -> None:
        """Errored trials whose message never came: record them anyway."""
        for trial_id in list(self.errored):
            self.on_error(trial_id, "the trial's worker failed (no error message from Ray)")

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
            teacher=teacher or self.session.baseline,
            trial=trial,
            error=error,
            epochs=self.epochs.get(trial_id, []),
            duration_s=round(time.perf_counter() - self.started[trial_id], 3),
            where={key: result.get(key) for key in ("node", "node_ip", "host")},
        )

    def _record(self, trial_id: str, proposal: Proposal, record: dict[str, Any]) -> None:
        for table in (self.epochs, self.last, self.started):
            table.pop(trial_id, None)
        self.session.complete(proposal, record)


class _ErrorCallback(tune.Callback):
    """Hands the error text of a failed trial (exception or dead worker) to the searcher."""

    def __init__(self, searcher: ControllerSearcher) -> None:
        self.searcher = searcher

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        exc = None
        with contextlib.suppress(Exception):
            exc = trial.get_pickled_error()
        if exc is None:
            with contextlib.suppress(Exception):
                exc = trial.get_error()
        self.searcher.on_error(trial.trial_id, error_text(exc))


class _Stopper(tune.stopper.Stopper):
    """Backstop for ``trial_timeout_s`` (workers check it themselves) and fail-fast."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        limit = self.session.config.trial_timeout_s
        return limit is not None and result.get("time_total_s", 0) > limit

    def stop_all(self) -> bool:
        return self.session.failures.aborted is not None


# -- the trainable: one trial in a worker process --------------------------------------------
def _where() -> dict[str, Any]:
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "host": socket.gethostname(),
    }


def trainable(
    config: dict[str, Any],
    *,
    task: Task,
    teacher: tuple[list, list, list],
    objectives: ObjectiveSet,
    baseline: dict[str, Any],
    target: str,
    importance: str,
    exclusive_timing: bool,
    timeout_s: float | None = None,
    target_options: dict[str, Any] | None = None,
) -> None:
    """Run one trial; report per epoch (for ASHA) and once at the end with the whole record."""
    import torch

    torch.set_num_threads(1)
    where = _where()
    cache = TeacherCache(task)
    cache.load_state(teacher)
    policy = Policy.from_dict(config["policy"])
    epochs = policy.finetune.epochs

    with trial_gate(exclusive_timing) as gate:
        teacher = process_teacher(
            task,
            target=target,
            objectives=objectives,
            run=baseline,
            gate=gate,
            target_options=target_options,
        )
        where["teacher"] = json.dumps(teacher, default=str)

        def on_epoch(epoch: int, value: float) -> None:
            # the last epoch is reported with the record: ASHA stops a trial at max_t at once
            if epoch < epochs and not config.get("full"):
                with gate.released():  # the driver may be slow to take it: don't hold others
                    tune.report({METRIC: report_value(value), TIME_ATTR: epoch, **where})

        record = run_trial(
            task,
            policy,
            number=config["number"],
            objectives=objectives,
            baseline=teacher,
            out_dir=Path(config["out_dir"]),
            target=target,
            importance=importance,
            seed=config["seed"],
            teacher_cache=cache,
            on_epoch=on_epoch,
            gate=gate,
            timeout_s=timeout_s,
            target_options=target_options,
        )
    record.update({k: v for k, v in where.items() if k != "teacher"})
    value = record["metrics"].get(METRIC)
    if value is None and record["epochs"]:
        value = record["epochs"][-1]["accuracy"]
    tune.report(
        {
            METRIC: report_value(value),
            TIME_ATTR: len(record["epochs"]),
            "record": json.dumps(record, default=str),
            "done": True,
            **where,
        }
    )


# -- the driver ------------------------------------------------------------------------------
def teacher_outputs(task: Task) -> tuple[list, list, list]:
    """The teacher's outputs and tapped features for every training batch, computed once."""
    return TeacherCache(task).fill().state()


@contextlib.contextmanager
def connect(session: Session) -> Iterator[str]:
    """Connect to ``address`` / RAY_ADDRESS, or start a local cluster; always disconnect.

    Workers get the driver's import path: through a runtime env on a cluster, by inheritance
    (cheaper: no dedicated worker processes) on a local cluster this driver starts.
    """
    if ray.is_initialized():
        yield "existing"
        return
    address = session.config.address or os.environ.get("RAY_ADDRESS")
    pythonpath = worker_pythonpath()
    if address:
        ray.init(
            address=address,
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            log_to_driver=False,
            logging_level=ray_log_level(session.verbose),
        )
    else:
        temp_dir = ray_temp_dir(session.run_dir.path)
        temp_dir.mkdir(parents=True, exist_ok=True)
        with environ(PYTHONPATH=pythonpath):
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                _temp_dir=str(temp_dir),
                log_to_driver=False,
                logging_level=ray_log_level(session.verbose),
            )
    try:
        yield address or "local"
    finally:
        ray.shutdown()


def make_scheduler(session: Session) -> ASHAScheduler | FIFOScheduler:
    """ASHA on the per-epoch accuracy for ``scheduler: asha`` (or ``auto`` with >= 2 epochs)."""
    epochs = session.max_epochs()
    kind = session.config.scheduler
    if kind == "none" or (kind == "auto" and epochs < 2):
        return FIFOScheduler()
    # reduction factor 2: stop below the median at a rung (4 would keep only the top quarter,
    # too harsh for searches of a few dozen trials)
    return ASHAScheduler(
        metric=METRIC,
        mode="max",
        time_attr=TIME_ATTR,
        max_t=max(epochs, 1),
        grace_period=1,
        reduction_factor=2,
    )


def run(session: Session, *, exclusive_timing: bool = True) -> None:
    """Run the search's remaining trials on Ray Tune until ``config.trials`` are recorded.

    ``exclusive_timing``: a trial times its artifact while the other trials on its machine wait
    at a batch boundary (``autocompress.gate``); without it, a neighbour's training skewed
    digits latencies by +50 % here (``benchmarks/latency_under_load.py``).
    """
    remaining = session.remaining
    if remaining <= 0:
        return
    task = session.task
    session.start()
    try:
        with connect(session), quiet(not session.verbose):
            for module in task_modules(task):  # loaded by path: ship their code
                with contextlib.suppress(ValueError):
                    ray.cloudpickle.register_pickle_by_value(module)
            cpus = int(ray.cluster_resources().get("CPU", 1))
            concurrent = session.config.max_concurrent or max(cpus, 1)
            searcher = ControllerSearcher(session)
            run = tune.with_parameters(
                trainable,
                task=task,
                teacher=teacher_outputs(task),
                objectives=session.objectives,
                baseline=session.baseline,
                target=session.config.target,
                importance=session.config.importance,
                exclusive_timing=exclusive_timing,
                timeout_s=session.config.trial_timeout_s,
                target_options=session.config.target_options,
            )
            storage = (session.run_dir.path / "ray").resolve()
            tuner = tune.Tuner(
                tune.with_resources(run, {"cpu": 1}),
                tune_config=tune.TuneConfig(
                    search_alg=ConcurrencyLimiter(searcher, max_concurrent=concurrent),
                    scheduler=make_scheduler(session),
                    num_samples=remaining,
                    reuse_actors=True,
                    trial_name_creator=lambda t: f"trial_{t.config['number']}",
                    trial_dirname_creator=lambda t: f"trial_{t.config['number']}",
                ),
                run_config=tune.RunConfig(
                    name=time.strftime("search-%Y%m%d-%H%M%S"),
                    storage_path=str(storage),
                    verbose=0,
                    callbacks=[_ErrorCallback(searcher)],
                    stop=_Stopper(session),
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                ),
            )
            tuner.fit()
            searcher.flush_errors()
    finally:
        session.stop()
