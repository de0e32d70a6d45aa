"""What a report reads from a run directory, and the per-trial summaries it shows.

Shared by the HTML page (``report.py``) and the figures (``report_figures.py``).
"""

from __future__ import annotations

import html
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autocompress.errors import AutoCompressError
from autocompress.measure.metrics import METRICS, comparable
from autocompress.study._polish_plan import with_polish
from autocompress.study.records import TrialState
from autocompress.study.rundir import RunDir, current_record, read_jsonl


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
    # a several-target search: per target, its front on its own figures (pareto.json "fronts")
    fronts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def complete(self) -> list[dict[str, Any]]:
        """Complete trials that hold every objective metric, by trial number."""
        names = [n for n, _ in self.objectives]
        return [
            r
            for r in self.records
            if r.get("state") == TrialState.COMPLETE
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
        teacher=dict(pareto.get("teacher") or {}),
        records=with_polish(  # a polished trial shown with its polished figures
            sorted(map(current_record, read_jsonl(rd.trials_file)), key=lambda r: r["number"]),
            rd.polishes(),
        ),
        pareto=sorted(pareto.get("trials", []), key=lambda t: t["number"]),
        config_text=config_path.read_text() if config_path.is_file() else None,
        fronts=dict(pareto.get("fronts") or {}),
    )


def target_runs(run: RunData) -> dict[str, RunData]:
    """A several-target search seen from each target: its trials on that target's own figures
    (each timing paired with the teacher on that runtime; a trial whose conversion failed there
    is left out), its front and its teacher, for that target's figures."""
    views = {}
    for target, front in run.fronts.items():
        records = []
        for r in run.records:
            entry = ((r.get("metrics") or {}).get("targets") or {}).get(target)
            if entry is not None and "error" not in entry:
                keep = {k: r[k] for k in ("number", "state", "start", "policy") if k in r}
                records.append({**keep, "metrics": entry})
        teacher = (run.teacher.get("targets") or {}).get(target) or {}
        views[target] = replace(
            run, teacher=dict(teacher), records=records, pareto=front, fronts={}
        )
    return views


def table_metrics(run: RunData) -> list[str]:
    """The Pareto table's metric columns: the objectives, then every registered metric a
    Pareto point carries, in registry order."""
    carried = {n for t in run.pareto for n in (t.get("metrics") or {})}
    return list(
        dict.fromkeys([*(n for n, _ in run.objectives), *(m for m in METRICS if m in carried)])
    )


# --- per-trial summaries ---------------------------------------------------------------------


def layer_table(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(metrics.get("layers") or {})


def policy_summary(policy: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """alpha, T, lambda, epochs from the policy; mean prune and bits histogram from the layers."""
    distill = policy.get("distill") or {}
    finetune = policy.get("finetune") or {}
    layers = layer_table(metrics)
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


def fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return str(value)


def hover(record: Mapping[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    s = policy_summary(record.get("policy") or {}, metrics)
    head = f"<b>trial #{record['number']}</b>"
    if record.get("polished"):
        search = (record.get("search") or {}).get("metrics") or {}
        head += f" polished (search-time accuracy {fmt(search.get('accuracy'))})"
    if record.get("start"):
        head += f" (start: {html.escape(str(record['start']))})"
    shown = [m for m in METRICS if m in metrics]
    pairs = [f"{m}={fmt(metrics[m], METRICS[m].spec)}{METRICS[m].unit}" for m in shown]
    lines = [
        head,
        f"α={fmt(s['alpha'])}  T={fmt(s['T'])}  λ={fmt(s['lambda'])}  epochs={fmt(s['epochs'])}",
        f"fine-tune {s['ft_scope']}  feature w={fmt(s['feature_weight'])}  "
        f"scope: {s['quant_scope']}",
        f"mean prune={fmt(s['mean_prune'], '.2f')}  bits: {s['bits']}",
    ]
    lines += ["  ".join(pairs[i : i + 2]) for i in range(0, len(pairs), 2)]
    return "<br>".join(lines)


def table_cell(name: str, value: Any) -> str:
    """A metric's value in a table: bytes exactly, ratios with ×, else the registry's format."""
    metric = METRICS.get(name)
    if metric is None:
        return fmt(value)
    if metric.unit == "B":  # bytes, exactly
        return fmt(int(value) if value is not None else None, ",")
    return fmt(value, metric.spec) + ("×" if metric.unit == "x" and value is not None else "")


def axis(name: str) -> tuple[str, float]:
    metric = METRICS.get(name)
    return (metric.axis, metric.scale) if metric is not None else (name, 1.0)


def shown_values(
    records: Sequence[Mapping[str, Any]], name: str, teacher: Mapping[str, Any]
) -> list[float]:
    """Display values on the run teacher's scale (timings compared as ratios to their teacher)."""
    scale = axis(name)[1]
    return [float(comparable(r, name, teacher) or 0.0) * scale for r in records]
