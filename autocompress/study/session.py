"""One search session: prepare -> ask -> run -> tell -> record -> report refresh -> finish.

A backend only decides *where* a trial runs (``backends/local.py`` in this process,
``backends/ray/`` on Ray Tune workers); everything else happens here, in the driver.

One teacher per comparison: a record carries the teacher (``record["teacher"]``) it was
compared against, measured in the process that timed the trial, by the same target. The run's
teacher (``baseline.json``, ``pareto.json``'s ``baseline``, the report's teacher marker) is the
one the driver measured when the search started; a resumed search reads it back. Timings from
other processes are compared through their ratio to their own teacher
(:func:`autocompress.measure.metrics.comparable`): on a cluster, a trial's latency counts as
``latency / its node's teacher latency x the run teacher's latency``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autocompress.errors import AutoCompressError, ConfigError, TaskError
from autocompress.measure.gate import Gate
from autocompress.pipeline._compress import MeasureSettings, measure_baseline
from autocompress.study._controller import Controller, Proposal
from autocompress.study._progress import SearchProgress
from autocompress.study._start import start_plan
from autocompress.study.budget import Budget
from autocompress.study.config import SearchConfig
from autocompress.study.failures import FailureMonitor
from autocompress.study.objectives import ObjectiveSet, load_objectives
from autocompress.study.rundir import RunDir
from autocompress.study.space import ResolvedSpace, load_space
from autocompress.targets import get_target
from autocompress.task import Task, load_task
from autocompress.techniques.distill import unused_globals

log = logging.getLogger(__name__)

# config keys that define the study: a run directory cannot continue a search differing in them
STUDY_KEYS = (
    "name",
    "task",
    "search_space",
    "objectives",
    "target",
    "target_options",
    "importance",
    "sampler",
    "seed",
    "baselines",
    "epochs",
)


@dataclass
class SearchResult:
    run_dir: Path
    trials: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    baseline: dict[str, Any]
    config: SearchConfig | None = None  # the config the search ran with, overrides applied


@dataclass
class Session:
    """Everything one search needs, prepared once by the driver."""

    config: SearchConfig
    run_dir: RunDir
    task: Task
    objectives: ObjectiveSet
    controller: Controller
    tracker: Any = None
    verbose: bool = False
    progress: SearchProgress | None = field(default=None, repr=False)
    failures: FailureMonitor = field(default_factory=FailureMonitor)
    budget: Budget | None = None  # wall-clock budget (``budget: 30m``), started by prepare
    reporter: Callable[[Path], list[Path]] | None = field(default=None, repr=False)

    @property
    def baseline(self) -> dict[str, Any]:
        """The run's teacher (``baseline.json``)."""
        return self.controller.baseline

    def max_epochs(self) -> int:
        """The most fine-tuning epochs any trial of this search can run."""
        if self.config.epochs is not None:
            return self.config.epochs
        space = self.controller.space
        if "finetune.epochs" in space.param_names:
            p = space.param("finetune.epochs")
            return int(max(p.choices) if p.choices else p.high)
        return int(space.policy_from_params({}).finetune.epochs)

    @property
    def remaining(self) -> int:
        if self.failures.aborted is not None:  # the first trials all failed: stop asking
            return 0
        if self.budget is not None and self.budget.spent and self.controller.n_finished:
            return 0  # no new trial past the budget (the first one runs whatever it took)
        return self.config.trials - self.controller.n_finished

    # -- the loop, step by step ------------------------------------------------------------
    def start(self) -> SearchProgress:
        self.progress = SearchProgress(
            self.config.trials,
            self.objectives.metrics,
            self.objectives.directions,
            done=self.controller.n_finished,
            budget=self.budget,
        )
        return self.progress

    def write_report(self) -> list[Path]:
        """The report files, written by the observer the API gave (none: no report)."""
        return self.reporter(self.run_dir.path) if self.reporter is not None else []

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.close()

    def ask(self) -> Proposal:
        return self.controller.ask()

    def complete(self, proposal: Proposal, record: dict[str, Any]) -> dict[str, Any]:
        """Tell the study and record the trial; refresh pareto.json, tracking and the report."""
        record = self.controller.tell(proposal, record)
        records = list(self.controller.records.values())
        self.failures.observe(record)
        if self.progress is not None:
            self.progress.finished(records, record)
        if record["state"] != "complete":
            shutil.rmtree(self.run_dir.trial_dir(record["number"]), ignore_errors=True)
        self.controller.write_pareto()
        if self.tracker is not None:
            self.tracker.log_trial(dict(record))
        every = self.config.report_every
        if every and len(records) % every == 0:
            self.write_report()
        return record


def new_record(
    proposal: Proposal,
    *,
    state: str,
    teacher: Mapping[str, Any],
    trial: Mapping[str, Any] | None = None,
    error: str | None = None,
    epochs: list[dict[str, Any]] | None = None,
    duration_s: float | None = None,
    where: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The one record shape of ``trials.jsonl``, from a trial's own record or from scratch
    (a trial stopped or lost before it could report one)."""
    record: dict[str, Any] = {
        "number": proposal.number,
        "state": state,
        "policy": proposal.policy.to_dict(),
        "metrics": {},
        "error": error,
        "seed": proposal.seed,
        "host": None,
        "epochs": epochs or [],
        "teacher_batches_computed": None,
        "duration_s": duration_s,
    }
    if trial is not None:
        record.update(trial)
    for key, value in (where or {}).items():
        if record.get(key) is None:
            record[key] = value
    record.setdefault("node", None)
    # a candidate timed interleaved with the teacher is compared with those teacher timings
    record["teacher"] = {**teacher, **((record["metrics"] or {}).get("teacher_paired") or {})}
    return record


# -- the teacher ---------------------------------------------------------------------------
_TEACHERS: dict[str, dict[str, Any]] = {}  # target -> the teacher timed in this process


def process_teacher(
    task: Task,
    *,
    target: str,
    objectives: ObjectiveSet,
    run: Mapping[str, Any],
    gate: Gate,
    target_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's teacher with its timings from this process (measured once per process)."""
    if target not in _TEACHERS:
        with gate.exclusive():
            here = measure_baseline(
                task,
                target=target,
                settings=MeasureSettings.from_latency(objectives.latency),
                target_options=target_options,
            )
        _TEACHERS[target] = {**run, **{k: here[k] for k in _timed(here)}}
    return _TEACHERS[target]


def _timed(measured: Mapping[str, Any]) -> list[str]:
    from autocompress.measure.metrics import METRICS

    return [k for k, m in METRICS.items() if m.timed and k in measured]


# -- identity ------------------------------------------------------------------------------
def _digest(value: Any) -> str:
    return hashlib.sha256(repr(value).encode()).hexdigest()[:16]


def content_identity(space: ResolvedSpace, objectives: ObjectiveSet) -> dict[str, str]:
    """Hashes of what the space and objective files resolve to (not of their paths)."""
    return {
        "space_hash": _digest((space.params, space.layers, sorted(space.fixed.items()))),
        "objectives_hash": _digest(json.dumps(objectives.to_dict(), sort_keys=True)),
    }


# -- prepare and finish --------------------------------------------------------------------
def prepare(
    config: SearchConfig,
    task: Task | None = None,
    *,
    resume: bool = False,
    tracker: Any = None,
    verbose: bool = False,
    reporter: Callable[[Path], list[Path]] | None = None,
) -> Session:
    budget = Budget.of(config.budget)  # the start's time counts
    config = config.resolved()
    run_dir = RunDir(config.run_dir)
    if resume and not run_dir.exists():
        raise ConfigError(f"--resume: {run_dir.path} holds no search to resume")
    now = config.to_dict()
    if run_dir.exists():  # cheap keys first: no model is loaded for a wrong --out
        before = run_dir.read_config()
        run_dir.check_identity({k: before.get(k) for k in STUDY_KEYS})
    run_dir.check_identity({k: now.get(k) for k in STUDY_KEYS})
    if task is None:
        task = load_task(config.task, base_dir=config.base_dir)
    objectives = load_objectives(config.objectives)
    space = load_space(config.search_space).resolve(
        task.model,
        task.example_inputs,
        output_layers=task.output_layers,
        supported_bits=get_target(config.target).bits,
        supported_scopes=tuple(get_target(config.target).quant_scopes),
        left_out=unused_globals(task),
    )
    run_dir.check_identity(content_identity(space, objectives))
    run_dir.create()
    run_dir.write_config(now)
    baseline = run_dir.read_baseline()
    if baseline is None:
        try:
            baseline = measure_baseline(
                task,
                target=config.target,
                settings=MeasureSettings.from_latency(objectives.latency),
                target_options=config.target_options,
            )
        except AutoCompressError:
            raise
        except Exception as exc:  # the task's own code (metric, loss, output_fn) failed
            raise TaskError(
                f"task {config.task}: measuring the teacher failed: {type(exc).__name__}: {exc}"
            ) from exc
        baseline["host"] = socket.gethostname()
        run_dir.write_baseline(baseline)
        _TEACHERS[config.target] = dict(baseline)  # timed here: this process' teacher too
    fixed, plan = start_plan(
        config.baselines,
        run_dir=run_dir,
        task=task,
        space=space,
        objectives=objectives,
        baseline=baseline,
        target=config.target,
        target_options=config.target_options,
    )
    controller = Controller(
        config=dataclasses.replace(config, baselines=fixed),
        run_dir=run_dir,
        space=space,
        objectives=objectives,
        baseline=baseline,
        plan=plan,
    )
    session = Session(config, run_dir, task, objectives, controller, tracker, verbose)
    session.failures = FailureMonitor(fail_fast_after=config.fail_fast_after)
    session.budget = budget
    session.reporter = reporter
    if tracker is not None:
        tracker.start_search(config.to_dict())
        tracker.sync(list(controller.records.values()))
    return session


def finish(session: Session) -> SearchResult:
    controller = session.controller
    controller.write_pareto()
    pareto = controller.pareto()
    keep = {r["number"] for r in pareto}
    if session.config.keep_models == "pareto":
        trials_dir = session.run_dir.path / "trials"
        for child in trials_dir.iterdir() if trials_dir.exists() else ():
            if child.name.isdigit() and int(child.name) not in keep:
                shutil.rmtree(child, ignore_errors=True)
    files = session.write_report()
    if session.tracker is not None:
        session.tracker.sync(list(controller.records.values()))
        models = {
            n: session.run_dir.trial_dir(n) for n in keep if session.run_dir.trial_dir(n).exists()
        }
        session.tracker.finish(keep, [session.run_dir.path / "pareto.json", *files], models)
    return SearchResult(
        run_dir=session.run_dir.path,
        trials=list(controller.records.values()),
        pareto=[dict(r) for r in pareto],
        baseline=controller.baseline,
        config=session.config,
    )


__all__ = [
    "STUDY_KEYS",
    "SearchResult",
    "Session",
    "finish",
    "new_record",
    "prepare",
    "process_teacher",
]
