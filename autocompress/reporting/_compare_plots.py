"""The comparison's plots: every search's trials and Pareto front, one metric against another
(accuracy against size by default; the axes are the searches' shared objectives, labelled and
scaled as the metric registry says).

One interactive HTML figure (plotly) and one PNG (matplotlib, no pyplot), each search in its
own colour; plotly and matplotlib are imported inside the functions that draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from autocompress.measure.metrics import METRICS
from autocompress.study.pareto import staircase
from autocompress.study.records import TrialState


class Plotted(Protocol):
    """What a plot needs of a search (``compare._Search`` has it)."""

    label: str
    records: list[dict[str, Any]]
    front: list[dict[str, Any]]  # metrics of the Pareto points


def _series(
    search: Plotted, x: str, y: str
) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(x, y) of all complete trials and of the front, the front sorted by x.

    The front may have more objectives than the two plotted; its points all get a marker, the
    staircase line joins those not beaten on both."""
    complete = [
        r.get("metrics") or {} for r in search.records if r.get("state") == TrialState.COMPLETE
    ]

    def points(metrics: Sequence[dict[str, Any]]) -> list[tuple[float, float]]:
        return [
            (float(m[x]), float(m[y]))
            for m in metrics
            if m.get(x) is not None and m.get(y) is not None
        ]

    return points(complete), sorted(points(search.front))


def _title(name: str) -> str:
    metric = METRICS.get(name)
    return f"{name} ({metric.unit})" if metric is not None and metric.unit else name


def _log(name: str) -> bool:
    """Sizes and counts span decades: a log axis (the unit-less ratios and accuracy do not)."""
    metric = METRICS.get(name)
    return metric is not None and metric.unit not in ("", "x")


def _colours(n: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab10"]
    return [to_hex(palette(i % 10)) for i in range(n)]


def plot_html(
    searches: Sequence[Plotted], path: Path, *, x: str = "size_bytes", y: str = "accuracy"
) -> Path:
    import plotly.graph_objects as go

    figure = go.Figure()
    for search, colour in zip(searches, _colours(len(searches)), strict=True):
        every, front = _series(search, x, y)
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in every],
                y=[p[1] for p in every],
                mode="markers",
                marker={"color": colour, "opacity": 0.3, "size": 6},
                name=f"{search.label} (all complete)",
                legendgroup=search.label,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in front],
                y=[p[1] for p in front],
                mode="markers",
                marker={"color": colour, "size": 9},
                name=f"{search.label} (Pareto)",
                legendgroup=search.label,
            )
        )
        steps = staircase(front)
        figure.add_trace(
            go.Scatter(
                x=[p[0] for p in steps],
                y=[p[1] for p in steps],
                mode="lines",
                line={"color": colour, "shape": "hv"},
                showlegend=False,
                legendgroup=search.label,
                hoverinfo="skip",
            )
        )
    figure.update_layout(
        title=f"Pareto fronts: {y} vs {x}",
        xaxis={"title": _title(x), "type": "log" if _log(x) else "linear"},
        yaxis={"title": _title(y), "type": "log" if _log(y) else "linear"},
        template="plotly_white",
    )
    figure.write_html(path, include_plotlyjs="directory")
    return path


def plot_png(
    searches: Sequence[Plotted], path: Path, *, x: str = "size_bytes", y: str = "accuracy"
) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    for search, colour in zip(searches, _colours(len(searches)), strict=True):
        every, front = _series(search, x, y)
        if every:
            ax.scatter(*zip(*every, strict=True), color=colour, alpha=0.3, s=14)
        if front:
            ax.scatter(*zip(*front, strict=True), color=colour, s=30, label=search.label)
            ax.step(*zip(*staircase(front), strict=True), where="post", color=colour)
    ax.set_xscale("log" if _log(x) else "linear")
    ax.set_yscale("log" if _log(y) else "linear")
    ax.set_xlabel(_title(x))
    ax.set_ylabel(_title(y))
    ax.set_title(f"Pareto fronts: {y} vs {x}")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
