"""What a trial becomes in MLflow: params, metrics and tags within MLflow's limits.

Pure functions of a ``trials.jsonl`` record (no client state), used by ``integrations.mlflow``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
)

from autocompress.measure.metrics import METRICS, teacher_metrics


def trial_params(
    policy: Mapping[str, Any], metrics: Mapping[str, Any], searched: Mapping[str, Any]
) -> dict[str, Any]:
    """The policy's scalars and per-layer summaries, then the sampler's raw values as space.*."""
    distill = policy.get("distill") or {}
    finetune = policy.get("finetune") or {}
    params: dict[str, Any] = {
        "distill.alpha": distill.get("alpha"),
        "distill.temperature": distill.get("temperature"),
        "finetune.lambda": finetune.get("lambda"),
        "finetune.epochs": finetune.get("epochs"),
        "finetune.lr": finetune.get("lr"),
    }
    layers = metrics.get("layers") or {}
    ratios = [float(v["prune"]) for v in layers.values() if v.get("prune") is not None]
    bits = [int(v["bits"]) for v in layers.values() if v.get("bits") is not None]
    if not ratios:  # no measured layers: summarize the policy's default and overrides
        prune = policy.get("prune") or {}
        ratios = [
            float(prune.get("default", 0.0)),
            *map(float, (prune.get("layers") or {}).values()),
        ]
    if not bits:
        quant = policy.get("quant") or {}
        bits = [int(quant.get("default", 32)), *map(int, (quant.get("layers") or {}).values())]
    params.update(
        {
            "prune.mean": sum(ratios) / len(ratios),
            "prune.min": min(ratios),
            "prune.max": max(ratios),
            "bits.mean": sum(bits) / len(bits),
        }
    )
    for width in sorted(set(bits)):
        params[f"bits.count.{width}"] = bits.count(width)
    for key, value in searched.items():
        params[f"space.{safe_key(key)}"] = value
    return {key: value for key, value in params.items() if value is not None}


def trial_metrics(
    metrics: Mapping[str, Any],
    epochs: Sequence[Mapping[str, Any]],
    record: Mapping[str, Any],
    timestamp: int,
) -> list[Metric]:
    out = [
        Metric(key, float(metrics[key]), timestamp, 0)
        for key in METRICS
        if is_number(metrics.get(key))
    ]
    baseline = record.get("teacher") or metrics.get("teacher") or {}
    out += [
        Metric(f"teacher.{key}", float(baseline[key]), timestamp, 0)
        for key in teacher_metrics()
        if is_number(baseline.get(key))
    ]
    objective = metrics.get("target")
    for name, entry in (metrics.get("targets") or {}).items():
        if name == objective:  # the objective target's figures are the unprefixed ones
            continue
        out += [  # each other runtime's figures under ``<target>.`` (an error: none)
            Metric(f"{safe_key(name)}.{key}", float(entry[key]), timestamp, 0)
            for key in METRICS
            if is_number(entry.get(key))
        ]
    out += [
        Metric("epoch_accuracy", float(e["accuracy"]), timestamp, int(e["epoch"]))
        for e in epochs
        if is_number(e.get("accuracy"))
    ]
    if is_number(record.get("duration_s")):
        out.append(Metric("duration_s", float(record["duration_s"]), timestamp, 0))
    return out


def as_params(values: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Render param values as text; values longer than MLflow allows go to artifacts."""
    params: dict[str, str] = {}
    artifacts: dict[str, str] = {}
    for key, value in values.items():
        text = value if isinstance(value, str) else json.dumps(jsonable(value), sort_keys=True)
        if len(text) > MAX_PARAM_VAL_LENGTH:
            path = f"params/{key}.json"
            artifacts[path] = text
            text = f"(too long for a param: see artifact {path})"
        params[key] = text
    return params, artifacts


def log_batch(
    client: Any,
    run_id: str,
    *,
    metrics: Sequence[Metric] = (),
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> None:
    """``log_batch`` in chunks within MLflow's limits (100 params, 100 tags, 1000 entities)."""
    metrics_left = list(metrics)
    params_left = [Param(k, v) for k, v in (params or {}).items()]
    tags_left = [RunTag(k, v) for k, v in (tags or {}).items()]
    while metrics_left or params_left or tags_left:
        params_now = params_left[:MAX_PARAMS_TAGS_PER_BATCH]
        tags_now = tags_left[:MAX_PARAMS_TAGS_PER_BATCH]
        room = MAX_METRICS_PER_BATCH - len(params_now) - len(tags_now)
        metrics_now = metrics_left[:room]
        client.log_batch(run_id, metrics=metrics_now, params=params_now, tags=tags_now)
        params_left = params_left[len(params_now) :]
        tags_left = tags_left[len(tags_now) :]
        metrics_left = metrics_left[len(metrics_now) :]


def safe_key(key: str) -> str:
    """MLflow keys allow letters, digits and ``_ - . / space``; glob characters become ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


def truncate(text: str, limit: int) -> str:
    marker = "... (truncated; full text in error.txt)"
    return text if len(text) <= limit else text[: limit - len(marker)] + marker


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
