"""Run directories and configs written before the teacher/starts naming still load.

A real 3-trial search is turned into the old format by hand (``baseline.json``, ``pareto.json``'s
``baseline``, ``baselines:`` in config.yaml and identity.json); report, compare, pick/export and
resume then read it as before. Configs: ``baselines:`` is read as ``starts:``; both is an error.
"""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from _support.models import mlp_task
from _support.study_inputs import QUICK_SEARCH
from conftest import local_config

from autocompress.api import run_search
from autocompress.errors import ConfigError
from autocompress.reporting.comparison import compare
from autocompress.reporting.export import export_trial, pick_trial
from autocompress.reporting.report import load_run, write_report
from autocompress.study.config import SearchConfig
from autocompress.study.rundir import RunDir


@pytest.fixture(scope="module")
def task():
    return mlp_task()


def _old_record(record: dict) -> dict:
    """A trial record as earlier versions wrote it: the start policy's name under
    ``baseline``, the teacher's figures in its metrics under ``baseline``."""
    record = {("baseline" if k == "start" else k): v for k, v in record.items()}
    metrics = record.get("metrics") or {}
    if "teacher" in metrics:
        record["metrics"] = {("baseline" if k == "teacher" else k): v for k, v in metrics.items()}
    return record


def test_old_trial_records_read_under_the_new_names(old_run):
    run, new = old_run
    assert '"baseline"' in (run / "trials.jsonl").read_text()
    records = RunDir(run).records()[: len(new.trials)]
    assert [r["start"] for r in records] == [r["start"] for r in new.trials]
    done = [r for r in records if r["state"] == "complete"]
    assert done and all(r["metrics"]["teacher"] for r in done)
    assert all("baseline" not in r and "baseline" not in r["metrics"] for r in records)
    pareto = RunDir(run).read_pareto()
    assert pareto["trials"] and all("teacher" in t["metrics"] for t in pareto["trials"])
    assert all("baseline" not in t["metrics"] for t in pareto["trials"])


@pytest.fixture(scope="module")
def old_run(task, tmp_path_factory):
    """A real search, rewritten in the format of earlier versions."""
    run = tmp_path_factory.mktemp("legacy") / "run"
    new = run_search(local_config(run, trials=3, report_every=0), task)
    assert (run / "teacher.json").is_file() and not (run / "baseline.json").exists()
    pareto = json.loads((run / "pareto.json").read_text())
    assert pareto["teacher"] == new.teacher and "baseline" not in pareto
    assert yaml.safe_load((run / "config.yaml").read_text())["starts"] == list(new_starts())

    (run / "teacher.json").rename(run / "baseline.json")
    pareto = {("baseline" if k == "teacher" else k): v for k, v in pareto.items()}
    pareto["trials"] = [_old_record(t) for t in pareto["trials"]]
    trials = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    assert all("start" in r and "baseline" not in r for r in trials)
    (run / "trials.jsonl").write_text("".join(json.dumps(_old_record(r)) + "\n" for r in trials))
    (run / "pareto.json").write_text(json.dumps(pareto, indent=2))
    for name, text in (("config.yaml", "starts:"), ("identity.json", '"starts":')):
        path = run / name
        path.write_text(path.read_text().replace(text, text.replace("starts", "baselines")))
    for path in (run / "report.html", run / "pareto.png"):
        path.unlink(missing_ok=True)
    return run, new


def new_starts() -> tuple[str, ...]:
    return QUICK_SEARCH["starts"]  # what local_config searches with


def test_an_old_run_directory_reports(old_run):
    run, new = old_run
    assert load_run(run).teacher == new.teacher
    html, png = write_report(run)
    assert html.stat().st_size > 0 and png.stat().st_size > 0


def test_an_old_run_directory_compares(old_run, tmp_path):
    run, new = old_run
    rows, _, _ = compare([str(run)], out_dir=tmp_path)
    assert rows[0]["teacher_accuracy"] == new.teacher["accuracy"]
    assert rows[0]["hypervolume"] is not None  # normalized by the old file's teacher


def test_an_old_run_directory_exports(old_run, tmp_path):
    run, new = old_run
    number = pick_trial(run, max_accuracy_drop=1.0)
    assert number in {t["number"] for t in new.pareto}
    metrics = export_trial(run, number, tmp_path / "out")
    assert (tmp_path / "out" / "policy.json").is_file() and metrics


def test_an_old_run_directory_resumes(old_run, task, tmp_path):
    run, new = old_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    teacher_before = (copy / "baseline.json").read_text()
    resumed = run_search(local_config(copy, trials=4, report_every=0), task, resume=True)
    assert resumed.teacher == json.loads(teacher_before)  # read back, not measured again
    assert [r["number"] for r in resumed.trials] == [0, 1, 2, 3]
    assert resumed.trials[:3] == new.trials
    assert json.loads((copy / "pareto.json").read_text())["teacher"] == new.teacher


def test_config_baselines_is_read_as_starts(tmp_path):
    base = {"name": "c", "task": "t.py:f"}
    old = SearchConfig.from_dict({**base, "baselines": ["identity", "int8"]})
    assert old == SearchConfig.from_dict({**base, "starts": ["identity", "int8"]})
    assert old.starts == ("identity", "int8") and "baselines" not in old.to_dict()
    path = tmp_path / "search.yaml"
    path.write_text("name: c\ntask: t.py:f\nbaselines: [int8]\n")
    assert SearchConfig.from_yaml(path).starts == ("int8",)
    with pytest.raises(ConfigError, match=r"^search\.yaml: .*baselines: .*unknown start"):
        SearchConfig.from_dict({**base, "baselines": ["int5"]}, source="search.yaml")


def test_config_with_both_names_is_one_line_error(tmp_path):
    path = tmp_path / "search.yaml"
    path.write_text("name: c\ntask: t.py:f\nstarts: [int8]\nbaselines: [int8]\n")
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_yaml(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    assert "'baselines'" in message and "'starts'" in message
