"""Compare searches side by side: a summary table and their Pareto fronts overlaid.

A source is a run directory (``trials.jsonl`` + ``pareto.json``) or an MLflow experiment name
(read through ``MlflowClient``; one row per search, i.e. per parent run, in it). A run directory
of a search measured on several targets (``targets: [...]``) gives one row per target.

Example::

    rows, html, png = compare(["runs/tpe", "runs/random"], out_dir=Path("compare"))
    print(format_table(rows))
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autocompress.errors import ConfigError
from autocompress.measure.metrics import METRICS
from autocompress.reporting._compare_plots import plot_html, plot_png
from autocompress.reporting._report_data import axis, table_cell
from autocompress.study._polish_plan import with_polish
from autocompress.study.pareto import (
    default_reference,
    front,
    hypervolume,
    normalize,
    on_target,
)
from autocompress.study.records import STATES, TrialState
from autocompress.study.rundir import RunDir, atomic_write_text

__all__ = ["compare", "format_table"]

DEFAULT_OBJECTIVES = tuple(
    {"name": m, "direction": METRICS[m].direction} for m in ("accuracy", "size_bytes", "latency_ms")
)
ACCURACY_TOLERANCE = 0.01  # "within 1 point of the teacher"
COLUMNS = {
    "search": "search",
    "trials": "trials",
    "complete": "complete",
    "infeasible": "infeasible",
    "failed": "failed",
    "pruned": "pruned",
    "pareto_size": "Pareto",
    "teacher_accuracy": "teacher acc",
    "best_accuracy": "best acc",
}
# compare.json keys kept for readers of earlier versions: the same value as best_<metric>
LEGACY_KEYS = {"smallest_size_bytes": "size_bytes", "lowest_latency_ms": "latency_ms"}


def best_key(metric: str) -> str:
    """The row key of a metric's best value within a point of the teacher's accuracy."""
    return f"best_{metric}"


def columns(row: Mapping[str, Any]) -> dict[str, str]:
    """The table's columns: counts, accuracy, the best of each shared objective metric (within
    a point of the teacher: the row's ``best_<metric>`` keys), hypervolume."""
    names = [k.removeprefix("best_") for k in row if k.startswith("best_") and k != "best_accuracy"]
    best = {best_key(n): f"best {axis(n)[0]} (≤1 pt)" for n in names}
    return {**COLUMNS, **best, "hypervolume": "hypervolume"}


@dataclass
class _Search:
    """One search, whatever its source: trial records, its front and its teacher measurements."""

    label: str
    source: str
    records: list[dict[str, Any]]
    front: list[dict[str, Any]]  # metrics of the Pareto points
    objectives: list[dict[str, str]] = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    teacher: dict[str, float] = field(default_factory=dict)


def compare(
    sources: Sequence[str],
    *,
    out_dir: Path,
    tracking_uri: str | None = None,
) -> tuple[list[dict[str, Any]], Path, Path]:
    """Summarize several searches and plot their fronts; return ``(rows, html_path, png_path)``.

    Hypervolume uses each search's own teacher for normalization and one reference point for
    all (see :mod:`autocompress.study.pareto`), over the objectives every search shares.
    """
    if not sources:
        raise ConfigError("compare needs at least one run directory or MLflow experiment name")
    searches = _distinct_labels([s for source in sources for s in _load(source, tracking_uri)])
    objectives = _common_objectives(searches)
    rows = [_row(search, objectives) for search in searches]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "compare.json", json.dumps(rows, indent=2))
    x, y = plot_axes(objectives)
    html = plot_html(searches, out_dir / "compare.html", x=x, y=y)
    png = plot_png(searches, out_dir / "compare.png", x=x, y=y)
    return rows, html, png


def plot_axes(objectives: Sequence[Mapping[str, str]]) -> tuple[str, str]:
    """(x, y) of the fronts plot: accuracy (or the first objective) against the next one."""
    names = [o["name"] for o in objectives]
    y = "accuracy" if "accuracy" in names else names[0]
    rest = [n for n in names if n != y]
    return (rest[0] if rest else y), y


def _distinct_labels(searches: list[_Search]) -> list[_Search]:
    """Searches that share a name (two runs of one config) are labelled by their source too."""
    counts: dict[str, int] = {}
    for search in searches:
        counts[search.label] = counts.get(search.label, 0) + 1
    return [
        replace(s, label=f"{s.label} ({s.source})") if counts[s.label] > 1 else s for s in searches
    ]


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The comparison rows as a rich table rendered to plain text."""
    from rich.console import Console
    from rich.table import Table

    shown = columns(rows[0]) if rows else COLUMNS
    table = Table(title="Search comparison")
    for key, title in shown.items():
        table.add_column(title, justify="left" if key == "search" else "right")
    for row in rows:
        table.add_row(*(_cell(key, row.get(key)) for key in shown))
    console = Console(file=io.StringIO(), width=200, color_system=None, force_terminal=False)
    console.print(table)
    return console.file.getvalue()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------- loading


def _load(source: str, tracking_uri: str | None) -> list[_Search]:
    path = Path(source)
    if (path / "trials.jsonl").is_file():
        return _per_target(_load_run_dir(path))
    if path.exists():
        raise ConfigError(
            f"{source} exists but has no trials.jsonl: pass a search's run directory "
            "or an MLflow experiment name"
        )
    return _load_experiment(source, tracking_uri)


def _load_run_dir(path: Path) -> _Search:
    rd = RunDir(path)
    # the polished figures where a trial was polished, as on the front read from pareto.json
    records = with_polish(rd.records(), rd.polishes())
    pareto: dict[str, Any] = {}
    if (path / "pareto.json").is_file():
        pareto = rd.read_pareto()
        # timings on the run teacher's scale when the search stored them ("compared")
        points = [
            {**(t.get("metrics") or {}), **(t.get("compared") or {})}
            for t in pareto.get("trials", [])
        ]
    else:
        points = _front([r["metrics"] for r in records if r.get("state") == TrialState.COMPLETE])
    teacher = pareto.get("teacher") or _teacher_from(r.get("metrics") or {} for r in records)
    return _Search(
        label=str(pareto.get("name") or path.name),
        source=str(path),
        records=records,
        front=points,
        objectives=list(pareto.get("objectives") or DEFAULT_OBJECTIVES),
        teacher=dict(teacher),
    )


def _per_target(search: _Search) -> list[_Search]:
    """A search measured on several targets: one row per target, labelled ``<name> on <target>``,
    its records, front and teacher as measured on that target."""
    pareto = RunDir(search.source).read_pareto()
    teachers = (pareto.get("teacher") or {}).get("targets") or {}
    fronts = pareto.get("fronts") or {}
    if not teachers or not fronts:
        return [search]
    out = []
    for name, points in fronts.items():
        records = [_on(r, name) for r in search.records]
        front_points = [{**(t.get("metrics") or {}), **(t.get("compared") or {})} for t in points]
        out.append(
            replace(
                search,
                label=f"{search.label} on {name}",
                records=records,
                front=front_points,
                teacher={k: v for k, v in teachers[name].items() if not isinstance(v, dict)},
            )
        )
    return out


def _on(record: dict[str, Any], name: str) -> dict[str, Any]:
    """``record`` on target ``name``; failed there when it completed but that target failed."""
    view = on_target(record, name)
    if view is not None:
        return view
    state = record.get("state", TrialState.COMPLETE)
    return {**record, "state": TrialState.FAILED if state == TrialState.COMPLETE else state}


def _load_experiment(name: str, tracking_uri: str | None) -> list[_Search]:
    import mlflow

    from autocompress.integrations.mlflow import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri, None)
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        raise ConfigError(
            f"{name!r} is neither a run directory (with trials.jsonl) nor an MLflow experiment "
            f"at {uri}: check the path, or pass --tracking-uri"
        )
    runs = _all_runs(client, experiment.experiment_id)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children: dict[str, list[Any]] = {}
    for run in runs:
        if "mlflow.parentRunId" in run.data.tags and "trial.number" in run.data.tags:
            children.setdefault(run.data.tags["mlflow.parentRunId"], []).append(run)
    searches = []
    for parent in sorted(parents, key=lambda r: r.info.start_time or 0):
        kids = children.get(parent.info.run_id, [])
        if not kids:
            continue
        records = [
            {
                "number": int(run.data.tags["trial.number"]),
                "state": run.data.tags.get("state", TrialState.COMPLETE),
                "metrics": dict(run.data.metrics),
                "pareto": run.data.tags.get("pareto") == "true",
            }
            for run in kids
        ]
        records.sort(key=lambda r: r["number"])
        points = [r["metrics"] for r in records if r["pareto"]]
        if not points:  # the search did not finish: take the front of what completed
            points = _front([r["metrics"] for r in records if r["state"] == TrialState.COMPLETE])
        label = name if len(parents) == 1 else f"{name}/{parent.info.run_name}"
        searches.append(
            _Search(
                label=label,
                source=f"mlflow:{name}",
                records=records,
                front=points,
                objectives=_objectives_param(parent.data.params.get("objectives")),
                teacher={  # "teacher.<metric>" (stores written before the rename: "baseline.")
                    key.split(".", 1)[1]: value
                    for run in kids
                    for key, value in run.data.metrics.items()
                    if key.startswith(("teacher.", "baseline."))
                },
            )
        )
    if not searches:
        raise ConfigError(f"MLflow experiment {name!r} at {uri} holds no autocompress trials")
    return searches


def _all_runs(client: Any, experiment_id: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def _objectives_param(text: str | None) -> list[dict[str, str]]:
    """The parent's ``objectives`` param when it holds name/direction pairs, else the default."""
    try:
        value = json.loads(text) if text else None
    except json.JSONDecodeError:
        value = None
    if isinstance(value, list) and all(isinstance(o, dict) and "direction" in o for o in value):
        return value
    return list(DEFAULT_OBJECTIVES)


def _teacher_from(metrics: Any) -> dict[str, float]:
    """The teacher figures a trial's metrics carry (a run directory without pareto.json)."""
    for m in metrics:
        if m.get("teacher"):
            return dict(m["teacher"])
    return {}


# --------------------------------------------------------------------------------- summary


def _common_objectives(searches: Sequence[_Search]) -> list[dict[str, str]]:
    first = searches[0].objectives
    shared = [
        o
        for o in first
        if all(
            any(p["name"] == o["name"] and p["direction"] == o["direction"] for p in s.objectives)
            for s in searches[1:]
        )
    ]
    if not shared:
        raise ConfigError(
            "the searches share no objective (name and direction), so their fronts cannot be "
            "compared: " + "; ".join(f"{s.label}: {s.objectives}" for s in searches)
        )
    return shared


def _row(search: _Search, objectives: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    counts = {state: 0 for state in STATES}
    for record in search.records:
        state = record.get("state", TrialState.COMPLETE)
        counts[state] = counts.get(state, 0) + 1
    complete = [
        r.get("metrics") or {} for r in search.records if r.get("state") == TrialState.COMPLETE
    ]
    accuracies = [m["accuracy"] for m in complete if m.get("accuracy") is not None]
    teacher = search.teacher.get("accuracy")
    close = (
        [m for m in complete if m.get("accuracy", -1.0) >= teacher - ACCURACY_TOLERANCE]
        if teacher is not None
        else []
    )
    shared = [o["name"] for o in objectives if o["name"] != "accuracy"]
    return {
        "search": search.label,
        "source": search.source,
        "trials": len(search.records),
        **{state: counts[state] for state in STATES},
        "pareto_size": len(search.front),
        "teacher_accuracy": teacher,
        "best_accuracy": max(accuracies, default=None),
        **{best_key(name): _best(close, name) for name in shared},
        **{key: _best(close, name) for key, name in LEGACY_KEYS.items()},
        "hypervolume": _hypervolume(search, objectives),
    }


def _best(metrics: Sequence[Mapping[str, Any]], name: str) -> float | None:
    """The best value of ``name`` among ``metrics``, in the registered metric's direction."""
    values = [m[name] for m in metrics if m.get(name) is not None]
    if not values:
        return None
    return min(values) if METRICS[name].direction == "minimize" else max(values)


def _hypervolume(search: _Search, objectives: Sequence[Mapping[str, str]]) -> float | None:
    names = [o["name"] for o in objectives]
    if any(not search.teacher.get(name) for name in names):
        return None  # no teacher measurement to normalize against
    points = [m for m in search.front if all(m.get(name) is not None for name in names)]
    normalized = normalize(points, objectives, search.teacher)
    return hypervolume(normalized, default_reference(objectives))


def _front(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Non-dominated points by the default objectives, for searches without a stored front."""
    return [
        dict(r["metrics"]) for r in front([{"metrics": m} for m in metrics], DEFAULT_OBJECTIVES)
    ]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("teacher_accuracy", "best_accuracy"):
        return f"{value:.4f}"
    if key.startswith("best_"):
        return table_cell(key.removeprefix("best_"), value)
    if key == "hypervolume":
        return f"{value:.4g}"
    return str(value)
