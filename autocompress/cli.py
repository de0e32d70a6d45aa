"""The ``autocompress`` command line. User mistakes print one line and exit with code 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

from autocompress.errors import AutoCompressError
from autocompress.techniques.importance import IMPORTANCES

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search compression policies for trained PyTorch models.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Search compression policies for trained PyTorch models."""


def one_line(exc: BaseException) -> str:
    """The message on one line (YAML and library messages may span several)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines) or type(exc).__name__


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AutoCompressError (and files that cannot be read) into one line and exit 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (AutoCompressError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


def target_options(pairs: list[str] | None) -> dict[str, Any]:
    """``--target-option KEY=VALUE`` (repeatable) as a dict; VALUE is read as YAML (``true``,
    ``0.01``, ``auto``). The target checks the keys and values."""
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise AutoCompressError(f"--target-option {pair!r}: give KEY=VALUE")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


_TARGET_OPTION = typer.Option(
    "--target-option",
    help="A target option KEY=VALUE (repeatable), e.g. reduce_range=auto, linear=dynamic",
)
_DEVICE = typer.Option(
    help="Where the student trains: auto (CUDA when PyTorch sees one), cpu, cuda or cuda:N; "
    "the artifact is measured on the target's runtime either way"
)
_RUN_DIR = typer.Argument(help="Run directory")
_TRACKING_URI = typer.Option(help="MLflow tracking URI")
_PRECISION = typer.Option(help="Fine-tuning precision: fp32, bf16 or fp16 (fp16: CUDA only)")
_IMPORTANCE = typer.Option(
    help=f"Pruning importance: {', '.join(sorted(IMPORTANCES))}, or a criterion the task's "
    "module registers (register_importance)"
)


def _stage_printer(label: str):
    """A rich status line showing the current stage; returns (context manager, callback)."""
    from rich.console import Console

    console = Console(stderr=True)
    status = console.status(f"{label}: starting")

    def on_stage(stage: str) -> None:
        status.update(f"{label}: {stage}")

    return status, on_stage


@app.command()
@_user_errors
def apply(
    task: Annotated[
        str, typer.Option(help="Task spec: path/to/file.py:function or pkg.mod:function")
    ],
    policy: Annotated[Path, typer.Option(help="Policy JSON file")],
    out: Annotated[Path, typer.Option(help="Output directory for the deployable model")],
    target: Annotated[str, typer.Option(help="Deployment target")] = "torch",
    importance: Annotated[str, _IMPORTANCE] = "taylor",
    threads: Annotated[int, typer.Option(help="Intra-op threads for latency")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed repeats for latency (>= 20)")] = 30,
    seed: Annotated[int, typer.Option(help="Seed for pruning and fine-tuning")] = 0,
    max_layer_drop: Annotated[
        float | None,
        typer.Option(
            help="onnxruntime: fall a layer back to weight-only when its int8 "
            "compute costs more accuracy than this (0.01 = 1 point)"
        ),
    ] = None,
    target_option: Annotated[list[str] | None, _TARGET_OPTION] = None,
    device: Annotated[str, _DEVICE] = "auto",
    precision: Annotated[str, _PRECISION] = "fp32",
) -> None:
    """Apply one policy: write DIR/model.*, DIR/policy.json and DIR/metrics.json."""
    from autocompress import api

    options = target_options(target_option)
    if max_layer_drop is not None:
        options["max_layer_drop"] = max_layer_drop
    status, on_stage = _stage_printer("apply")
    with status:
        result = api.apply(
            task,
            policy,
            out_dir=out,
            target=target,
            importance=importance,
            threads=threads,
            repeats=repeats,
            seed=seed,
            target_options=options,
            device=device,
            precision=precision,
            on_stage=on_stage,
        )
    m = result.metrics
    typer.echo(json.dumps({k: v for k, v in m.items() if k != "layers"}, indent=2))
    typer.echo(f"wrote {out / m['artifact']}, {out / 'policy.json'}, {out / 'metrics.json'}")


@app.command("search")
@_user_errors
def search_cmd(
    config: Annotated[Path, typer.Argument(help="Search config YAML")],
    trials: Annotated[int | None, typer.Option(help="Total trials to reach")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<name>)")] = None,
    backend: Annotated[str | None, typer.Option(help="local or ray")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the search in the run directory")] = False,
    seed: Annotated[int | None, typer.Option(help="Sampler seed")] = None,
    sampler: Annotated[
        str | None,
        typer.Option(
            help="A registered sampler: tpe, nsga2, random, or one added by register_sampler"
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster address (or RAY_ADDRESS)")
    ] = None,
    tracking_uri: Annotated[str | None, _TRACKING_URI] = None,
    tracking: Annotated[bool, typer.Option(help="Track the search in MLflow")] = True,
    verbose: Annotated[bool, typer.Option(help="Show Ray Tune's own console output")] = False,
    device: Annotated[str | None, _DEVICE] = None,
    precision: Annotated[str | None, _PRECISION] = None,
    budget: Annotated[
        str | None,
        typer.Option(help="Wall-clock budget instead of --trials, e.g. 30m, 2h, 1h30m"),
    ] = None,
) -> None:
    """Search compression policies; writes trials.jsonl, pareto.json and the report."""
    from autocompress.api import search_config
    from autocompress.study.failures import no_feasible_trial
    from autocompress.study.records import TrialState

    result = search_config(
        config,
        resume=resume,
        verbose=verbose,
        tracking=tracking,
        tracking_uri=tracking_uri,
        budget=budget,
        trials=trials,
        precision=precision,
        out=out,
        backend=backend,
        seed=seed,
        sampler=sampler,
        address=address,
        device=device,
    )
    failed = sum(r["state"] == TrialState.FAILED for r in result.trials)
    cfg = result.config
    asked = f"budget {cfg.budget}" if cfg.budget else f"{cfg.trials} trials asked"
    typer.echo(
        f"{asked}, {len(result.trials)} recorded ({failed} failed), "
        f"{len(result.pareto)} on the Pareto front"
    )
    from autocompress.measure.metrics import summary

    for rec in result.pareto:
        polished = " (polished)" if rec.get("polished") else ""
        typer.echo(f"  #{rec['number']}{polished}: {summary(rec['metrics'])}")
    typer.echo(f"wrote {result.run_dir / 'pareto.json'} and {result.run_dir / 'report.html'}")
    # a polish may rescue a search whose trials all missed the accuracy bound: the front decides
    unmet = None if result.pareto else no_feasible_trial(result.trials)
    if unmet:
        raise AutoCompressError(f"{result.run_dir}: {unmet}")


@app.command("inspect")
@_user_errors
def inspect_cmd(
    task: Annotated[str, typer.Option(help="Task spec: path/to/file.py:function")],
    space: Annotated[str, typer.Option(help="Search-space preset name or YAML path")] = "refine",
    target: Annotated[str, typer.Option(help="Deployment target (modes per bit-width)")] = "torch",
    target_option: Annotated[list[str] | None, _TARGET_OPTION] = None,
) -> None:
    """Print the model's layers, what the space makes of each (with each bit-width's mode on
    the target), and the space's dimension."""
    from autocompress import api

    options = target_options(target_option)
    typer.echo(api.inspect(task, space=space, target=target, target_options=options))


@app.command("report")
@_user_errors
def report_cmd(run_dir: Annotated[Path, _RUN_DIR]) -> None:
    """Rebuild report.html and pareto.png from a run directory."""
    from autocompress import api

    for path in api.report(run_dir):
        typer.echo(f"wrote {path}")


@app.command("export")
@_user_errors
def export_cmd(
    run_dir: Annotated[Path, _RUN_DIR],
    out: Annotated[Path, typer.Option(help="Output directory")],
    trial: Annotated[int | None, typer.Option(help="Trial number to export")] = None,
    pick: Annotated[
        bool, typer.Option(help="Pick a Pareto point within --max-accuracy-drop")
    ] = False,
    max_accuracy_drop: Annotated[
        float, typer.Option(help="Bound for --pick (0.01 = 1 point)")
    ] = 0.01,
    by: Annotated[
        str,
        typer.Option(
            help="--pick the best by this metric (size, latency, or any registered metric name)"
        ),
    ] = "size",
    format: Annotated[
        str,
        typer.Option(
            "--format", help="torch, onnx, openvino, executorch (any registered target's)"
        ),
    ] = "torch",
    target: Annotated[
        str | None,
        typer.Option(help="A several-target search: export the artifact of this target"),
    ] = None,
) -> None:
    """Write a trial's deployable model with its policy.json and metrics.json."""
    from autocompress import api
    from autocompress.measure.metrics import summary

    if (trial is None) == (not pick):
        raise AutoCompressError("give either --trial N or --pick")
    number, metrics, out = api.export(
        run_dir,
        out=out,
        trial=trial,
        max_accuracy_drop=max_accuracy_drop,
        by=by,
        format=format,
        target=target,
    )
    typer.echo(
        f"trial {number}: {summary(metrics)} ({metrics['target']}, {metrics['artifact']}) -> {out}"
    )


@app.command("compare")
@_user_errors
def compare_cmd(
    sources: Annotated[
        list[str], typer.Argument(help="Run directories or MLflow experiment names")
    ],
    out: Annotated[Path, typer.Option(help="Where compare.html / compare.png go")] = Path(
        "compare"
    ),
    tracking_uri: Annotated[str | None, _TRACKING_URI] = None,
) -> None:
    """Compare searches side by side: counts, front size, best points, hypervolume, fronts plot."""
    from autocompress import api
    from autocompress.reporting.comparison import format_table

    rows, html, png = api.compare(*sources, out=out, tracking_uri=tracking_uri)
    typer.echo(format_table(rows))
    typer.echo(f"wrote {html} and {png}")


@app.command("sync")
@_user_errors
def sync_cmd(
    run_dir: Annotated[Path, _RUN_DIR],
    tracking_uri: Annotated[str | None, _TRACKING_URI] = None,
) -> None:
    """Upload to MLflow the trials of a run directory that are not tracked yet."""
    from autocompress import api

    n, uri = api.sync(run_dir, tracking_uri=tracking_uri)
    typer.echo(f"uploaded {n} trial(s) to {uri}")


def main() -> None:
    app(prog_name="autocompress")


if __name__ == "__main__":
    sys.exit(main())
