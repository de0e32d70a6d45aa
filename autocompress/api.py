"""``search``: the public entry point of a policy search (the loop is ``autocompress.study.session``).

>>> result = search(task, space="grouped", objectives="accuracy-size", n_trials=12, seed=0,
...                 backend="local", out="runs/demo")  # doctest: +SKIP
>>> [t["number"] for t in result.pareto]  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autocompress.errors import ConfigError
from autocompress.reporting.report import write_report_safely
from autocompress.study.config import SearchConfig

if TYPE_CHECKING:
    from autocompress.integrations.tracker import Tracker
    from autocompress.study.session import SearchResult
    from autocompress.task import Task

# backend name -> module with ``run(session)``; imported on use, so Ray loads only for "ray"
BACKENDS = {"local": "autocompress.study.backends.local", "ray": "autocompress.study.backends.ray"}
# importing the session loads Optuna: done on first use, so ``import autocompress`` stays lean
_FROM_SESSION = ("SearchResult", "Session", "finish", "prepare")


def __getattr__(name: str) -> Any:
    if name in _FROM_SESSION:
        from autocompress.study import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def run_search(
    config: SearchConfig,
    task: Task | None = None,
    *,
    resume: bool = False,
    tracker: Tracker | None = None,
    verbose: bool = False,
) -> SearchResult:
    """Prepare the run directory, run the backend until ``config.trials`` trials are recorded."""
    from autocompress.study.session import finish, prepare

    if config.backend not in BACKENDS:
        raise ConfigError(f"backend: {config.backend!r}; choose from {', '.join(BACKENDS)}")
    if config.backend == "local":
        config.training()  # a device that is not here fails before any work (one line)
    from autocompress.task import check_task

    epochs = 1 if config.epochs is None else config.epochs  # None: the space's, maybe > 0
    if task is not None:
        check_task(task, epochs=epochs)
    session = prepare(
        config,
        task,
        resume=resume,
        tracker=tracker,
        verbose=verbose,
        reporter=write_report_safely,
    )
    if task is None:
        check_task(session.task, epochs=epochs)  # load_task checked what needs no epochs
    importlib.import_module(BACKENDS[config.backend]).run(session)
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
    starts: tuple[str, ...] = ("identity", "int8", "prune30-int8"),
    tracking_uri: str | None = None,
    verbose: bool = False,
    **options: Any,
) -> SearchResult:
    """Search compression policies for ``task``; returns the trials and the Pareto front.

    Tracking in MLflow happens when ``tracking_uri`` is given. ``starts``: the first policies
    (``baselines=`` is read as its older name).

    >>> result = search(task, n_trials=6, epochs=1, out="runs/mlp")  # doctest: +SKIP
    """
    if "baselines" in options:
        starts = options.pop("baselines")
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
        starts=tuple(starts),
        tracking=tracking_uri is not None,
        tracking_uri=tracking_uri,
        out=str(out) if out is not None else None,
        **options,
    )
    tracker = make_tracker(config) if config.tracking else None
    return run_search(config, task, tracker=tracker, verbose=verbose)


def make_tracker(config: SearchConfig, cli_uri: str | None = None) -> Any:
    """The MLflow tracker for a search (fails fast when the server cannot be reached)."""
    from autocompress.integrations.mlflow import MlflowTracker, resolve_tracking_uri

    uri = resolve_tracking_uri(cli_uri, config.tracking_uri)
    tracker = MlflowTracker(
        tracking_uri=uri, experiment=config.experiment or config.name, run_dir=config.run_dir
    )
    tracker.check_reachable()
    return tracker
