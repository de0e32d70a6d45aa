"""The polish stage on Ray: each candidate a Ray task with a trial's resources, in parallel.

The driver connects as the search did (:func:`autocompress.study.backends.ray.connect`), puts
the task and the teacher's outputs in the object store once, and keeps at most
``max_concurrent`` (default: the cluster's CPUs) polishes running; each worker times the
teacher in its own process and times its artifact behind the machine's timing gate, as a
trial does. A task that raises (or whose worker dies) becomes a ``failed`` polish.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import ray

from autocompress.measure.gate import trial_gate
from autocompress.pipeline.hooks import TrialHooks
from autocompress.study._trial import run_trial
from autocompress.study.backends._ray_env import quiet, task_modules
from autocompress.study.records import TrialState, trial_record
from autocompress.study.session import Session, process_teacher
from autocompress.techniques.distill import TeacherCache

if TYPE_CHECKING:
    from autocompress.pipeline.options import CompressOptions
    from autocompress.study.objectives import ObjectiveSet
    from autocompress.study.polish import PolishJob
    from autocompress.task import Task


def polish_one(
    task: Task,
    outputs: tuple[list, list, list],
    job: PolishJob,
    *,
    objectives: ObjectiveSet,
    teacher: dict[str, Any],
    options: CompressOptions,
    exclusive_timing: bool,
) -> tuple[dict[str, Any], str]:
    """One polish in a worker: its trial record and (as JSON) the teacher timed here."""
    import torch

    torch.set_num_threads(1)
    options = options.replace(seed=job.seed, timeout_s=job.timeout_s).check()
    cache = TeacherCache(task)
    cache.load_state(outputs)
    with trial_gate(exclusive_timing) as gate:
        teacher = process_teacher(task, options, run=teacher, gate=gate)
        record = run_trial(
            task,
            job.policy,
            options,
            TrialHooks(gate=gate),
            number=job.number,
            objectives=objectives,
            teacher=teacher,
            out_dir=job.out_dir,
            teacher_cache=cache,
        )
    record["node"] = ray.get_runtime_context().get_node_id()
    return dict(record), json.dumps(teacher, default=str)


def polish(
    session: Session,
    jobs: list[PolishJob],
    may_start: Callable[[], bool],
    *,
    exclusive_timing: bool = True,
) -> Iterator[tuple[PolishJob, Mapping[str, Any], Mapping[str, Any]]]:
    """Run ``jobs`` as Ray tasks; yield each as it finishes (see ``study.polish``)."""
    from autocompress.study.backends.ray import connect, teacher_outputs, trial_resources

    task = session.task
    with connect(session), quiet(not session.verbose):
        for module in task_modules(task):  # loaded by path: ship their code
            with contextlib.suppress(ValueError):
                ray.cloudpickle.register_pickle_by_value(module)
        resources = dict(trial_resources(session))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        concurrent = session.config.max_concurrent or max(cpus, 1)
        remote = ray.remote(polish_one).options(
            num_cpus=resources.pop("cpu", 1),
            num_gpus=resources.pop("gpu", 0),
            resources=resources or None,
            max_retries=0,
        )
        task_ref, outputs_ref = ray.put(task), ray.put(teacher_outputs(task))
        queue, running = list(jobs), {}
        while queue or running:
            while queue and len(running) < concurrent and may_start():
                job = queue.pop(0)
                ref = remote.remote(
                    task_ref,
                    outputs_ref,
                    job,
                    objectives=session.objectives,
                    teacher=session.teacher,
                    options=session.options,
                    exclusive_timing=exclusive_timing,
                )
                running[ref] = job
            if not running:
                return
            ready, _ = ray.wait(list(running), num_returns=1)
            job = running.pop(ready[0])
            try:
                record, teacher = ray.get(ready[0])
            except Exception as exc:  # the task raised, or its worker died
                failed = trial_record(job.number, job.policy, seed=job.seed)
                failed.update(
                    state=TrialState.FAILED,
                    error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                    traceback=traceback.format_exc(limit=4),
                )
                yield job, failed, session.teacher
                continue
            yield job, record, json.loads(teacher)


__all__ = ["polish", "polish_one"]
