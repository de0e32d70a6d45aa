from __future__ import annotations

import pytest
from _support.study_inputs import check_file_error, check_preset, constraint, write_yaml

from autocompress.errors import ConfigError
from autocompress.study.objectives import LatencySettings, ObjectiveSet, load_objectives

PRESETS = ["accuracy-size-latency", "accuracy-latency", "accuracy-size", "edge"]
BASELINE = {"accuracy": 0.90, "size_bytes": 1000, "latency_ms": 10.0, "params": 500, "macs": 9000}
MAX_DROP = "accuracy max_drop 0.01"
MAX_LATENCY = "latency_ms max 5.0"
MAX_RATIO = "size_bytes max_ratio 0.25"
ACCURACY = "objectives:\n  - {metric: accuracy}\n"  # a valid start for the broken files
CONSTRAINED = ACCURACY + "constraints:\n  - "
CONSTRAINT_ERRORS = [  # (the constraint after CONSTRAINED, the key named, the message)
    ("{metric: latency_ms}", "constraints[0]", "exactly one bound"),
    ("{metric: latency_ms, max: 1, max_ratio: 2}", "constraints[0]", "exactly one bound"),
    ("{metric: size_bytes, max_ratio: -1}", "constraints[0].max_ratio", "must be >= 0"),
    ("{metric: accuracy, max_drop: lots}", "constraints[0].max_drop", "'lots' is not a number"),
]


def _objective_set(metrics: str, *constraints: str) -> ObjectiveSet:
    """``metrics`` to optimise (their default directions), constraints ``"metric bound value"``."""
    return ObjectiveSet.from_dict(
        {
            "objectives": [{"metric": m} for m in metrics.split()],
            "constraints": [constraint(c) for c in constraints],
        }
    )


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_round_trip(name):
    objs = check_preset(load_objectives, "objectives", name)
    assert objs.metrics[0] == "accuracy" and objs.directions[0] == "maximize"
    assert all(d == "minimize" for d in objs.directions[1:])
    assert objs.latency == LatencySettings(threads=1, batch_size=1, repeats=30, warmup=5)


def test_edge_preset():
    edge = load_objectives("edge")
    assert edge.metrics == ["accuracy", "size_bytes", "latency_ms"]
    assert [str(c) for c in edge.constraints] == [
        "accuracy max_drop 0.01",
        "latency_ms max_ratio 0.5",
    ]


def test_values_and_constraint_math():
    objs = _objective_set(
        "accuracy size_bytes", MAX_DROP, MAX_LATENCY, MAX_RATIO, "accuracy min 0.5"
    )
    assert objs.directions == ["maximize", "minimize"]  # defaults per metric
    good = {"accuracy": 0.895, "size_bytes": 200, "latency_ms": 4.0}
    assert objs.values(good) == [0.895, 200.0]
    assert objs.constraint_values(good, BASELINE) == pytest.approx([-0.005, -1.0, -0.05, -0.395])
    bad = {"accuracy": 0.85, "size_bytes": 400, "latency_ms": 6.0}
    assert objs.constraint_values(bad, BASELINE) == pytest.approx([0.04, 1.0, 0.15, -0.35])
    with pytest.raises(KeyError, match="not measured: size_bytes"):
        objs.values({"accuracy": 0.9})
    with pytest.raises(KeyError, match="'latency_ms' was not measured"):
        objs.constraint_values({"accuracy": 0.9, "size_bytes": 1}, BASELINE)
    with pytest.raises(KeyError, match="needs the baseline"):
        objs.constraint_values(good, None)


def test_structural_violation_checks_only_structure():
    objs = _objective_set("accuracy latency_ms", MAX_DROP, MAX_RATIO, MAX_LATENCY)
    # accuracy is not known before training: ignored even though it would break
    assert objs.structural_violation({"accuracy": 0.1, "size_bytes": 250}, BASELINE) is None
    message = objs.structural_violation({"size_bytes": 300, "latency_ms": 1.0}, BASELINE)
    assert message is not None and "size_bytes max_ratio 0.25" in message
    assert "300 > 0.25 x baseline 1000" in message
    message = objs.structural_violation({"size_bytes": 100, "latency_ms": 7.5}, BASELINE)
    assert message == "constraint latency_ms max 5 broken: latency_ms 7.5 > 5"
    assert objs.structural_violation({"params": 10}, BASELINE) is None  # nothing to check


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        ("objectives: []\n", "objectives", "non-empty list"),
        ("objectives:\n  - {metric: acc}\n", "objectives[0].metric", "unknown metric 'acc'"),
        (
            "objectives:\n  - {metric: accuracy, direction: up}\n",
            "objectives[0].direction",
            "maximize or minimize",
        ),
        ("objectives:\n  - {metric: accuracy, weight: 1}\n", "objectives[0].weight", "unknown key"),
        (ACCURACY + "  - {metric: accuracy}\n", "objectives[1].metric", "listed twice"),
        *[(CONSTRAINED + c, key, message) for c, key, message in CONSTRAINT_ERRORS],
        (ACCURACY + "latency: {threads: 0}\n", "latency.threads", "integer >= 1"),
        (ACCURACY + "latency: {repeat: 3}\n", "latency.repeat", "unknown key"),
        (ACCURACY + "sampler: tpe\n", "sampler", "unknown key"),
    ],
)
def test_errors_name_file_key_and_value(tmp_path, text, key, message):
    check_file_error(load_objectives, write_yaml(tmp_path, "objectives.yaml", text), key, message)


def test_unknown_preset():
    with pytest.raises(
        ConfigError, match="unknown objectives preset 'fast'; presets: accuracy-latency"
    ):
        load_objectives("fast")


def test_relative_bound_on_speedup_is_refused():
    from autocompress.study.objectives import ObjectiveSet

    with pytest.raises(ConfigError, match="max_ratio on compression is relative"):
        ObjectiveSet.from_dict(
            {
                "objectives": [{"metric": "accuracy", "direction": "maximize"}],
                "constraints": [{"metric": "compression", "max_ratio": 4}],
            }
        )
