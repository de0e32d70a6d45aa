"""Policy search: a run directory, a controller, a backend that runs the trials.

>>> result = search(task, space="grouped", objectives="accuracy-size", n_trials=12, seed=0,
...                 backend="local", out="runs/demo")  # doctest: +SKIP
>>> [t["number"] for t in result.pareto]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compress import MeasureSettings, measure_baseline
from .config import SearchConfig
from .controller import Controller
from .distill import TeacherCache
from .errors import AutoCompressError, ConfigError, TaskError
from .failures import FailureMonitor
from .objectives import ObjectiveSet, load_objectives
from .progress import SearchProgress
from .rundir import RunDir
from .space import load_space
from .targets import get_target
from .task import Task, load_task
from .trial import run_trial

log = logging.getLogger(__name__)

# keys that define the study: a run directory cannot continue a search that differs in them
_STUDY_KEYS = (
    "task",
    "search_space",
    "objectives",
    "target",
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


@dataclass
class Session:
    """Everything one search needs, prepared once by the driver."""

    config: SearchConfig
    run_dir: RunDir
    task: Task
    objectives: ObjectiveSet
    controller: Controller
    tracker: Any = None
    failures: FailureMonitor = field(default_factory=FailureMonitor)

    @property
    def baseline(self) -> dict[str, Any]:
        return self.controller.baseline


def _check_same_study(run_dir: RunDir, config: SearchConfig) -> None:
    if not (run_dir.path / "config.yaml").exists():
        return
    before = run_dir.read_config()
    now = config.to_dict()
    for key in _STUDY_KEYS:
        if before.get(key) != now.get(key):
            raise ConfigError(
                f"{run_dir.path} holds a search with a different {key!r} "
                f"({before.get(key)!r} != {now.get(key)!r}); pass another --out or remove it"
            )


def prepare(
    config: SearchConfig, task: Task | None = None, *, resume: bool = False, tracker: Any = None
) -> Session:
    config = config.resolved()
    run_dir = RunDir(config.run_dir)
    if resume and not (run_dir.path / "config.yaml").exists():
        raise ConfigError(f"--resume: {run_dir.path} holds no search to resume")
    _check_same_study(run_dir, config)
    if task is None:
        task = load_task(config.task, base_dir=config.base_dir)
    objectives = load_objectives(config.objectives)
    space = load_space(config.search_space).resolve(
        task.model,
        task.example_inputs,
        output_layers=task.output_layers,
        supported_bits=get_target(config.target).bits,
    )
    run_dir.create()
    run_dir.write_config(config.to_dict())
    settings = MeasureSettings.from_latency(objectives.latency)
    try:
        baseline = measure_baseline(task, target=config.target, settings=settings)
    except AutoCompressError:
        raise
    except Exception as exc:  # the task's own code (metric, loss, output_fn) failed on the teacher
        raise TaskError(
            f"task {config.task}: measuring the teacher failed: {type(exc).__name__}: {exc}"
        ) from exc
    run_dir.write_json("baseline.json", baseline)
    controller = Controller(
        config=config, run_dir=run_dir, space=space, objectives=objectives, baseline=baseline
    )
    session = Session(config, run_dir, task, objectives, controller, tracker)
    session.failures = FailureMonitor(fail_fast_after=config.fail_fast_after)
    if tracker is not None:
        tracker.start_search(config.to_dict())
        tracker.sync(list(controller.records.values()))
    return session


def after_trial(session: Session, record: Mapping[str, Any], progress: SearchProgress) -> None:
    """Bookkeeping after each finished trial: progress, pareto.json, tracking, report."""
    records = list(session.controller.records.values())
    session.failures.observe(record)
    progress.finished(records, record)
    if record["state"] != "complete":
        shutil.rmtree(session.run_dir.trial_dir(record["number"]), ignore_errors=True)
    session.controller.write_pareto()
    if session.tracker is not None:
        session.tracker.log_trial(dict(record))
    every = session.config.report_every
    if every and len(records) % every == 0:
        _write_report(session.run_dir.path)


def _write_report(path: Path) -> list[Path]:
    try:
        from .report import write_report

        return [p for p in write_report(path) if p is not None]
    except Exception as exc:  # a report problem never stops a search
        warnings.warn(f"could not write the report in {path}: {exc}", stacklevel=2)
        return []


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
    files = _write_report(session.run_dir.path)
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
    )


def run_local(session: Session) -> None:
    """Trials in this process, one after another."""
    c = session.controller
    progress = SearchProgress(
        session.config.trials,
        session.objectives.metrics,
        session.objectives.directions,
        done=c.n_finished,
    )
    cache = TeacherCache(session.task)
    try:
        while c.n_finished < session.config.trials and session.failures.aborted is None:
            proposal = c.ask()
            record = run_trial(
                session.task,
                proposal.policy,
                number=proposal.number,
                objectives=session.objectives,
                baseline=session.baseline,
                out_dir=session.run_dir.trial_dir(proposal.number),
                target=session.config.target,
                importance=session.config.importance,
                seed=proposal.seed,
                teacher_cache=cache,
                on_stage=lambda s, n=proposal.number: progress.stage(n, s),
                timeout_s=session.config.trial_timeout_s,
            )
            record["node"] = None
            after_trial(session, c.tell(proposal, record), progress)
    finally:
        progress.close()


BACKENDS = {"local": run_local}


def _ray_backend(session: Session) -> None:
    from .integrations.ray import run_ray

    run_ray(session)


BACKENDS["ray"] = _ray_backend


def run_search(
    config: SearchConfig, task: Task | None = None, *, resume: bool = False, tracker: Any = None
) -> SearchResult:
    """Prepare the run directory, run the backend until ``config.trials`` trials are recorded."""
    session = prepare(config, task, resume=resume, tracker=tracker)
    BACKENDS[config.backend](session)
    result = finish(session)
    session.failures.raise_if_aborted()
    return result


def search(
    task: Task,
    *,
    space: str = "default",
    objectives: str = "accuracy-size-latency",
    n_trials: int = 24,
    seed: int = 0,
    sampler: str = "tpe",
    backend: str = "local",
    name: str | None = None,
    out: str | Path | None = None,
    target: str = "torch",
    epochs: int | None = None,
    baselines: tuple[str, ...] = ("identity", "int8", "prune30-int8"),
    tracking_uri: str | None = None,
    **options: Any,
) -> SearchResult:
    """Search compression policies for ``task``; returns the trials and the Pareto front.

    Tracking in MLflow happens when ``tracking_uri`` is given.
    """
    config = SearchConfig(
        name=name or task.name,
        task=task.spec or "<python>",
        search_space=space,
        objectives=objectives,
        target=target,
        trials=n_trials,
        sampler=sampler,
        seed=seed,
        backend=backend,
        epochs=epochs,
        baselines=tuple(baselines),
        tracking=tracking_uri is not None,
        tracking_uri=tracking_uri,
        out=str(out) if out is not None else None,
        **options,
    )
    tracker = make_tracker(config) if config.tracking else None
    return run_search(config, task, tracker=tracker)


def make_tracker(config: SearchConfig, cli_uri: str | None = None) -> Any:
    """The MLflow tracker for a search (fails fast when the server cannot be reached)."""
    from .integrations.mlflow import MlflowTracker, resolve_tracking_uri

    uri = resolve_tracking_uri(cli_uri, config.tracking_uri)
    tracker = MlflowTracker(
        tracking_uri=uri, experiment=config.experiment or config.name, run_dir=config.run_dir
    )
    tracker.check_reachable()
    return tracker
