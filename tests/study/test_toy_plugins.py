"""Plug-ins registered from a test are used end to end without editing the package: a toy metric
a search optimizes (record, pareto.json, report, compare, export --by), and a toy sampler a
search proposes with."""

from __future__ import annotations

import json

import pytest
from _support import toy_registries as toy_plugins
from conftest import local_config

from autocompress.api import run_search
from autocompress.errors import ConfigError
from autocompress.reporting.comparison import compare, format_table
from autocompress.reporting.export import export_trial, pick_trial
from autocompress.reporting.report import write_report
from autocompress.study.objectives import load_objectives


@pytest.fixture
def toy_metric():
    with toy_plugins.toy_metric() as name:
        yield name


def test_a_toy_metric_is_optimized_reported_compared_and_exported(toy_metric, tmp_path):
    objectives = tmp_path / "toy.yaml"
    objectives.write_text(
        "objectives:\n  - {metric: accuracy}\n  - {metric: weight_count_k}\n"
        "latency: {repeats: 20, warmup: 1}\n"
    )
    config = local_config(
        tmp_path / "run",
        objectives=str(objectives),
        trials=2,
        epochs=0,
        starts=["identity", "prune30-int8"],
        keep_models="all",
    )
    result = run_search(config)
    values = {r["number"]: r["metrics"]["weight_count_k"] for r in result.trials}
    assert values[0] > values[1] >= 0  # int8 Linears hold packed weights, no float parameters
    pareto = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert [o["name"] for o in pareto["objectives"]] == ["accuracy", "weight_count_k"]
    assert all("weight_count_k" in t["metrics"] for t in pareto["trials"])
    assert pareto["teacher"]["weight_count_k"] == values[0]  # the teacher measured alike

    html, _ = write_report(tmp_path / "run")
    assert "weights (k)" in html.read_text()
    rows, _, _ = compare([str(tmp_path / "run")], out_dir=tmp_path / "compare")
    teacher = pareto["teacher"]["accuracy"]
    close = [r for r in result.trials if r["metrics"]["accuracy"] >= teacher - 0.01]
    assert rows[0]["best_weight_count_k"] == min(r["metrics"]["weight_count_k"] for r in close)
    assert "best weights (k)" in format_table(rows)

    number = pick_trial(tmp_path / "run", max_accuracy_drop=1.0, by="weight_count_k")
    best = min(t["metrics"]["weight_count_k"] for t in pareto["trials"])
    assert values[number] == best == values[1]
    exported = export_trial(tmp_path / "run", number, tmp_path / "export")
    assert exported["weight_count_k"] == values[number]


def test_an_unknown_metric_in_objectives_is_one_line_naming_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("objectives:\n  - {metric: accuracy}\n  - {metric: weight_count_k}\n")
    with pytest.raises(ConfigError) as e:
        load_objectives(path)
    text = str(e.value)
    assert "\n" not in text and str(path) in text and "objectives[1].metric" in text
    assert "weight_count_k" in text and "size_bytes" in text  # the known metrics


@pytest.fixture
def toy_sampler():
    with toy_plugins.toy_sampler() as name:
        yield name


def test_a_toy_sampler_proposes_a_search(toy_sampler, tmp_path):
    config = local_config(
        tmp_path / "run", sampler={"name": "toy", "offset": 3}, trials=2, epochs=0, starts=[]
    )
    result = run_search(config)
    assert len(result.trials) == 2 and toy_plugins.CountingSampler.calls > 0
    with pytest.raises(ConfigError, match=r"sampler\.seed_offset; toy takes offset"):
        local_config(tmp_path / "x", sampler={"name": "toy", "seed_offset": 3})
