"""The ``autocompress`` command line. User mistakes print one line and exit with code 2."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

from .errors import AutoCompressError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Search compression policies for trained PyTorch models.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Search compression policies for trained PyTorch models."""


def _user_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn AutoCompressError (and files that cannot be read) into one line and exit 2."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (AutoCompressError, FileNotFoundError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=2) from None

    return wrapper


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
    task: Annotated[str, typer.Option(help="Task spec: path/to/file.py:function or pkg.mod:function")],
    policy: Annotated[Path, typer.Option(help="Policy JSON file")],
    out: Annotated[Path, typer.Option(help="Output directory for the deployable model")],
    target: Annotated[str, typer.Option(help="Deployment target")] = "torch",
    importance: Annotated[str, typer.Option(help="Pruning importance: taylor or magnitude")] = "taylor",
    threads: Annotated[int, typer.Option(help="Intra-op threads for latency")] = 1,
    repeats: Annotated[int, typer.Option(help="Timed repeats for latency (>= 20)")] = 30,
    seed: Annotated[int, typer.Option(help="Seed for pruning and fine-tuning")] = 0,
) -> None:
    """Apply one policy: write DIR/model.*, DIR/policy.json and DIR/metrics.json."""
    from .compress import MeasureSettings, compress
    from .policy import load_policy
    from .task import load_task

    pol = load_policy(policy)
    if repeats < 20:
        raise AutoCompressError(f"--repeats {repeats}: latency needs at least 20 timed repeats")
    status, on_stage = _stage_printer("apply")
    with status:
        on_stage("loading task")
        job = load_task(task)
        result = compress(
            job,
            pol,
            out_dir=out,
            target=target,
            importance=importance,
            seed=seed,
            settings=MeasureSettings(threads=threads, repeats=repeats),
            on_stage=on_stage,
        )
    m = result.metrics
    typer.echo(json.dumps({k: v for k, v in m.items() if k != "layers"}, indent=2))
    typer.echo(f"wrote {out / m['artifact']}, {out / 'policy.json'}, {out / 'metrics.json'}")


def main() -> None:
    app(prog_name="autocompress")


if __name__ == "__main__":
    sys.exit(main())
