"""The public entry points, one function per ``autocompress`` command: :func:`apply`,
:func:`search` (a Python task) and :func:`search_config` (a config YAML), :func:`inspect`,
:func:`report`, :func:`export`, :func:`compare`, :func:`sync`. They print nothing and return
what the command prints; the CLI parses arguments and prints. The search loop itself is
``autocompress.study.session``.

>>> result = search(task, space="grouped", objectives="accuracy-size", n_trials=12, seed=0,
...                 backend="local", out="runs/demo")  # doctest: +SKIP
>>> [t["number"] for t in result.pareto]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from autocompress._lazy import lazy_names
from autocompress.errors import AutoCompressError, ConfigError
from autocompress.reporting.report import write_report_safely
from autocompress.study.backends import get_backend
from autocompress.study.config import SearchConfig

if TYPE_CHECKING:
    from autocompress.integrations.tracker import Tracker
    from autocompress.pipeline import CompressResult
    from autocompress.policy import Policy
    from autocompress.study.session import SearchResult
    from autocompress.study.space import SearchSpace
    from autocompress.task import Task
    from autocompress.techniques.importance import Importance

# importing the session loads Optuna: done on first use, so ``import autocompress`` stays lean
__getattr__, _ = lazy_names(
    __name__, {"autocompress.study.session": ("SearchResult", "Session", "finish", "prepare")}
)


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

    backend = get_backend(config.backend)  # the module loads below: Ray only for "ray"
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
    from autocompress.study._polish_plan import POLISH_BUDGET_SHARE
    from autocompress.study.polish import polish_stage, with_budget_share

    with_budget_share(session, POLISH_BUDGET_SHARE)  # with a budget: a share kept for it
    module = backend.load()
    module.run(session)
    polish_stage(session, getattr(module, "polish", None))  # re-train the picked candidates
    result = finish(session)
    session.failures.raise_if_aborted()
    return result


def search(
    task: Task,
    *,
    space: str = "refine",
    objectives: str = "accuracy-size-latency",
    n_trials: int = 24,
    seed: int = 0,
    sampler: str = "tpe",
    backend: str = "local",
    name: str | None = None,
    out: str | Path | None = None,
    target: str = "torch",
    epochs: int | None = None,
    starts: tuple[str, ...] = ("identity", "auto"),
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


def search_config(
    config: str | Path | SearchConfig,
    *,
    resume: bool = False,
    verbose: bool = False,
    tracking: bool = True,
    tracking_uri: str | None = None,
    budget: str | None = None,
    trials: int | None = None,
    precision: str | None = None,
    **overrides: Any,
) -> SearchResult:
    """``autocompress search CONFIG``: the search a config YAML (or a :class:`SearchConfig`)
    describes, with the command's overrides (``out``, ``backend``, ``seed``, ``sampler``,
    ``address``, ``device``: None keeps the config's). ``budget`` without ``trials`` lets the
    wall-clock budget bound the search; ``tracking=False`` turns MLflow tracking off.

    >>> result = search_config("examples/digits/search.yaml", trials=4, tracking=False)  # doctest: +SKIP
    """
    cfg = config if isinstance(config, SearchConfig) else SearchConfig.from_yaml(Path(config))
    if budget is not None and trials is None:
        from autocompress.study.budget import MAX_TRIALS

        trials = MAX_TRIALS  # the budget bounds the search
    if overrides.get("out") is not None:
        overrides["out"] = str(overrides["out"])
    cfg = cfg.with_overrides(
        budget=budget,
        trials=trials,
        tracking_uri=tracking_uri,
        finetune={**cfg.finetune, "precision": precision} if precision else None,
        **overrides,
    )
    if not tracking:
        cfg = cfg.with_overrides(tracking=False)
    need_directory(cfg.run_dir, "--out (or the config's out:)")
    tracker = make_tracker(cfg, tracking_uri) if cfg.tracking else None
    return run_search(cfg, resume=resume, tracker=tracker, verbose=verbose)


def need_directory(path: Path, what: str) -> None:
    """A directory the command creates must not be a file (one line naming ``what``)."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{what} {path} is a file; give a directory (it is created)")


def apply(
    task: Task | str,
    policy: Policy | Mapping[str, Any] | str | Path,
    *,
    out_dir: str | Path,
    target: str = "torch",
    importance: str | Importance = "taylor",
    threads: int = 1,
    repeats: int = 30,
    seed: int = 0,
    target_options: Mapping[str, Any] | None = None,
    device: str = "auto",
    precision: str = "fp32",
    on_stage: Callable[[str], None] | None = None,
) -> CompressResult:
    """``autocompress apply``: apply one policy to the task's model, write ``out_dir/model.*``,
    ``policy.json`` and ``metrics.json``; returns the result (its ``metrics`` as written).

    ``task``: a :class:`Task` or a spec ``path/to/file.py:function``; ``policy``: a
    :class:`Policy`, its dict, or a policy JSON path. Options are checked before the task loads.

    >>> apply("tests/_support/tasks.py:mlp", {"quant": {"default": 8}}, out_dir="out")  # doctest: +SKIP
    """
    from autocompress.pipeline._compress import MeasureSettings, compress
    from autocompress.pipeline.options import CompressOptions
    from autocompress.policy import Policy, load_policy
    from autocompress.task import load_task
    from autocompress.techniques.importance import check_importance

    out_dir = Path(out_dir)
    need_directory(out_dir, "--out")
    if isinstance(policy, Mapping):
        policy = Policy.from_dict(policy)
    elif not isinstance(policy, Policy):
        policy = load_policy(policy)
    if threads < 1:
        raise ConfigError(f"--threads {threads}: must be at least 1")
    if repeats < 20:
        raise ConfigError(f"--repeats {repeats}: latency needs at least 20 timed repeats")
    options = CompressOptions.of(
        target=target,
        target_options=dict(target_options or {}),
        importance=importance,
        seed=seed,
        settings=MeasureSettings(threads=threads, repeats=repeats),
    ).replace(device=device, precision=precision)
    options.check()  # a wrong target option or a device not here fails before the task loads
    stage = on_stage or (lambda s: None)
    if isinstance(task, str):
        stage("loading task")
        task = load_task(task)  # its module may register a plug-in criterion
    try:
        check_importance(importance)
    except AutoCompressError as exc:
        raise type(exc)(f"--importance: {exc}") from None
    return compress(task, policy, options=options, out_dir=out_dir, on_stage=on_stage)


def inspect(
    task: Task | str,
    *,
    space: SearchSpace | str | Path = "refine",
    target: str = "torch",
    target_options: Mapping[str, Any] | None = None,
) -> str:
    """``autocompress inspect``: the model's layers, what ``space`` makes of each (with each
    bit-width's mode on ``target``) and the space's dimension, as a text table."""
    from autocompress.reporting.inspect import describe
    from autocompress.study.space import load_space
    from autocompress.task import load_task

    job = load_task(task) if isinstance(task, str) else task
    resolved = load_space(space) if isinstance(space, str | Path) else space
    return describe(job, resolved, target=target, target_options=target_options)


def report(run_dir: str | Path) -> list[Path]:
    """``autocompress report``: rebuild ``report.html`` and ``pareto.png`` of a run directory;
    returns the files written."""
    from autocompress.reporting.report import write_report

    return [path for path in write_report(run_dir) if path is not None]


class Exported(NamedTuple):
    """What :func:`export` wrote: the trial's number, its metrics, the output directory."""

    trial: int
    metrics: dict[str, Any]
    out: Path


def export(
    run_dir: str | Path,
    *,
    out: str | Path,
    trial: int | None = None,
    max_accuracy_drop: float = 0.01,
    by: str = "size",
    format: str = "torch",
    target: str | None = None,
) -> Exported:
    """``autocompress export``: write trial ``trial``'s deployable model (or, with ``trial``
    None, the smallest (``by="size"``) or fastest (``"latency"``) Pareto point within
    ``max_accuracy_drop`` of the teacher) with its policy.json and metrics.json into ``out``.
    ``format``: torch, onnx, openvino or executorch. ``target``: a search measured on several
    targets exports that target's artifact (the objective target's when None)."""
    from autocompress.reporting.export import export_trial, pick_trial
    from autocompress.targets import export_formats

    out = Path(out)
    need_directory(out, "--out")
    if format not in export_formats():
        raise ConfigError(f"--format {format!r}: choose from {', '.join(export_formats())}")
    if trial is None:
        trial = pick_trial(run_dir, max_accuracy_drop=max_accuracy_drop, by=by, target=target)
    return Exported(trial, export_trial(run_dir, trial, out, fmt=format, target=target), out)


def compare(
    *sources: str | Path, out: str | Path = "compare", tracking_uri: str | None = None
) -> tuple[list[dict[str, Any]], Path, Path]:
    """``autocompress compare``: run directories or MLflow experiment names side by side;
    returns ``(rows, compare.html, compare.png)`` (``format_table(rows)`` is the printed table)."""
    from autocompress.reporting.comparison import compare as compare_searches

    return compare_searches([str(s) for s in sources], out_dir=Path(out), tracking_uri=tracking_uri)


def sync(run_dir: str | Path, *, tracking_uri: str | None = None) -> tuple[int, str]:
    """``autocompress sync``: upload to MLflow the trials of ``run_dir`` not tracked yet;
    returns ``(trials uploaded, tracking URI)``."""
    from autocompress.study.rundir import RunDir

    rd = RunDir(run_dir)
    cfg = SearchConfig.from_dict(rd.read_config(), source=str(Path(run_dir) / "config.yaml"))
    cfg = cfg.with_overrides(out=str(run_dir))
    tracker = make_tracker(cfg, tracking_uri)
    tracker.start_search(cfg.to_dict())
    uploaded = tracker.sync(rd.records())
    for record in rd.polishes().values():  # each polished trial once (the tracker's ledger)
        tracker.log_polish(record)
    return uploaded, tracker.tracking_uri
