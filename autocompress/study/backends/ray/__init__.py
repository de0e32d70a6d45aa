"""The ``ray`` backend: Ray Tune decides where trials run; the session asks, tells and records.

Tune sees a :class:`ControllerSearcher`: ``suggest`` is the session's ask, ``on_trial_complete``
turns Tune's last result into a record (:func:`autocompress.study.records.new_record`) and hands it
to the session (tell, ``trials.jsonl``, ``pareto.json``, MLflow, report). Trial processes only
write their own trial folder.

Each worker process times the teacher once (:func:`autocompress.study.session.process_teacher`) and
every record carries it: a trial's latency is compared as a ratio to its own node's teacher.
Ray's console output (configuration box, TensorBoard hint) is hidden unless ``verbose``.

The task (teacher, data) and the teacher's outputs on every training batch are put in the
object store once per search (``tune.with_parameters``); each trial runs with one CPU and one
intra-op thread. ASHA stops weak trials after their first epochs; those become ``pruned``
records, never on the Pareto front. Baselines and the measured start are never stopped.
With ``scheduler: halving`` Tune runs FIFO and the searcher hands out the session's ladder
jobs (``autocompress.study._ladder_run``): one Tune trial per (trial, rung), named
``trial_<n>_rung<r>``, as many as the ladder asks for.

What Tune checkpoints (``experiment_state-*.json``, ``search_gen_state-*.json``,
``tuner.pkl``) holds no session, task or teacher: the searcher, the stopper and the callback
pickle without the session they serve (a resumed search starts Tune afresh and repairs from
``trials.jsonl``), so those files stay a few kB whatever the model. A trial Tune cannot start,
reuse or finish without telling its searcher (e.g. ``Could not re-use actor``) is recorded as
``failed`` with Tune's reason, its study trial and MLflow run closed.

Devices: each worker resolves ``device`` itself (``auto``: the GPU Ray gave it, if any);
``resources_per_trial`` (default ``{cpu: 1}``) packs trials onto GPUs, e.g. ``{cpu: 1, gpu:
0.25}``. Latency is still timed on the target's CPU runtime, behind the node's timing gate.

Paths: trial folders are the run directory's absolute paths, so the workers must see the
driver's filesystem (true for a local cluster; on a remote cluster mount the run directory at
the same path on every node, or keep ``keep_models`` artifacts elsewhere). Ray's temp folder is
``<run_dir>/ray/tmp`` when that path is short enough for Ray's AF_UNIX sockets, else
``/tmp/ac-ray-<hash of run dir>``, removed when the search ends; Tune's storage is
``<run_dir>/ray``.

Example::

    config = SearchConfig(name="demo", task="task.py:build", backend="ray", trials=16)
    run_search(config)  # starts a local cluster; or set ``address`` / RAY_ADDRESS
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter

from autocompress.errors import ConfigError
from autocompress.measure.gate import trial_gate
from autocompress.pipeline.hooks import TrialHooks
from autocompress.pipeline.options import CompressOptions
from autocompress.policy import Policy
from autocompress.study._rungs import run_rung
from autocompress.study._trial import run_trial
from autocompress.study.backends._ray_env import (
    environ,
    quiet,
    ray_log_level,
    ray_temp_dir,
    task_modules,
    worker_pythonpath,
)
from autocompress.study.backends._tune_outcome import (
    METRIC,
    TIME_ATTR,
    report_value,
)
from autocompress.study.backends.ray._driver import ControllerSearcher, TrialStopper, TrialWatch
from autocompress.study.backends.ray._polish import polish  # the polish stage, as Ray tasks
from autocompress.study.polish import polish_stage
from autocompress.study.samplers import make_ray_scheduler
from autocompress.study.session import Session, process_teacher
from autocompress.techniques.distill import TeacherCache

if TYPE_CHECKING:
    from autocompress.study.objectives import ObjectiveSet
    from autocompress.task import Task


# -- the trainable: one trial in a worker process --------------------------------------------
def _where() -> dict[str, Any]:
    return {
        "node": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "host": socket.gethostname(),
        "gpu_ids": [str(g) for g in ray.get_gpu_ids()],  # the GPUs Ray gave this trial
    }


def trainable(
    config: dict[str, Any],
    *,
    task: Task,
    outputs: tuple[list, list, list],
    objectives: ObjectiveSet,
    teacher: dict[str, Any],
    options: CompressOptions,
    exclusive_timing: bool,
) -> None:
    """Run one trial; report per epoch (for ASHA) and once at the end with the whole record.
    ``options`` arrive unresolved (pickled without their target and device): the device is
    resolved here, on the worker (``auto`` is the GPU Ray assigned, if any)."""
    import torch

    torch.set_num_threads(1)
    where = _where()
    options = options.replace(seed=config["seed"]).check()  # here, on the worker
    cache = TeacherCache(task)
    cache.load_state(outputs)
    policy = Policy.from_dict(config["policy"])
    epochs = policy.finetune.epochs

    with trial_gate(exclusive_timing) as gate:
        teacher = process_teacher(task, options, run=teacher, gate=gate)
        where["teacher"] = json.dumps(teacher, default=str)

        def on_score(epoch: int, value: float) -> None:
            # the last epoch is reported with the record: ASHA stops a trial at max_t at once
            if epoch < epochs and not config.get("full"):
                with gate.released():  # the driver may be slow to take it: don't hold others
                    tune.report({METRIC: report_value(value), TIME_ATTR: epoch, **where})

        if config.get("rung") is None:
            runner = run_trial
        else:  # a job of the session's halving ladder
            runner = functools.partial(run_rung, rung=config["rung"], final=config["final"])
        record = runner(
            task,
            policy,
            options,
            TrialHooks(on_score=on_score, gate=gate),
            number=config["number"],
            objectives=objectives,
            teacher=teacher,
            out_dir=Path(config["out_dir"]),
            teacher_cache=cache,
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
    env = {"PYTHONPATH": worker_pythonpath(), **_worker_env()}
    temp_dir = None
    if address:
        ray.init(
            address=address,
            runtime_env={"env_vars": env},
            log_to_driver=False,
            logging_level=ray_log_level(session.verbose),
        )
    else:
        temp_dir = ray_temp_dir(session.run_dir.path)
        temp_dir.mkdir(parents=True, exist_ok=True)
        with environ(**env):
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
        if temp_dir is not None:  # sockets, logs and Tune's driver artifacts of this cluster
            shutil.rmtree(temp_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                temp_dir.parent.rmdir()  # <run_dir>/ray/tmp's parent when it is left empty


# A reused actor waits this long for the previous trial's thread to end (Tune's default, 2 s,
# is too short under load: the reuse fails and Tune drops the trial). A user's value wins.
THREAD_TIMEOUT_S = "60"


def _worker_env() -> dict[str, str]:
    return {
        "TUNE_FUNCTION_THREAD_TIMEOUT_S": os.environ.get(
            "TUNE_FUNCTION_THREAD_TIMEOUT_S", THREAD_TIMEOUT_S
        )
    }


def trial_resources(session: Session) -> dict[str, float]:
    """``resources_per_trial``, default one CPU, checked in one line against what trials need
    and what the cluster's nodes have (Tune would leave an unplaceable trial pending forever)."""
    from autocompress.device import precision_problem

    config = session.config
    where = f"config {config.name!r}"
    resources = dict(config.resources_per_trial or {"cpu": 1})
    device = config.device
    if device.startswith("cuda") and not resources.get("gpu"):
        raise ConfigError(
            f"{where}: device: {device!r} on backend ray needs a GPU share per trial: set "
            "resources_per_trial: {cpu: 1, gpu: 0.25} (or device: auto)"
        )
    if device.startswith("cuda:") and device != "cuda:0":
        raise ConfigError(
            f"{where}: device: {device!r}: on backend ray each trial sees only the GPU Ray gave "
            "it (as cuda:0); use device: cuda or auto"
        )
    problem = precision_problem(torch.device("cpu"), config.precision) if device == "cpu" else None
    if problem:
        raise ConfigError(f"{where}: finetune.precision: {config.precision!r} {problem}")
    largest: dict[str, float] = {}
    for node in ray.nodes():
        if node.get("Alive"):
            for key, amount in (node.get("Resources") or {}).items():
                largest[key] = max(largest.get(key, 0.0), float(amount))
    for key, amount in resources.items():
        have = largest.get(key.upper() if key in ("cpu", "gpu") else key, 0.0)
        if amount <= have:
            continue
        raise ConfigError(
            f"{where}: resources_per_trial: {key}: {amount} but no node of the cluster has more "
            f"than {have:g}; Tune would wait for it forever"
        )
    return resources


def make_scheduler(session: Session) -> ASHAScheduler | FIFOScheduler:
    """The config's registered scheduler (``autocompress.study.samplers``): ASHA on the
    per-epoch accuracy for ``scheduler: asha`` (or ``auto`` with >= 2 epochs), else FIFO
    (``halving``: the session's ladder decides, Tune runs what it is given)."""
    scheduler = make_ray_scheduler(
        session.config.scheduler, session.max_epochs(), metric=METRIC, time_attr=TIME_ATTR
    )
    return FIFOScheduler() if scheduler is None else scheduler


def _trial_name(trial: Any) -> str:
    rung = trial.config.get("rung")
    return f"trial_{trial.config['number']}" + ("" if rung is None else f"_rung{rung}")


def run(session: Session, *, exclusive_timing: bool = True) -> None:
    """Run the search's remaining trials on Ray Tune until ``config.trials`` are recorded.

    ``exclusive_timing``: a trial times its artifact while the other trials on its machine wait
    at a batch boundary (``autocompress.measure.gate``); without it, a neighbour's training skewed
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
                outputs=teacher_outputs(task),
                objectives=session.objectives,
                teacher=session.teacher,
                options=session.options,
                exclusive_timing=exclusive_timing,
            )
            storage = (session.run_dir.path / "ray").resolve()
            limiter = ConcurrencyLimiter(searcher, max_concurrent=concurrent)
            watch = TrialWatch(searcher, limiter)
            tuner = tune.Tuner(
                tune.with_resources(run, trial_resources(session)),
                tune_config=tune.TuneConfig(
                    search_alg=limiter,
                    scheduler=make_scheduler(session),
                    # a ladder asks for jobs until it says FINISHED
                    num_samples=-1 if searcher.ladder is not None else remaining,
                    reuse_actors=True,
                    trial_name_creator=_trial_name,
                    trial_dirname_creator=_trial_name,
                ),
                run_config=tune.RunConfig(
                    name=time.strftime("search-%Y%m%d-%H%M%S"),
                    storage_path=str(storage),
                    verbose=0,
                    callbacks=[watch],
                    stop=TrialStopper(session),
                    failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
                ),
            )
            try:
                tuner.fit()
            finally:
                watch.close()
            searcher.flush_errors()  # errors whose text never came
            searcher.flush_live()
            polish_stage(session, polish)  # on this cluster (``study.polish``)
    finally:
        session.stop()


__all__ = [
    "connect",
    "make_scheduler",
    "polish",
    "run",
    "teacher_outputs",
    "trainable",
    "trial_resources",
]
