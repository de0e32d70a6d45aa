"""One search session: prepare -> ask -> run -> tell -> record -> report refresh -> finish.

A backend only decides *where* a trial runs (``backends/local.py`` in this process,
``backends/ray/`` on Ray Tune workers); everything else happens here, in the driver.

One teacher per comparison: a record carries the teacher (``record["teacher"]``) it was
compared against, measured in the process that timed the trial, by the same target. The run's
teacher (``teacher.json``, ``pareto.json``'s ``teacher``, the report's teacher marker) is the
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
from autocompress.integrations.tracker import Tracker
from autocompress.measure.gate import Gate
from autocompress.pipeline._compress import measure_teacher
from autocompress.pipeline.options import CompressOptions
from autocompress.study._controller import Controller, Proposal
from autocompress.study._progress import SearchProgress
from autocompress.study._start import start_plan
from autocompress.study.budget import Budget
from autocompress.study.config import SearchConfig
from autocompress.study.failures import FailureMonitor
from autocompress.study.objectives import ObjectiveSet, load_objectives
from autocompress.study.records import TrialRecord, TrialState
from autocompress.study.rundir import RunDir
from autocompress.study.space import ResolvedSpace, load_space
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
    "targets",
    "objective_target",
    "importance",
    "sampler",
    "seed",
    "starts",
    "epochs",
)


@dataclass
class SearchResult:
    run_dir: Path
    trials: list[TrialRecord]
    pareto: list[dict[str, Any]]
    teacher: dict[str, Any]  # the run's teacher (teacher.json)
    config: SearchConfig | None = None  # the config the search ran with, overrides applied

    @property
    def baseline(self) -> dict[str, Any]:
        """Deprecated name of :attr:`teacher`."""
        return self.teacher


@dataclass
class Session:
    """Everything one search needs, prepared once by the driver."""

    config: SearchConfig
    run_dir: RunDir
    task: Task
    objectives: ObjectiveSet
    controller: Controller
    tracker: Tracker | None = None
    verbose: bool = False
    progress: SearchProgress | None = field(default=None, repr=False)
    failures: FailureMonitor = field(default_factory=FailureMonitor)
    budget: Budget | None = None  # wall-clock budget (``budget: 30m``), started by prepare
    reporter: Callable[[Path], list[Path]] | None = field(default=None, repr=False)
    # what every trial runs with (the target resolved once); each trial changes only its seed
    options: CompressOptions = field(default_factory=CompressOptions)
    # the budget's polish reserve from the finished records (``polish.with_budget_share``)
    reserve: Callable[[list[Any]], float] | None = field(default=None, repr=False)

    @property
    def teacher(self) -> dict[str, Any]:
        """The run's teacher (``teacher.json``)."""
        return self.controller.teacher

    @property
    def baseline(self) -> dict[str, Any]:
        """Deprecated name of :attr:`teacher`."""
        return self.teacher

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

    def complete(self, proposal: Proposal, record: TrialRecord) -> TrialRecord:
        """Tell the study and record the trial; refresh pareto.json, tracking and the report."""
        record = self.controller.tell(proposal, record)
        records = list(self.controller.records.values())
        if self.budget is not None and self.reserve is not None:
            self.budget.reserve = self.reserve(records)
        self.failures.observe(record)
        if self.progress is not None:
            self.progress.finished(records, record)
        if record["state"] != TrialState.COMPLETE:
            shutil.rmtree(self.run_dir.trial_dir(record["number"]), ignore_errors=True)
        self.controller.write_pareto()
        if self.tracker is not None:
            self.tracker.log_trial(dict(record))
        every = self.config.report_every
        if every and len(records) % every == 0:
            self.write_report()
        return record


# -- the teacher ---------------------------------------------------------------------------
_TEACHERS: dict[str, dict[str, Any]] = {}  # target -> the teacher timed in this process


def process_teacher(
    task: Task, options: CompressOptions, *, run: Mapping[str, Any], gate: Gate
) -> dict[str, Any]:
    """The run's teacher with its timings from this process (measured once per process)."""
    target = options.target_name
    if target not in _TEACHERS:
        with gate.exclusive():
            here = measure_teacher(task, options=options)
        _TEACHERS[target] = {**run, **{k: here[k] for k in _timed(here)}}
    teacher = dict(_TEACHERS[target])
    if options.targets:  # the teacher on each runtime, timed here too (``teacher["targets"]``)
        runs = run.get("targets") or {}
        own = {k: v for k, v in teacher.items() if k != "targets"}
        teacher["targets"] = {target: own}
        for name in options.targets:
            if name not in _TEACHERS:
                with gate.exclusive():
                    here = measure_teacher(task, options=options.for_target(name))
                _TEACHERS[name] = {**runs.get(name, here), **{k: here[k] for k in _timed(here)}}
            teacher["targets"][name] = _TEACHERS[name]
    return teacher


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
    reporter: Callable[[Path], list[Path]] | None = None,
    resume: bool = False,
    tracker: Tracker | None = None,
    verbose: bool = False,
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
    options = CompressOptions.from_config(config, objectives=objectives)
    space = load_space(config.search_space).resolve(
        task.model,
        task.example_inputs,
        output_layers=task.output_layers,
        supported_bits=options.target.bits,
        supported_scopes=tuple(options.target.quant_scopes),
        left_out=unused_globals(task),
    )
    run_dir.check_identity(content_identity(space, objectives))
    run_dir.create()
    run_dir.write_config(now)
    teacher = run_dir.read_teacher()
    if teacher is None:
        try:
            teacher = measure_teacher(task, options=options)
        except AutoCompressError:
            raise
        except Exception as exc:  # the task's own code (metric, loss, output_fn) failed
            raise TaskError(
                f"task {config.task}: measuring the teacher failed: {type(exc).__name__}: {exc}"
            ) from exc
        teacher["host"] = socket.gethostname()
        if options.targets:  # the teacher on every runtime, the objective target's first
            teacher["targets"] = {options.target_name: dict(teacher)}
            for name in options.targets:
                extra = measure_teacher(task, options=options.for_target(name))
                teacher["targets"][name] = {**extra, "host": teacher["host"]}
                _TEACHERS[name] = dict(teacher["targets"][name])
        run_dir.write_teacher(teacher)
        _TEACHERS[options.target_name] = dict(teacher)  # timed here: this process' teacher too
    fixed, plan, lr = start_plan(
        config.starts,
        run_dir=run_dir,
        task=task,
        space=space,
        objectives=objectives,
        teacher=teacher,
        options=options,
        epochs=config.epochs,
    )
    if lr is not None:  # the measured start's fine-tuning rate: every trial and polish uses it
        space = dataclasses.replace(space, fixed={**space.fixed, "finetune.lr": lr})
    controller = Controller(
        config=dataclasses.replace(config, starts=fixed),
        run_dir=run_dir,
        space=space,
        objectives=objectives,
        teacher=teacher,
        plan=plan,
    )
    session = Session(config, run_dir, task, objectives, controller, tracker, verbose)
    session.failures = FailureMonitor(fail_fast_after=config.fail_fast_after)
    session.budget = budget
    session.options = options
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
    keep |= {r["number"] for rows in controller.fronts().values() for r in rows}
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
        teacher=controller.teacher,
        config=session.config,
    )


__all__ = [
    "STUDY_KEYS",
    "SearchResult",
    "Session",
    "finish",
    "prepare",
    "process_teacher",
]
