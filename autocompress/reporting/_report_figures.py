"""The report's figures: plotly scatter plots, hypervolume, heat maps, and the static PNG.

Plotly and matplotlib are imported inside the functions that draw.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autocompress.measure.directions import Direction
from autocompress.reporting._report_data import RunData, axis, fmt, hover, layer_table, shown_values
from autocompress.study.pareto import front_2d, hypervolume_history
from autocompress.study.rundir import atomic_write_bytes

PARETO_DIV_ID = "pareto-front"
PARETO_TRACE_UID = "pareto"  # plotly renders this trace as <g class="trace scatter tracepareto">


# --- plotly figures ---------------------------------------------------------------------------


def _figure_html(
    fig: Any, div_id: str, height: int, width: int | None = None, *, top: int = 50
) -> str:
    # A fixed width for plots laid out side by side: each one renders before its neighbours
    # exist, so an autosized plot would take the full page width and be clipped.
    fig.update_layout(height=height, width=width, margin={"l": 60, "r": 20, "t": top, "b": 50})
    return fig.to_html(
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        default_height=f"{height}px",
        default_width=f"{width}px" if width else "100%",
        config={"displaylogo": False, "responsive": width is None},
    )


def _scatter_2d(
    run: RunData, x: tuple[str, str], y: tuple[str, str], div_id: str, *, title: str = ""
) -> str:
    """``y`` against ``x``: all complete trials, the front, the starts, the teacher; ``title``
    goes before the axes' names (a target's name)."""
    import plotly.graph_objects as go

    complete = run.complete()
    baselines = [r for r in complete if r.get("start")]
    fig = go.Figure()

    def trace(name: str, uid: str, records: Sequence[Mapping[str, Any]], **style: Any) -> None:
        fig.add_trace(go.Scatter(name=name, uid=uid, **_xyz(run, records, x[0], y[0]), **style))

    def points(name: str, uid: str, records: Sequence[Mapping[str, Any]], **style: Any) -> None:
        trace(name, uid, records, hovertext=[hover(r) for r in records], hoverinfo="text", **style)

    points(
        "all complete trials",
        "all",
        complete,
        mode="markers",
        marker={"color": "lightgray", "size": 7, "opacity": 0.6},
    )
    trace(
        "front in this projection",
        "front-line",
        front_2d(run.pareto, x, y, run.teacher),
        mode="lines",
        line={"color": "crimson", "width": 1, "shape": "hv"},
        hoverinfo="skip",
    )
    points(
        "Pareto points",
        PARETO_TRACE_UID,
        run.pareto,
        mode="markers",
        marker={"color": "crimson", "size": 10, "line": {"color": "black", "width": 1}},
    )
    if baselines:
        points(
            "start policies",
            "baselines",
            baselines,
            mode="markers+text",
            text=[str(r["start"]) for r in baselines],
            textposition="top center",
            marker={"symbol": "diamond", "color": "royalblue", "size": 11},
        )
    if all(run.teacher.get(n) is not None for n in (x[0], y[0])):
        trace(
            "teacher",
            "teacher",
            _teacher_points(run),
            mode="markers+text",
            text=["teacher"],
            textposition="bottom center",
            marker={"symbol": "star", "color": "gold", "size": 16, "line": {"width": 1}},
            hoverinfo="text",
            hovertext=[_teacher_hover(run)],
        )
    fig.update_layout(
        title=f"{title + ': ' if title else ''}{axis(y[0])[0]} vs {axis(x[0])[0]}",
        xaxis_title=f"{axis(x[0])[0]} ({x[1]})",
        yaxis_title=f"{axis(y[0])[0]} ({y[1]})",
    )
    fig.update_layout(
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        title={"y": 0.98, "yanchor": "top"},
    )
    return _figure_html(fig, div_id, 500, 640, top=110)


def _coords(run: RunData, records: Sequence[Mapping[str, Any]], *names: str) -> list[list[float]]:
    """Each named metric of ``records`` as the report shows it (one list per axis)."""
    return [shown_values(records, name, run.teacher) for name in names]


def _xyz(run: RunData, records: Sequence[Mapping[str, Any]], *names: str) -> dict[str, list[float]]:
    """Plotly's ``x``, ``y`` (and ``z``) of ``records`` on the named metrics."""
    return dict(zip("xyz", _coords(run, records, *names), strict=False))


def _teacher_points(run: RunData) -> list[dict[str, Any]]:
    """The teacher as the one record a trace shows."""
    return [{"metrics": run.teacher, "teacher": run.teacher}]


def _teacher_hover(run: RunData) -> str:
    return "<b>teacher</b><br>" + "<br>".join(
        f"{k}={fmt(v)}" for k, v in run.teacher.items() if not isinstance(v, dict)
    )


def _scatter_3d(run: RunData) -> str:
    import plotly.graph_objects as go

    names = [n for n, _ in run.objectives]
    complete = run.complete()
    fig = go.Figure()
    for label, records, marker in (
        ("all complete trials", complete, {"color": "lightgray", "size": 3, "opacity": 0.5}),
        ("Pareto points", run.pareto, {"color": "crimson", "size": 5}),
        (
            "start policies",
            [r for r in complete if r.get("start")],
            {"color": "royalblue", "size": 6, "symbol": "diamond"},
        ),
    ):
        fig.add_trace(
            go.Scatter3d(
                name=label,
                **_xyz(run, records, *names),
                mode="markers",
                marker=marker,
                hovertext=[hover(r) for r in records],
                hoverinfo="text",
            )
        )
    if all(run.teacher.get(n) is not None for n in names):
        fig.add_trace(
            go.Scatter3d(
                name="teacher",
                **_xyz(run, _teacher_points(run), *names),
                mode="markers+text",
                text=["teacher"],
                marker={"color": "gold", "size": 7, "symbol": "cross"},
                hovertext=[_teacher_hover(run)],
                hoverinfo="text",
            )
        )
    fig.update_layout(
        title="Pareto front (3-D)",
        scene={
            "xaxis_title": axis(names[0])[0],
            "yaxis_title": axis(names[1])[0],
            "zaxis_title": axis(names[2])[0],
        },
    )
    return _figure_html(fig, "pareto-3d", 600)


def _hypervolume_plot(run: RunData) -> str:
    names = [n for n, _ in run.objectives]
    missing = [n for n in names if not run.teacher.get(n)]
    if missing:
        return f"<p>No hypervolume: pareto.json 'teacher' lacks {', '.join(missing)}.</p>"
    history = hypervolume_history(run.records, run.objectives, run.teacher)
    if not history:
        return "<p>No hypervolume: no complete trials yet.</p>"
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Scatter(
            x=[n for n, _ in history],
            y=[v for _, v in history],
            mode="lines+markers",
            line={"shape": "hv"},
            name="hypervolume",
        )
    )
    fig.update_layout(
        title="Hypervolume of the front so far (normalized to the teacher)",
        xaxis_title="trial number (complete trials)",
        yaxis_title="hypervolume",
    )
    return _figure_html(fig, "hypervolume", 380)


def _heatmap(run: RunData, key: str, title: str, colorscale: str) -> str:
    layer_names: list[str] = []
    for trial in run.pareto:
        for name in layer_table(trial.get("metrics") or {}):
            if name not in layer_names:
                layer_names.append(name)
    if not run.pareto or not layer_names:
        return f"<p>No per-layer {key} values recorded for the Pareto points.</p>"
    import plotly.graph_objects as go

    z = [
        [(layer_table(t.get("metrics") or {}).get(n) or {}).get(key) for n in layer_names]
        for t in run.pareto
    ]
    rows = [f"#{t['number']}" for t in run.pareto]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=layer_names,
            y=rows,
            colorscale=colorscale,
            texttemplate="%{z}",
            hovertemplate="trial %{y}<br>%{x}<br>" + key + "=%{z}<extra></extra>",
        )
    )
    fig.update_layout(title=title, yaxis={"type": "category", "autorange": "reversed"})
    return _figure_html(fig, f"heatmap-{key}", 160 + 28 * len(rows))


# --- static PNG -------------------------------------------------------------------------------


def write_pareto_png(run: RunData, path: Path) -> Path:
    """Accuracy-like objective against each cost objective: all trials, front, baselines, teacher."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maximized = [o for o in run.objectives if o[1] == Direction.MAXIMIZE] or run.objectives[:1]
    y = maximized[0]
    xs = [o for o in run.objectives if o != y]
    complete = run.complete()
    baselines = [r for r in complete if r.get("start")]
    fig = Figure(figsize=(6 * len(xs), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, x in zip(fig.subplots(1, len(xs), squeeze=False)[0], xs, strict=True):
        ax.scatter(
            *_coords(run, complete, x[0], y[0]),
            s=14,
            c="lightgray",
            label="trials",
        )
        line = front_2d(run.pareto, x, y, run.teacher)
        ax.step(
            *_coords(run, line, x[0], y[0]),
            where="post",
            c="crimson",
            lw=1,
        )
        ax.scatter(
            *_coords(run, run.pareto, x[0], y[0]),
            s=36,
            c="crimson",
            edgecolors="black",
            label="Pareto points",
            zorder=3,
        )
        if baselines:
            bxs, bys = _coords(run, baselines, x[0], y[0])
            ax.scatter(
                bxs,
                bys,
                marker="D",
                s=40,
                c="royalblue",
                label="baselines",
                zorder=4,
            )
            for r, bx, by in zip(baselines, bxs, bys, strict=True):
                ax.annotate(str(r["start"]), (bx, by), textcoords="offset points", xytext=(4, 4))
        if all(run.teacher.get(n) is not None for n in (x[0], y[0])):
            ax.scatter(
                *_coords(run, _teacher_points(run), x[0], y[0]),
                marker="*",
                s=180,
                c="gold",
                edgecolors="black",
                label="teacher",
                zorder=5,
            )
        ax.set_xlabel(axis(x[0])[0])
        ax.set_ylabel(axis(y[0])[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{run.name}: Pareto front")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return atomic_write_bytes(path, buffer.getvalue())
