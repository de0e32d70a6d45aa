"""Build ``report.html`` and ``pareto.png`` from a run directory alone.

Reads ``trials.jsonl``, ``pareto.json`` and (if present) ``config.yaml``; writes the HTML report
with ``plotly.min.js`` beside it (so it opens offline) and a static matplotlib figure.
Plotly and matplotlib are imported inside the functions that draw, so ``import autocompress``
stays lean.

>>> html_path, png_path = write_report("runs/digits-cnn")  # doctest: +SKIP
"""

from __future__ import annotations

import html
import warnings
from collections import Counter
from pathlib import Path

from autocompress.measure.directions import Direction
from autocompress.reporting._report_data import (
    RunData,
    axis,
    fmt,
    load_run,
    policy_summary,
    table_cell,
    table_metrics,
    target_runs,
)
from autocompress.reporting._report_figures import (
    PARETO_DIV_ID,
    PARETO_TRACE_UID,
    _heatmap,
    _hypervolume_plot,
    _scatter_2d,
    _scatter_3d,
    write_pareto_png,
)
from autocompress.study.records import STATES, TrialState
from autocompress.study.rundir import atomic_write_text

__all__ = [
    "PARETO_DIV_ID",
    "PARETO_TRACE_UID",
    "load_run",
    "write_pareto_png",
    "write_report",
    "write_report_safely",
]


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


# --- HTML sections ----------------------------------------------------------------------------


def _pareto_table(run: RunData) -> str:
    names = table_metrics(run)
    metric_heads = "".join(f"<th>{html.escape(axis(n)[0])}</th>" for n in names)
    head = (
        f"<tr><th>trial</th><th>start</th>{metric_heads}"
        "<th>α</th><th>T</th><th>λ</th><th>epochs</th><th>mean prune</th><th>bits</th>"
        "<th>fine-tune scope</th><th>feature w</th><th>quant scope</th></tr>"
    )
    by_number = {r["number"]: r for r in run.records}
    rows = []
    for t in run.pareto:
        m = t.get("metrics") or {}
        s = policy_summary(t.get("policy") or {}, m)
        name = t.get("start") or by_number.get(t["number"], {}).get("start") or ""
        polished = " polished" if t.get("polished") else ""
        cells = [
            f"#{t['number']}{polished}",
            html.escape(str(name)),
            *(table_cell(n, m.get(n)) for n in names),
            fmt(s["alpha"]),
            fmt(s["T"]),
            fmt(s["lambda"]),
            fmt(s["epochs"]),
            fmt(s["mean_prune"], ".2f"),
            html.escape(s["bits"]),
            html.escape(str(s["ft_scope"])),
            fmt(s["feature_weight"]),
            html.escape(s["quant_scope"]),
        ]
        tds = "".join(f"<td>{c}</td>" for c in cells)
        rows.append(f'<tr class="pareto-row" id="pareto-row-{t["number"]}">{tds}</tr>')
    teacher = ", ".join(f"{k}={fmt(v)}" for k, v in run.teacher.items() if not isinstance(v, dict))
    return (
        f"<p>Teacher: {html.escape(teacher)}</p>{_polish_note(run)}"
        f'<table id="pareto-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'
    )


def _polish_note(run: RunData) -> str:
    """The polish stage: which trials, their search-time and polished accuracy, and costs."""
    rows = [r for r in run.records if r.get("polish")]
    if not rows:
        return ""
    items = "".join(
        f"<li>#{r['number']}: {html.escape(str(r['polish'].get('state')))}, "
        f"{fmt(r['polish'].get('epochs'))} epochs in {fmt(r['polish'].get('duration_s'), '.1f')} s"
        f" (search-time trial {fmt(r.get('duration_s'), '.1f')} s); accuracy "
        f"{fmt(((r.get('search') or r).get('metrics') or {}).get('accuracy'))} → "
        f"{fmt(r['polish'].get('accuracy'))}"
        + (" (the search-time figures kept)" if r["polish"].get("kept") else "")
        + "</li>"
        for r in rows
    )
    head = "<p>Polished after the search (re-trained from the teacher):</p>"
    return f'{head}<ul id="polish">{items}</ul>'


def _target_fronts(run: RunData) -> str:
    """A several-target search: one table per target, its front on its own figures."""
    if not run.fronts:
        return ""
    names = [n for n in table_metrics(run) if n in ("accuracy", "size_bytes", "latency_ms")]
    names += [n for n in ("speedup", "compression") if n not in names]
    head = "".join(f"<th>{html.escape(axis(n)[0])}</th>" for n in names)
    tables = []
    for target, rows in run.fronts.items():
        teacher = (run.teacher.get("targets") or {}).get(target) or {}
        body = "".join(
            f"<tr><td>#{r['number']}</td>"
            + "".join(f"<td>{table_cell(n, (r.get('metrics') or {}).get(n))}</td>" for n in names)
            + "</tr>"
            for r in rows
        )
        tables.append(
            f"<div><h3>{html.escape(target)}</h3><p>teacher: accuracy "
            f"{fmt(teacher.get('accuracy'))}, latency {fmt(teacher.get('latency_ms'))} ms</p>"
            f'<table class="target-front" id="front-{html.escape(target)}"><thead><tr>'
            f"<th>trial</th>{head}</tr></thead><tbody>{body}</tbody></table></div>"
        )
    return f'<h2>Front per target</h2><div class="plots">{"".join(tables)}</div>'


def _target_figures(run: RunData, pairs: list[tuple[tuple[str, str], tuple[str, str]]]) -> str:
    """A several-target search: per target, the front plots of the Pareto section drawn on
    that target's own figures (its trials, its front, its teacher)."""
    views = target_runs(run)
    if not views:
        return ""
    rows = []
    for target, view in views.items():
        plots = "".join(
            f"<div>{_scatter_2d(view, x, y, f'front-{target}-{x[0]}-{y[0]}', title=target)}</div>"
            for x, y in pairs
        )
        rows.append(f'<h3>{html.escape(target)}</h3><div class="plots">{plots}</div>')
    return f"<h2>Figures per target</h2>{''.join(rows)}"


def _counts(run: RunData) -> str:
    counts = Counter(r.get("state") for r in run.records)
    items = "".join(
        f'<li><span class="state">{s}</span>: <b id="count-{s}">{counts.get(s, 0)}</b></li>'
        for s in STATES
    )
    failed = [r for r in run.records if r.get("state") == TrialState.FAILED]
    errors = "".join(
        f"<li>trial #{r['number']}<pre>{html.escape(str(r.get('error') or 'no error recorded'))}</pre></li>"
        for r in failed
    )
    errors_html = f'<h3>Errors of failed trials</h3><ul id="errors">{errors}</ul>' if failed else ""
    return f'<ul id="counts">{items}</ul>{errors_html}{_halving(run)}'


def _halving(run: RunData) -> str:
    """Successive halving (``scheduler: halving``): per rung, the trials that reached it and
    those stopped there (state ``pruned``); the front holds fully trained trials only."""
    reached: Counter = Counter()
    stopped: Counter = Counter()
    epochs: dict[int, set[str]] = {}
    estimators: dict[int, set[str]] = {}
    for r in run.records:
        sampled = r.get("start") is None  # a start runs its full epochs outside the ladder
        for e in (r.get("rungs") or []) if sampled else []:
            rung = int(e["rung"])
            reached[rung] += 1
            epochs.setdefault(rung, set()).add(str(e.get("epochs")))
            estimators.setdefault(rung, set()).add(str(e.get("estimator")))
        if r.get("stopped_at_rung") is not None:
            stopped[int(r["stopped_at_rung"])] += 1
    if not reached:
        return ""
    body = "".join(
        f"<tr><td>{rung}</td><td>{', '.join(sorted(epochs[rung]))}</td>"
        f"<td>{html.escape(', '.join(sorted(estimators[rung])))}</td>"
        f"<td>{reached[rung]}</td><td>{stopped[rung]}</td></tr>"
        for rung in sorted(reached)
    )
    return (
        "<h3>Successive halving</h3><p>A stopped trial (state pruned) keeps the figures of the "
        "rung that ranked it; the Pareto front holds fully trained trials only.</p>"
        '<table id="halving"><thead><tr><th>rung</th><th>epochs</th><th>ranked by</th>'
        f"<th>reached</th><th>stopped there</th></tr></thead><tbody>{body}</tbody></table>"
    )


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
    pairs = [(b, a) if a[1] == Direction.MAXIMIZE else (a, b) for a, b in pairs]
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
{_target_fronts(run)}
<h2>Pareto front</h2>
<div class="plots">{"".join(f"<div>{p}</div>" for p in plots)}</div>
{three_d}
{_target_figures(run, pairs)}
<h2>Hypervolume over trials</h2>
{_hypervolume_plot(run)}
<h2>Per-layer policy of the Pareto points</h2>
{_heatmap(run, "prune", "prune ratio per layer", "Reds")}
{_heatmap(run, "bits", "bits per layer", "Viridis")}
{config}
</body>
</html>
"""


def write_report_safely(path: Path) -> list[Path]:
    """The report files; a report problem never stops a search (it warns)."""
    try:
        return [p for p in write_report(path) if p is not None]
    except Exception as exc:
        warnings.warn(f"could not write the report in {path}: {exc}", stacklevel=2)
        return []
