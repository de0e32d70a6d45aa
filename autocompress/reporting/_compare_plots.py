"""The comparison's plots: every search's trials and Pareto front, accuracy against size.

One interactive HTML figure (plotly) and one PNG (matplotlib, no pyplot), each search in its
own colour; plotly and matplotlib are imported inside the functions that draw.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from autocompress.study.pareto import staircase
from autocompress.study.records import TrialState


class Plotted(Protocol):
    """What a plot needs of a search (``compare._Search`` has it)."""

    label: str
    records: list[dict[str, Any]]
    front: list[dict[str, Any]]  # metrics of the Pareto points


def _series(search: Plotted) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """(size_bytes, accuracy) of all complete trials and of the front, the front sorted by size.

    The front may have more objectives than the two plotted; its points all get a marker, the
    staircase line joins those not beaten on both size and accuracy."""
    complete = [
        r.get("metrics") or {} for r in search.records if r.get("state") == TrialState.COMPLETE
    ]
    every = [
        (float(m["size_bytes"]), float(m["accuracy"]))
        for m in complete
        if m.get("size_bytes") is not None and m.get("accuracy") is not None
    ]
    front = sorted(
        (float(m["size_bytes"]), float(m["accuracy"]))
        for m in search.front
        if m.get("size_bytes") is not None and m.get("accuracy") is not None
    )
    return every, front


def _colours(n: int) -> list[str]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    palette = colormaps["tab10"]
    return [to_hex(palette(i % 10)) for i in range(n)]


def plot_html(searches: Sequence[Plotted], path: Path) -> Path:
    import plotly.graph_objects as go

    figure = go.Figure()
    for search, colour in zip(searches, _colours(len(searches)), strict=True):
        every, front = _series(search)
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
        title="Pareto fronts: accuracy vs artifact size",
        xaxis={"title": "size (bytes)", "type": "log"},
        yaxis={"title": "accuracy"},
        template="plotly_white",
    )
    figure.write_html(path, include_plotlyjs="directory")
    return path


def plot_png(searches: Sequence[Plotted], path: Path) -> Path:
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state

    fig = Figure(figsize=(8, 5), dpi=120)
    ax = fig.add_subplot()
    for search, colour in zip(searches, _colours(len(searches)), strict=True):
        every, front = _series(search)
        if every:
            ax.scatter(*zip(*every, strict=True), color=colour, alpha=0.3, s=14)
        if front:
            ax.scatter(*zip(*front, strict=True), color=colour, s=30, label=search.label)
            ax.step(*zip(*staircase(front), strict=True), where="post", color=colour)
    ax.set_xscale("log")
    ax.set_xlabel("size (bytes)")
    ax.set_ylabel("accuracy")
    ax.set_title("Pareto fronts: accuracy vs artifact size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
