"""The session: one record shape, one teacher per comparison, resume that cannot mix studies,
and a metric added in one place reaching records, report and MLflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from _support.models import mlp_task
from conftest import local_config

from autocompress.api import make_tracker, run_search
from autocompress.errors import ConfigError
from autocompress.policy import Policy
from autocompress.study._controller import Proposal
from autocompress.study.presets import preset_dir
from autocompress.study.records import new_record


@pytest.fixture(scope="module")
def task():
    return mlp_task()


def test_new_record_is_the_one_record_shape():
    proposal = Proposal(number=3, policy=Policy(), params={}, start=None, seed=7)
    teacher = {"accuracy": 0.5, "latency_ms": 1.0}
    stopped = new_record(
        proposal, state="pruned", teacher=teacher, error="stopped", where={"node": "n1"}
    )
    assert stopped["number"] == 3 and stopped["seed"] == 7 and stopped["node"] == "n1"
    assert stopped["teacher"] == teacher and stopped["metrics"] == {}
    finished = new_record(
        proposal,
        state="complete",
        teacher=teacher,
        trial={"state": "complete", "metrics": {"accuracy": 0.4}, "host": "h"},
        where={"host": "other"},
    )
    assert set(finished) == set(stopped)
    assert finished["host"] == "h"  # the trial's own value wins over the backend's guess


def test_resume_reuses_the_teacher_and_every_record_carries_it(task, tmp_path):
    run = tmp_path / "run"
    run_search(local_config(run, trials=3), task)
    baseline = (run / "teacher.json").read_text()
    result = run_search(local_config(run, trials=4), task)
    assert (run / "teacher.json").read_text() == baseline  # not re-measured
    teacher = json.loads(baseline)
    pareto = json.loads((run / "pareto.json").read_text())
    assert pareto["teacher"] == teacher
    for r in result.trials:
        assert r["teacher"]["accuracy"] == teacher["accuracy"]
        assert r["teacher"]["size_bytes"] == teacher["size_bytes"]
        if r["state"] == "complete":
            m = r["metrics"]
            assert m["speedup"] == pytest.approx(r["teacher"]["latency_ms"] / m["latency_ms"])
    identity = result.trials[0]
    assert identity["start"] == "identity"
    assert identity["metrics"]["size_bytes"] == teacher["size_bytes"]


def _preset_copy(tmp_path: Path, folder: str, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    shutil.copyfile(preset_dir(folder) / f"{name}.yaml", path)
    return path


def test_resume_refuses_any_change_of_the_study(task, tmp_path):
    run = tmp_path / "run"
    space = _preset_copy(tmp_path, "search_spaces", "default")
    objectives = _preset_copy(tmp_path, "objectives", "accuracy-size-latency")
    files = {"search_space": str(space), "objectives": str(objectives)}
    run_search(local_config(run, trials=1, **files), task)

    for key, change in (("name", "other"), ("importance", "magnitude"), ("seed", 3)):
        with pytest.raises(ConfigError, match=f"different '{key}'") as err:
            run_search(local_config(run, trials=2, **files, **{key: change}), task)
        assert "\n" not in str(err.value)

    data = yaml.safe_load(objectives.read_text())
    data["constraints"][0]["max_drop"] = 0.2
    objectives.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="different 'objectives_hash'"):
        run_search(local_config(run, trials=2, **files), task)

    shutil.copyfile(preset_dir("objectives") / "accuracy-size-latency.yaml", objectives)
    space.write_text(space.read_text().replace("high: 0.7", "high: 0.6"))
    with pytest.raises(ConfigError, match="different 'space_hash'"):
        run_search(local_config(run, trials=2, **files), task)
    # comments do not change what the space resolves to: the same study goes on
    shutil.copyfile(preset_dir("search_spaces") / "default.yaml", space)
    space.write_text("# a comment\n" + space.read_text())
    assert len(run_search(local_config(run, trials=2, **files), task).trials) == 2


def test_macs_objective_reaches_records_report_study_and_mlflow(task, tmp_path):
    run = tmp_path / "run"
    config = local_config(
        run,
        trials=4,
        objectives="accuracy-macs",
        tracking=True,
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        report_every=0,
    )
    result = run_search(config, task, tracker=make_tracker(config))

    complete = [r for r in result.trials if r["state"] == "complete"]
    assert complete and all(r["metrics"]["macs"] > 0 for r in complete)
    pareto = json.loads((run / "pareto.json").read_text())
    assert [o["name"] for o in pareto["objectives"]] == ["accuracy", "macs"]
    assert all("macs" in t["compared"] for t in pareto["trials"])
    html = (run / "report.html").read_text()
    assert "<th>MACs</th>" in html and "MACs vs" not in html  # a column; accuracy on y
    assert "accuracy vs MACs" in html

    study = optuna.load_study(study_name="mlp", storage=f"sqlite:///{run / 'study.db'}")
    assert study.metric_names == ["accuracy", "macs"]
    first = study.trials[0]
    assert first.user_attrs["autocompress.policy"] == result.trials[0]["policy"]

    client = mlflow.MlflowClient(tracking_uri=config.tracking_uri)
    experiment = client.get_experiment_by_name("mlp")
    children = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`trial.number` = '0'"
    )
    assert children[0].data.metrics["macs"] == result.trials[0]["metrics"]["macs"]
    assert children[0].data.metrics["teacher.macs"] == result.teacher["macs"]
