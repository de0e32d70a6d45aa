"""What a polished trial becomes in MLflow: a nested run under the trial's run, and the
polished figures as ``polish.*`` metrics on the trial's run itself (so the experiment's table
shows search-time and polished figures side by side)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from mlflow.entities import Metric

from autocompress.integrations._mlflow_payload import (
    as_params,
    log_batch,
    trial_metrics,
    trial_params,
)


def log_polished(client: Any, experiment_id: str, trial_run: str, record: Mapping[str, Any]) -> str:
    """Log one ``polish.jsonl`` record; return the nested run's id."""
    number = int(record["number"])
    state = str(record.get("state"))
    end = int(time.time() * 1000)
    start = end - int(1000 * float(record.get("duration_s") or 0.0))
    run_id = client.create_run(
        experiment_id,
        start_time=start,
        run_name=f"polish-{number}",
        tags={
            "mlflow.parentRunId": trial_run,
            "autocompress.role": "polish",
            "polish.of": str(number),
            "state": state,
        },
    ).info.run_id
    policy = record.get("policy") or {}
    metrics = record.get("metrics") or {}
    params, artifacts = as_params(trial_params(policy, metrics, {}))
    artifacts["policy.json"] = json.dumps(policy, indent=2, sort_keys=True)
    if record.get("error"):
        artifacts["error.txt"] = str(record["error"])
    for path, text in artifacts.items():
        client.log_text(run_id, text, path)
    own = trial_metrics(metrics, record.get("epochs") or [], record, end)
    log_batch(client, run_id, metrics=own, params=params)
    client.set_terminated(run_id, status="FAILED" if state == "failed" else "FINISHED")
    on_trial = [
        Metric(f"polish.{m.key}", m.value, end, m.step)
        for m in own
        if not m.key.startswith("teacher.") and m.key != "epoch_accuracy"
    ]
    log_batch(client, trial_run, metrics=on_trial, tags={"polished": "true", "polish.state": state})
    return str(run_id)


__all__ = ["log_polished"]
