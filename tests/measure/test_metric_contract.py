"""The metric contract, over every registered metric: a direction, a display format, measured by
a real ``compress()`` on the ``torch`` target (or declared not measured there), and shown by the
report's table, ``compare``'s columns and ``export --by``. The toy metric of
``_support.toy_registries`` (registered for this module) is checked like the built-ins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _support.models import mlp_task
from _support.toy_registries import TOY_METRIC, toy_metric

from autocompress.measure.metrics import METRICS, format_value, summary
from autocompress.measure.timing import MeasureSettings
from autocompress.pipeline._compress import compress
from autocompress.policy import Policy
from autocompress.reporting._report_data import load_run, table_metrics
from autocompress.reporting.comparison import compare, format_table
from autocompress.reporting.export import pick_choices, pick_trial

NAMES = sorted({*METRICS, TOY_METRIC})  # the built-ins and a plug-in registered from a test


@pytest.fixture(scope="module", autouse=True)
def _toy_registered():
    with toy_metric():
        yield


def test_the_toy_metric_is_covered():
    assert TOY_METRIC in NAMES and TOY_METRIC in METRICS


@pytest.fixture(scope="module")
def measured():
    """One real compression of the MLP on the torch target: its metrics.json."""
    task = mlp_task(epochs=0)
    policy = Policy.from_dict({"quant": {"default": 8}, "finetune": {"epochs": 0}})
    settings = MeasureSettings(repeats=20, warmup=2)
    return compress(task, policy, target="torch", settings=settings).metrics


def _run_dir(path: Path, metrics: dict, objective: str) -> Path:
    """A run directory whose one Pareto point is the measured trial, ranked on ``objective``."""
    names = ["accuracy", objective] if objective != "accuracy" else ["accuracy", "size_bytes"]
    objectives = [{"name": n, "direction": METRICS[n].direction} for n in names]
    record = {"number": 0, "state": "complete", "policy": {}, "metrics": metrics}
    path.mkdir(parents=True)
    (path / "config.yaml").write_text("name: contract\n")
    (path / "trials.jsonl").write_text(json.dumps(record) + "\n")
    pareto = {
        "name": "contract",
        "objectives": objectives,
        "teacher": metrics["teacher"],
        "trials": [{"number": 0, "policy": {}, "metrics": metrics}],
    }
    (path / "pareto.json").write_text(json.dumps(pareto))
    return path


@pytest.mark.parametrize("name", NAMES)
def test_metric_has_a_direction_and_formats_its_values(name):
    metric = METRICS[name]
    assert metric.name == name and metric.direction in ("maximize", "minimize")
    shown = format_value(name, 1.5)
    assert shown != "-" and shown.replace(metric.suffix, "") != ""
    assert format_value(name, None) == "-"


@pytest.mark.parametrize("name", NAMES)
def test_metric_is_measured_by_compress_on_the_torch_target(name, measured):
    metric = METRICS[name]
    if metric.measure is None:  # declared not measured by the pipeline
        assert name not in measured
        return
    value = measured[name]
    assert isinstance(value, int | float) and value == value  # a number, not NaN
    assert (name in measured["teacher"]) == metric.teacher
    assert f"{name} {format_value(name, value)}" in summary(measured)


@pytest.mark.parametrize("name", [n for n in NAMES if n == TOY_METRIC or METRICS[n].measure])
def test_metric_appears_in_report_compare_and_export(name, measured, tmp_path):
    run = _run_dir(tmp_path / "run", measured, name)
    assert name in table_metrics(load_run(run))
    rows, _, _ = compare([str(run)], out_dir=tmp_path / "compare")
    if name != "accuracy":
        assert rows[0][f"best_{name}"] == measured[name]
        assert f"best {METRICS[name].axis}" in format_table(rows)
    assert name in pick_choices()
    assert pick_trial(run, max_accuracy_drop=1.0, by=name) == 0
