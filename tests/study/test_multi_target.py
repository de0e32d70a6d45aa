"""One search, several runtimes (``targets: [...]``): each trial fine-tuned once, then converted
and measured on every target against the teacher on that same runtime; a front per target in
pareto.json and the report, a row per target in ``compare``, ``<target>.`` metrics in MLflow,
``export --target``; config mistakes are one line (exit 2 at the CLI); a target failing for a
trial is recorded against that target while the trial completes.

Real searches of the tiny MLP (tests/_support/tasks.py), real ONNX Runtime / ExecuTorch sessions.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ENV, MLP_TASK, local_config

from autocompress import api
from autocompress.errors import ConfigError
from autocompress.integrations._mlflow_payload import trial_metrics
from autocompress.pipeline import CompressOptions, load_artifact
from autocompress.reporting._report_data import axis
from autocompress.study.config import SearchConfig
from autocompress.study.pareto import front
from autocompress.study.records import TrialState
from autocompress.task import load_task

TARGETS = ("torch", "onnxruntime")
FIGURES = ("accuracy", "size_bytes", "latency_ms", "speedup", "compression")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-trial local search measured on torch (the objective target) and onnxruntime."""
    out = tmp_path_factory.mktemp("multi") / "run"
    config = local_config(
        out, targets=list(TARGETS), trials=3, starts=["identity", "int8"], keep_models="all"
    )
    result = api.run_search(config)
    return out, result


def _measured(result):
    return [r for r in result.trials if r["state"] != TrialState.FAILED]


def test_each_trial_is_measured_on_every_target_from_its_own_artifact(run):
    out, result = run
    task = load_task(MLP_TASK)
    measured = _measured(result)
    assert len(measured) == 3
    for record in measured:
        entries = record["metrics"]["targets"]
        assert list(entries) == list(TARGETS)
        for name, entry in entries.items():
            assert entry["target"] == name and "error" not in entry
            assert all(isinstance(entry[k], float | int) for k in FIGURES)
            teacher = entry["teacher"]  # timed interleaved with the teacher on that runtime
            assert entry["speedup"] == pytest.approx(teacher["latency_ms"] / entry["latency_ms"])
            assert entry["compression"] == pytest.approx(
                teacher["size_bytes"] / entry["size_bytes"]
            )
            assert sum(entry["modes"].values()) == 3  # the MLP's three Linear layers
        # the objective target's figures are the record's metrics, as before
        assert {k: entries["torch"][k] for k in FIGURES} == {
            k: record["metrics"][k] for k in FIGURES
        }
        if record["state"] != TrialState.COMPLETE:
            continue  # its folder is removed, as before
        trial_dir = out / "trials" / str(record["number"])
        assert (trial_dir / "model.pt").is_file()  # where a single-target run keeps it
        onnx = trial_dir / "onnxruntime" / "model.onnx"
        assert entries["onnxruntime"]["artifact"] == "onnxruntime/model.onnx"
        assert entries["onnxruntime"]["size_bytes"] == onnx.stat().st_size
        deployed = load_artifact(onnx, task.model)  # an ONNX Runtime session
        assert type(deployed.session).__name__ == "InferenceSession"
        assert task.evaluate(deployed) == pytest.approx(entries["onnxruntime"]["accuracy"])


def test_the_teacher_is_measured_on_each_target(run):
    out, result = run
    teacher = json.loads((out / "teacher.json").read_text())
    assert list(teacher["targets"]) == list(TARGETS)
    for key in ("accuracy", "size_bytes", "latency_ms"):
        assert teacher["targets"]["torch"][key] == teacher[key]
    identity = next(r for r in result.trials if r["start"] == "identity")
    for name in TARGETS:  # the identity trial's artifact is the teacher's, byte for byte
        own = teacher["targets"][name]
        assert identity["metrics"]["targets"][name]["size_bytes"] == own["size_bytes"]
        assert identity["metrics"]["targets"][name]["accuracy"] == pytest.approx(own["accuracy"])
    assert teacher["targets"]["onnxruntime"]["size_bytes"] != teacher["size_bytes"]


def test_pareto_json_has_a_front_per_target_on_its_own_figures(run):
    out, result = run
    doc = json.loads((out / "pareto.json").read_text())
    teacher = json.loads((out / "teacher.json").read_text())
    objectives = doc["objectives"]
    assert set(doc["fronts"]) == set(TARGETS)
    for name in TARGETS:
        views = [
            {
                "number": r["number"],
                "state": r["state"],
                "metrics": r["metrics"]["targets"][name],
                "teacher": r["teacher"]["targets"][name],
            }
            for r in _measured(result)
        ]
        expected = [v["number"] for v in front(views, objectives, teacher["targets"][name])]
        assert [t["number"] for t in doc["fronts"][name]] == expected
        for point in doc["fronts"][name]:
            record = next(r for r in result.trials if r["number"] == point["number"])
            assert point["metrics"] == record["metrics"]["targets"][name]
    assert [t["number"] for t in doc["trials"]] == [t["number"] for t in doc["fronts"]["torch"]]


def test_report_compare_and_mlflow_show_every_target(run, tmp_path):
    out, result = run
    html = (out / "report.html").read_text()
    for name in TARGETS:
        assert f'id="front-{name}"' in html
    rows, _, _ = api.compare(out, out=tmp_path / "compare")
    assert [r["search"] for r in rows] == [f"mlp on {n}" for n in TARGETS]
    assert rows[1]["best_size_bytes"] == min(
        r["metrics"]["targets"]["onnxruntime"]["size_bytes"]
        for r in result.trials
        if r["state"] == TrialState.COMPLETE
        and r["metrics"]["targets"]["onnxruntime"]["accuracy"]
        >= result.teacher["targets"]["onnxruntime"]["accuracy"] - 0.01
    )
    record = _measured(result)[1]
    logged = {m.key: m.value for m in trial_metrics(record["metrics"], [], record, 0)}
    entry = record["metrics"]["targets"]["onnxruntime"]
    assert logged["onnxruntime.latency_ms"] == entry["latency_ms"]
    assert logged["accuracy"] == record["metrics"]["accuracy"]
    assert not any(k.startswith("torch.") for k in logged)


def _traces(page: str, div_id: str) -> list[dict]:
    """The plotly traces the report draws into ``div_id``."""
    start = re.search(rf'Plotly\.newPlot\(\s*"{re.escape(div_id)}",\s*', page)
    assert start is not None, f"no plot {div_id} in the report"
    return json.JSONDecoder().raw_decode(page, start.end())[0]


def test_the_report_draws_each_targets_front_from_its_own_figures(run):
    out, result = run
    page = (out / "report.html").read_text()
    fronts = json.loads((out / "pareto.json").read_text())["fronts"]
    scale = axis("size_bytes")[1]
    for name in TARGETS:
        traces = {t["uid"]: t for t in _traces(page, f"front-{name}-size_bytes-accuracy")}
        own = [p["metrics"]["size_bytes"] * scale for p in fronts[name]]
        assert traces["pareto"]["x"] == pytest.approx(own)
        assert traces["pareto"]["y"] == pytest.approx([p["metrics"]["accuracy"] for p in fronts[name]])  # fmt: skip
        teacher = result.teacher["targets"][name]["size_bytes"] * scale
        assert traces["teacher"]["x"] == pytest.approx([teacher])


def test_export_target_copies_or_rebuilds_that_targets_artifact(run, tmp_path):
    out, result = run
    record = next(r for r in result.trials if r["state"] == TrialState.COMPLETE)
    n = record["number"]
    cli = subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "export", str(out), "--trial", str(n),
         "--out", str(tmp_path / "ort"), "--target", "onnxruntime"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    exported = json.loads((tmp_path / "ort" / "metrics.json").read_text())
    assert (tmp_path / "ort" / "model.onnx").is_file()
    entry = record["metrics"]["targets"]["onnxruntime"]
    assert {k: exported[k] for k in FIGURES} == {k: entry[k] for k in FIGURES}
    torch_out = api.export(out, out=tmp_path / "torch", trial=n, target="torch").metrics
    assert {k: torch_out[k] for k in FIGURES} == {k: record["metrics"][k] for k in FIGURES}
    # not kept: rebuilt from the policy and seed, fine-tuned as the search did, converted again
    shutil.rmtree(out / "trials" / str(n) / "onnxruntime")
    rebuilt = api.export(out, out=tmp_path / "rebuilt", trial=n, target="onnxruntime").metrics
    assert rebuilt["accuracy"] == pytest.approx(entry["accuracy"])
    assert rebuilt["size_bytes"] == entry["size_bytes"]
    # --pick on one target's front, against the teacher on that runtime
    fastest = min(
        json.loads((out / "pareto.json").read_text())["fronts"]["onnxruntime"],
        key=lambda t: t["compared"]["latency_ms"],
    )
    picked = api.export(
        out, out=tmp_path / "p", max_accuracy_drop=1.0, by="latency", target="onnxruntime"
    )
    assert picked.trial == fastest["number"] and picked.metrics["target"] == "onnxruntime"
    with pytest.raises(ConfigError, match="measured target"):
        api.export(out, out=tmp_path / "x", trial=n, target="openvino")


# -- config --------------------------------------------------------------------------------
def _config(**keys):
    return {"name": "m", "task": MLP_TASK, "backend": "local", **keys}


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"target": "torch", "targets": ["onnxruntime"]}, "both 'target' and 'targets'"),
        ({"targets": ["torch", "tensorrt"]}, "unknown target 'tensorrt'"),
        ({"targets": ["torch"], "objective_target": "openvino"}, "objective_target"),
        ({"targets": ["torch", "onnxruntime"], "target_options": {"linear": "x"}}, "'linear'"),
    ],
)
def test_config_mistakes_are_one_line_and_exit_2(tmp_path, keys, message):
    with pytest.raises(ConfigError, match=message) as e:
        SearchConfig.from_dict(_config(**keys))
    assert "\n" not in str(e.value)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(_config(**keys)))
    cli = subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "search", str(path)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 2
    assert message.replace("'", "") in cli.stderr.replace("'", "")
    assert cli.stderr.strip().count("\n") == 0 and "Traceback" not in cli.stderr


def test_a_missing_runtime_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    with pytest.raises(ConfigError, match=r'pip install "autocompress\[openvino\]"') as e:
        SearchConfig.from_dict(_config(targets=["onnxruntime", "openvino"]))
    assert "\n" not in str(e.value)


def test_objective_target_and_per_target_options():
    config = SearchConfig.from_dict(
        _config(
            targets=["torch", "onnxruntime"],
            objective_target="onnxruntime",
            target_options={"onnxruntime": {"linear": "dynamic"}},
        )
    )
    assert config.target == "onnxruntime" and config.extra_targets == ("torch",)
    options = CompressOptions.from_config(config)
    assert options.target.linear == "dynamic" and options.targets == {"torch": {}}
    again = SearchConfig.from_dict(config.to_dict())  # config.json reads back
    assert again == config and "target" not in config.to_dict()
    single = SearchConfig.from_dict(_config(target="onnxruntime"))
    assert "targets" not in single.to_dict() and single.all_targets == ("onnxruntime",)
    assert SearchConfig.from_dict(_config(targets=["onnxruntime"])).target == "onnxruntime"


def test_a_target_failing_for_one_trial_is_recorded_against_it(tmp_path, capfd):
    """ExecuTorch runs 8 and 32 bits only: the int4 trial's executorch entry is its error, the
    trial completes on torch; the identity trial is measured on both."""
    config = local_config(
        tmp_path / "run",
        targets=["torch", "executorch"],
        trials=2,
        epochs=0,
        starts=["identity", "int4"],
    )
    result = api.run_search(config)
    by_start = {r["start"]: r for r in result.trials}
    broken = by_start["int4"]
    assert broken["state"] != TrialState.FAILED
    entry = broken["metrics"]["targets"]["executorch"]
    assert (
        entry["target"] == "executorch"
        and "4 bits cannot run on target 'executorch'" in (entry["error"])
    )
    assert broken["metrics"]["targets"]["torch"]["size_bytes"] == broken["metrics"]["size_bytes"]
    fine = by_start["identity"]["metrics"]["targets"]["executorch"]
    assert "error" not in fine and fine["size_bytes"] > 0
    assert (tmp_path / "run" / "trials" / "0" / "executorch" / "model.pte").is_file()
    printed = capfd.readouterr().err  # the progress line names the target and its error
    assert f"#{broken['number']} " in printed and "executorch failed: target executorch" in printed
    doc = json.loads((tmp_path / "run" / "pareto.json").read_text())
    assert broken["number"] not in [t["number"] for t in doc["fronts"]["executorch"]]
