"""compare(): summary rows and overlaid fronts from run directories and from MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from autocompress.reporting.comparison import compare, format_table

TEACHER = {"accuracy": 0.98, "size_bytes": 1_000_000, "latency_ms": 1.0}
OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "size_bytes", "direction": "minimize"},
    {"name": "latency_ms", "direction": "minimize"},
]
POLICY = {
    "distill": {"alpha": 0.5, "temperature": 4.0},
    "prune": {"default": 0.0, "layers": {"features.*": 0.5}},
    "quant": {"default": 32, "layers": {"classifier": 8}},
    "finetune": {"lambda": 0.0001, "epochs": 1, "lr": 0.001},
}


def record(number: int, state: str, measured: tuple[float, int, float] | None = None) -> dict:
    """One ``trials.jsonl`` row; ``measured`` is (accuracy, size_bytes, latency_ms)."""
    metrics: dict[str, Any] = {}
    if measured is not None:
        accuracy, size, latency = measured
        metrics = {
            "accuracy": accuracy,
            "size_bytes": size,
            "latency_ms": latency,
            "latency_p90_ms": latency * 1.2,
            "speedup": TEACHER["latency_ms"] / latency,
            "compression": TEACHER["size_bytes"] / size,
            "teacher": dict(TEACHER),
            "layers": {"features.0": {"prune": 0.5, "bits": 8, "mode": "int-compute"}},
            "artifact": "model.pt",
            "target": "torch",
            "threads": 1,
        }
    return {
        "number": number,
        "state": state,
        "policy": POLICY,
        "metrics": metrics,
        "error": "RuntimeError: boom" if state == "failed" else None,
        "params": {},
        "start": "identity" if number == 0 else None,
        "node": None,
        "host": "testhost",
        "duration_s": 1.0,
        "epochs": [],
    }


SEARCH_A = [
    record(0, "complete", (0.98, 1_000_000, 1.0)),
    record(1, "complete", (0.975, 200_000, 0.6)),
    record(2, "complete", (0.95, 100_000, 0.4)),
    record(3, "infeasible", (0.90, 80_000, 0.3)),
    record(4, "failed"),
    record(5, "pruned"),
]
SEARCH_B = [
    record(0, "complete", (0.98, 1_000_000, 1.0)),
    record(1, "complete", (0.975, 500_000, 0.5)),
    record(2, "complete", (0.96, 600_000, 0.7)),  # dominated by 1
]


def write_run_dir(path: Path, name: str, records: list[dict], front: list[int]) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"name: {name}\n")
    (path / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pareto = {
        "name": name,
        "objectives": OBJECTIVES,
        "teacher": TEACHER,
        "trials": [
            {"number": r["number"], "policy": r["policy"], "metrics": r["metrics"]}
            for r in records
            if r["number"] in front
        ],
    }
    (path / "pareto.json").write_text(json.dumps(pareto))
    return path


def test_compare_run_directories(tmp_path: Path) -> None:
    a = write_run_dir(tmp_path / "a", "tpe", SEARCH_A, [0, 1, 2])
    b = write_run_dir(tmp_path / "b", "random", SEARCH_B, [0, 1])

    rows, html, png = compare([str(a), str(b)], out_dir=tmp_path / "out")

    row_a, row_b = rows
    assert row_a["search"] == "tpe"
    assert (row_a["trials"], row_a["complete"], row_a["infeasible"]) == (6, 3, 1)
    assert (row_a["failed"], row_a["pruned"], row_a["pareto_size"]) == (1, 1, 3)
    assert row_a["best_accuracy"] == 0.98
    assert row_a["teacher_accuracy"] == 0.98
    # Within one point of the teacher (>= 0.97): trials 0 and 1 only; the infeasible 80 kB
    # trial and the 0.95 trial do not count.
    assert row_a["smallest_size_bytes"] == 200_000
    assert row_a["lowest_latency_ms"] == 0.6
    assert (row_b["trials"], row_b["complete"], row_b["pareto_size"]) == (3, 3, 2)
    assert row_b["smallest_size_bytes"] == 500_000
    assert row_b["lowest_latency_ms"] == 0.5

    # B's front, normalized by the teacher, reference (0, 1.1, 1.1): the teacher's box
    # 1 x 0.1 x 0.1 and trial 1's box r x 0.6 x 0.6 overlap in r x 0.1 x 0.1.
    r = 0.975 / 0.98
    assert row_b["hypervolume"] == pytest.approx(0.01 + r * 0.36 - r * 0.01)
    assert row_a["hypervolume"] > row_b["hypervolume"]  # A's front dominates more

    assert html.is_file() and html.stat().st_size > 1000
    assert "tpe (Pareto)" in html.read_text()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    table = format_table(rows)
    assert "tpe" in table and "random" in table and "200,000" in table


def test_compare_mlflow_experiment(tmp_path: Path) -> None:
    from autocompress.integrations.mlflow import MlflowTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    a = write_run_dir(tmp_path / "a", "tpe", SEARCH_A, [0, 1, 2])
    tracker = MlflowTracker(tracking_uri=uri, experiment="mlp", run_dir=tmp_path / "a")
    tracker.start_search({"name": "tpe", "objectives": OBJECTIVES})
    tracker.sync(SEARCH_A)
    tracker.finish({0, 1, 2}, [], {})

    (from_dir, from_mlflow), _, _ = compare(
        [str(a), "mlp"], out_dir=tmp_path / "out", tracking_uri=uri
    )
    assert from_mlflow["search"] == "mlp"
    for key in from_dir.keys() - {"search", "source"}:
        assert from_mlflow[key] == pytest.approx(from_dir[key]), key


def test_unknown_source(tmp_path: Path) -> None:
    from autocompress.errors import ConfigError

    with pytest.raises(ConfigError, match="neither a run directory"):
        compare(["no-such-search"], out_dir=tmp_path, tracking_uri=f"sqlite:///{tmp_path}/m.db")
