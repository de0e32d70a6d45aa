"""Build ``report.html`` and ``pareto.png`` from a run directory alone.

Reads ``trials.jsonl``, ``pareto.json`` and (if present) ``config.yaml``; writes the HTML report
with ``plotly.min.js`` beside it (so it opens offline) and a static matplotlib figure.
Plotly and matplotlib are imported inside the functions that draw, so ``import autocompress``
stays lean.

>>> html_path, png_path = write_report("runs/digits-cnn")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import io
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AutoCompressError
from .metrics import METRICS, comparable
from .pareto import front_2d, hypervolume_history
from .rundir import STATES, RunDir, atomic_write_bytes, atomic_write_text, read_jsonl

PARETO_DIV_ID = "pareto-front"
PARETO_TRACE_UID = "pareto"  # plotly renders this trace as <g class="trace scatter tracepareto">
# metrics shown in the Pareto table, in this order, after the objectives
_TABLE_METRICS = (
    "accuracy",
    "size_bytes",
    "latency_ms",
    "latency_p90_ms",
    "speedup",
    "compression",
)


@dataclass(frozen=True)
class RunData:
    """Everything a report needs, as read from one run directory."""

    run_dir: Path
    name: str
    objectives: list[tuple[str, str]]  # (metric name, "minimize" | "maximize")
    teacher: dict[str, float]
    records: list[dict[str, Any]]
    pareto: list[dict[str, Any]]
    config_text: str | None

    def complete(self) -> list[dict[str, Any]]:
        """Complete trials that hold every objective metric, by trial number."""
        names = [n for n, _ in self.objectives]
        return [
            r
            for r in self.records
            if r.get("state") == "complete"
            and all((r.get("metrics") or {}).get(n) is not None for n in names)
        ]


def load_run(run_dir: str | Path) -> RunData:
    """Read ``trials.jsonl``, ``pareto.json`` and optional ``config.yaml`` of a run directory."""
    rd = RunDir(run_dir)
    pareto = rd.read_pareto()
    if not rd.trials_file.is_file():
        raise AutoCompressError(
            f"{rd.trials_file} not found; a report needs a run directory written by "
            "`autocompress search`"
        )
    try:
        objectives = [(o["name"], o["direction"]) for o in pareto.get("objectives", [])]
    except (KeyError, TypeError):
        raise AutoCompressError(
            f"{rd.path / 'pareto.json'}: 'objectives' must list {{name, direction}} objects"
        ) from None
    if len(objectives) < 2:
        raise AutoCompressError(
            f"{rd.path / 'pareto.json'}: 'objectives' must list at least 2 objectives, got {objectives!r}"
        )
    config_path = rd.path / "config.yaml"
    return RunData(
        run_dir=rd.path,
        name=str(pareto.get("name") or rd.path.name),
        objectives=objectives,
        teacher=dict(pareto.get("baseline") or {}),
        records=sorted(read_jsonl(rd.trials_file), key=lambda r: r["number"]),
        pareto=sorted(pareto.get("trials", []), key=lambda t: t["number"]),
        config_text=config_path.read_text() if config_path.is_file() else None,
    )


def write_report(run_dir: str | Path, *, inline_plotlyjs: bool = False) -> tuple[Path, Path]:
    """Write ``report.html`` (plus ``plotly.min.js``) and ``pareto.png`` into ``run_dir``.

    ``inline_plotlyjs=True`` embeds plotly.js (~5 MB) for a single-file report instead.
    Returns ``(html_path, png_path)``.
    """
    run = load_run(run_dir)
    html_path = run.run_dir / "report.html"
    png_path = run.run_dir / "pareto.png"
    atomic_write_text(html_path, _render_html(run, inline_plotlyjs=inline_plotlyjs))
    write_pareto_png(run, png_path)
    return html_path, png_path


# --- per-trial summaries ---------------------------------------------------------------------


def _layers(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(metrics.get("layers") or {})


def policy_summary(policy: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """alpha, T, lambda, epochs from the policy; mean prune and bits histogram from the layers."""
    distill = policy.get("distill") or {}
    finetune = policy.get("finetune") or {}
    layers = _layers(metrics)
    prunes = [float(v["prune"]) for v in layers.values() if v.get("prune") is not None]
    bits = Counter(int(v["bits"]) for v in layers.values() if v.get("bits") is not None)
    return {
        "alpha": distill.get("alpha"),
        "T": distill.get("temperature"),
        "lambda": finetune.get("lambda"),
        "epochs": finetune.get("epochs"),
        "mean_prune": statistics.fmean(prunes) if prunes else None,
        "bits": ", ".join(f"{b}b×{n}" for b, n in sorted(bits.items())) or "-",
        **strategy_summary(policy, layers),
    }


def strategy_summary(
    policy: Mapping[str, Any], layers: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """Fine-tuning scope, feature weight, and the quantization scopes the layers achieved."""
    scopes = Counter(v["scope_achieved"] for v in layers.values() if v.get("scope_achieved"))
    return {
        "ft_scope": (policy.get("finetune") or {}).get("scope", "full"),
        "feature_weight": (policy.get("distill") or {}).get("feature_weight"),
        "quant_scope": ", ".join(f"{k}×{n}" for k, n in sorted(scopes.items())) or "-",
    }


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def _hover(record: Mapping[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    s = policy_summary(record.get("policy") or {}, metrics)
    head = f"<b>trial #{record['number']}</b>"
    if record.get("baseline"):
        head += f" (baseline: {html.escape(str(record['baseline']))})"
    shown = [m for m in METRICS if m in metrics]
    pairs = [f"{m}={_fmt(metrics[m], METRICS[m].spec)}{METRICS[m].unit}" for m in shown]
    lines = [
        head,
        f"α={_fmt(s['alpha'])}  T={_fmt(s['T'])}  λ={_fmt(s['lambda'])}  epochs={_fmt(s['epochs'])}",
        f"mean prune={_fmt(s['mean_prune'], '.2f')}  bits: {s['bits']}",
        f"fine-tune {s['ft_scope']}  feature w={_fmt(s['feature_weight'])}  "
        f"scope: {s['quant_scope']}",
    ]
    lines += ["  ".join(pairs[i : i + 2]) for i in range(0, len(pairs), 2)]
    return "<br>".join(lines)


def _axis(name: str) -> tuple[str, float]:
    metric = METRICS.get(name)
    return (metric.axis, metric.scale) if metric is not None else (name, 1.0)


def _values(
    records: Sequence[Mapping[str, Any]], name: str, teacher: Mapping[str, Any]
) -> list[float]:
    """Display values on the run teacher's scale (timings compared as ratios to their teacher)."""
    scale = _axis(name)[1]
    return [float(comparable(r, name, teacher) or 0.0) * scale for r in records]


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


def _scatter_2d(run: RunData, x: tuple[str, str], y: tuple[str, str], div_id: str) -> str:
    import plotly.graph_objects as go

    complete = run.complete()
    baselines = [r for r in complete if r.get("baseline")]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            name="all complete trials",
            uid="all",
            x=_values(complete, x[0], run.teacher),
            y=_values(complete, y[0], run.teacher),
            mode="markers",
            marker={"color": "lightgray", "size": 7, "opacity": 0.6},
            hovertext=[_hover(r) for r in complete],
            hoverinfo="text",
        )
    )
    line = front_2d(run.pareto, x, y, run.teacher)
    fig.add_trace(
        go.Scatter(
            name="front in this projection",
            uid="front-line",
            x=_values(line, x[0], run.teacher),
            y=_values(line, y[0], run.teacher),
            mode="lines",
            line={"color": "crimson", "width": 1, "shape": "hv"},
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            name="Pareto points",
            uid=PARETO_TRACE_UID,
            x=_values(run.pareto, x[0], run.teacher),
            y=_values(run.pareto, y[0], run.teacher),
            mode="markers",
            marker={"color": "crimson", "size": 10, "line": {"color": "black", "width": 1}},
            hovertext=[_hover(r) for r in run.pareto],
            hoverinfo="text",
        )
    )
    if baselines:
        fig.add_trace(
            go.Scatter(
                name="baseline policies",
                uid="baselines",
                x=_values(baselines, x[0], run.teacher),
                y=_values(baselines, y[0], run.teacher),
                mode="markers+text",
                text=[str(r["baseline"]) for r in baselines],
                textposition="top center",
                marker={"symbol": "diamond", "color": "royalblue", "size": 11},
                hovertext=[_hover(r) for r in baselines],
                hoverinfo="text",
            )
        )
    if all(run.teacher.get(n) is not None for n in (x[0], y[0])):
        fig.add_trace(
            go.Scatter(
                name="teacher",
                uid="teacher",
                x=_values([{"metrics": run.teacher, "teacher": run.teacher}], x[0], run.teacher),
                y=_values([{"metrics": run.teacher, "teacher": run.teacher}], y[0], run.teacher),
                mode="markers+text",
                text=["teacher"],
                textposition="bottom center",
                marker={"symbol": "star", "color": "gold", "size": 16, "line": {"width": 1}},
                hoverinfo="text",
                hovertext=[_teacher_hover(run)],
            )
        )
    fig.update_layout(
        title=f"{_axis(y[0])[0]} vs {_axis(x[0])[0]}",
        xaxis_title=f"{_axis(x[0])[0]} ({x[1]})",
        yaxis_title=f"{_axis(y[0])[0]} ({y[1]})",
    )
    fig.update_layout(
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
        title={"y": 0.98, "yanchor": "top"},
    )
    return _figure_html(fig, div_id, 500, 640, top=110)


def _teacher_hover(run: RunData) -> str:
    return "<b>teacher</b><br>" + "<br>".join(
        f"{k}={_fmt(v)}" for k, v in run.teacher.items() if not isinstance(v, dict)
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
            "baseline policies",
            [r for r in complete if r.get("baseline")],
            {"color": "royalblue", "size": 6, "symbol": "diamond"},
        ),
    ):
        fig.add_trace(
            go.Scatter3d(
                name=label,
                x=_values(records, names[0], run.teacher),
                y=_values(records, names[1], run.teacher),
                z=_values(records, names[2], run.teacher),
                mode="markers",
                marker=marker,
                hovertext=[_hover(r) for r in records],
                hoverinfo="text",
            )
        )
    if all(run.teacher.get(n) is not None for n in names):
        t = [{"metrics": run.teacher, "teacher": run.teacher}]
        fig.add_trace(
            go.Scatter3d(
                name="teacher",
                x=_values(t, names[0], run.teacher),
                y=_values(t, names[1], run.teacher),
                z=_values(t, names[2], run.teacher),
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
            "xaxis_title": _axis(names[0])[0],
            "yaxis_title": _axis(names[1])[0],
            "zaxis_title": _axis(names[2])[0],
        },
    )
    return _figure_html(fig, "pareto-3d", 600)


def _hypervolume_plot(run: RunData) -> str:
    names = [n for n, _ in run.objectives]
    missing = [n for n in names if not run.teacher.get(n)]
    if missing:
        return f"<p>No hypervolume: pareto.json 'baseline' lacks {', '.join(missing)}.</p>"
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
        for name in _layers(trial.get("metrics") or {}):
            if name not in layer_names:
                layer_names.append(name)
    if not run.pareto or not layer_names:
        return f"<p>No per-layer {key} values recorded for the Pareto points.</p>"
    import plotly.graph_objects as go

    z = [
        [(_layers(t.get("metrics") or {}).get(n) or {}).get(key) for n in layer_names]
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


# --- HTML sections ----------------------------------------------------------------------------


def _pareto_table(run: RunData) -> str:
    names = list(dict.fromkeys([*(n for n, _ in run.objectives), *_TABLE_METRICS]))
    metric_heads = "".join(f"<th>{html.escape(_axis(n)[0])}</th>" for n in names)
    head = (
        f"<tr><th>trial</th><th>baseline</th>{metric_heads}"
        "<th>α</th><th>T</th><th>λ</th><th>epochs</th><th>mean prune</th><th>bits</th>"
        "<th>fine-tune scope</th><th>feature w</th><th>quant scope</th></tr>"
    )
    by_number = {r["number"]: r for r in run.records}
    rows = []
    for t in run.pareto:
        m = t.get("metrics") or {}
        s = policy_summary(t.get("policy") or {}, m)
        name = t.get("baseline") or by_number.get(t["number"], {}).get("baseline") or ""
        cells = [
            f"#{t['number']}",
            html.escape(str(name)),
            *(_table_cell(n, m.get(n)) for n in names),
            _fmt(s["alpha"]),
            _fmt(s["T"]),
            _fmt(s["lambda"]),
            _fmt(s["epochs"]),
            _fmt(s["mean_prune"], ".2f"),
            html.escape(s["bits"]),
            html.escape(str(s["ft_scope"])),
            _fmt(s["feature_weight"]),
            html.escape(s["quant_scope"]),
        ]
        tds = "".join(f"<td>{c}</td>" for c in cells)
        rows.append(f'<tr class="pareto-row" id="pareto-row-{t["number"]}">{tds}</tr>')
    teacher = ", ".join(f"{k}={_fmt(v)}" for k, v in run.teacher.items())
    return (
        f"<p>Teacher: {html.escape(teacher)}</p>"
        f'<table id="pareto-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _table_cell(name: str, value: Any) -> str:
    metric = METRICS.get(name)
    if metric is None:
        return _fmt(value)
    if name == "size_bytes":  # bytes in the table, exactly
        return _fmt(value, ",")
    return _fmt(value, metric.spec) + ("×" if metric.unit == "x" else "")


def _counts(run: RunData) -> str:
    counts = Counter(r.get("state") for r in run.records)
    items = "".join(
        f'<li><span class="state">{s}</span>: <b id="count-{s}">{counts.get(s, 0)}</b></li>'
        for s in STATES
    )
    failed = [r for r in run.records if r.get("state") == "failed"]
    errors = "".join(
        f"<li>trial #{r['number']}<pre>{html.escape(str(r.get('error') or 'no error recorded'))}</pre></li>"
        for r in failed
    )
    errors_html = f'<h3>Errors of failed trials</h3><ul id="errors">{errors}</ul>' if failed else ""
    return f'<ul id="counts">{items}</ul>{errors_html}'


_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th { background: #f4f4f4; }
pre { background: #f8f8f8; padding: 0.5rem; overflow-x: auto; white-space: pre-wrap; }
.plots { display: flex; flex-wrap: wrap; gap: 1rem; }
"""


def _plotly_script(run: RunData, *, inline: bool) -> str:
    from plotly.offline import get_plotlyjs

    if inline:
        return f'<script type="text/javascript">{get_plotlyjs()}</script>'
    atomic_write_text(run.run_dir / "plotly.min.js", get_plotlyjs())
    return '<script src="plotly.min.js"></script>'


def _render_html(run: RunData, *, inline_plotlyjs: bool) -> str:
    objectives = run.objectives
    pairs = [(a, b) for i, a in enumerate(objectives) for b in objectives[i + 1 :]]
    # Accuracy-like (maximized) objectives go on the y axis, costs on x.
    pairs = [(b, a) if a[1] == "maximize" else (a, b) for a, b in pairs]
    plots = [
        _scatter_2d(run, x, y, PARETO_DIV_ID if i == 0 else f"pareto-{x[0]}-{y[0]}")
        for i, (x, y) in enumerate(pairs)
    ]
    three_d = _scatter_3d(run) if len(objectives) == 3 else ""
    config = (
        f"<details><summary>config.yaml</summary><pre>{html.escape(run.config_text)}</pre></details>"
        if run.config_text
        else ""
    )
    objective_text = ", ".join(f"{d} {n}" for n, d in objectives)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>autocompress report: {html.escape(run.name)}</title>
<style>{_CSS}</style>
{_plotly_script(run, inline=inline_plotlyjs)}
</head>
<body>
<h1>autocompress report: {html.escape(run.name)}</h1>
<p>Objectives: {html.escape(objective_text)}. {len(run.pareto)} Pareto points out of
{len(run.complete())} complete trials.</p>
<h2>Trials</h2>
{_counts(run)}
<h2>Pareto points</h2>
{_pareto_table(run)}
<h2>Pareto front</h2>
<div class="plots">{"".join(f"<div>{p}</div>" for p in plots)}</div>
{three_d}
<h2>Hypervolume over trials</h2>
{_hypervolume_plot(run)}
<h2>Per-layer policy of the Pareto points</h2>
{_heatmap(run, "prune", "prune ratio per layer", "Reds")}
{_heatmap(run, "bits", "bits per layer", "Viridis")}
{config}
</body>
</html>
"""


# --- static PNG -------------------------------------------------------------------------------


def write_pareto_png(run: RunData, path: Path) -> Path:
    """Accuracy-like objective against each cost objective: all trials, front, baselines, teacher."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    maximized = [o for o in run.objectives if o[1] == "maximize"] or run.objectives[:1]
    y = maximized[0]
    xs = [o for o in run.objectives if o != y]
    complete = run.complete()
    baselines = [r for r in complete if r.get("baseline")]
    fig = Figure(figsize=(6 * len(xs), 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, x in zip(fig.subplots(1, len(xs), squeeze=False)[0], xs, strict=True):
        ax.scatter(
            _values(complete, x[0], run.teacher),
            _values(complete, y[0], run.teacher),
            s=14,
            c="lightgray",
            label="trials",
        )
        line = front_2d(run.pareto, x, y, run.teacher)
        ax.step(
            _values(line, x[0], run.teacher),
            _values(line, y[0], run.teacher),
            where="post",
            c="crimson",
            lw=1,
        )
        ax.scatter(
            _values(run.pareto, x[0], run.teacher),
            _values(run.pareto, y[0], run.teacher),
            s=36,
            c="crimson",
            edgecolors="black",
            label="Pareto points",
            zorder=3,
        )
        if baselines:
            ax.scatter(
                _values(baselines, x[0], run.teacher),
                _values(baselines, y[0], run.teacher),
                marker="D",
                s=40,
                c="royalblue",
                label="baselines",
                zorder=4,
            )
            for r, bx, by in zip(
                baselines,
                _values(baselines, x[0], run.teacher),
                _values(baselines, y[0], run.teacher),
                strict=True,
            ):
                ax.annotate(str(r["baseline"]), (bx, by), textcoords="offset points", xytext=(4, 4))
        if all(run.teacher.get(n) is not None for n in (x[0], y[0])):
            t = [{"metrics": run.teacher, "teacher": run.teacher}]
            ax.scatter(
                _values(t, x[0], run.teacher),
                _values(t, y[0], run.teacher),
                marker="*",
                s=180,
                c="gold",
                edgecolors="black",
                label="teacher",
                zorder=5,
            )
        ax.set_xlabel(_axis(x[0])[0])
        ax.set_ylabel(_axis(y[0])[0])
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle(f"{run.name}: Pareto front")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    return atomic_write_bytes(path, buffer.getvalue())
