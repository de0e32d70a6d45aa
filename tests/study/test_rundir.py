"""The run directory: atomic files, one trials.jsonl reader, the study identity."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from autocompress.errors import ConfigError
from autocompress.reporting.comparison import compare
from autocompress.reporting.report import load_run
from autocompress.study.rundir import RunDir, atomic_write_text, read_jsonl

OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "size_bytes", "direction": "minimize"},
]
TEACHER = {"accuracy": 0.9, "size_bytes": 1000, "latency_ms": 1.0}


def _record(number: int, accuracy: float, size: int) -> dict:
    return {
        "number": number,
        "state": "complete",
        "policy": {},
        "metrics": {"accuracy": accuracy, "size_bytes": size, "latency_ms": 0.5},
        "teacher": TEACHER,
    }


def _run_dir(tmp_path: Path) -> RunDir:
    rd = RunDir(tmp_path / "run")
    rd.create()
    rd.write_json(
        "pareto.json",
        {"name": "t", "objectives": OBJECTIVES, "baseline": TEACHER, "trials": []},
    )
    for rec in (_record(0, 0.9, 1000), _record(1, 0.8, 500)):
        rd.append(rec)
    return rd


def test_torn_last_line_is_skipped_the_same_way_by_every_reader(tmp_path):
    rd = _run_dir(tmp_path)
    with rd.trials_file.open("a") as fh:
        fh.write('{"number": 2, "state": "comp')  # a writer killed mid-line
    assert [r["number"] for r in read_jsonl(rd.trials_file)] == [0, 1]
    assert [r["number"] for r in rd.records()] == [0, 1]
    assert [r["number"] for r in load_run(rd.path).records] == [0, 1]
    rows, _, _ = compare([str(rd.path)], out_dir=tmp_path / "cmp")
    assert rows[0]["trials"] == 2


def test_a_damaged_middle_line_is_one_error_naming_the_line(tmp_path):
    rd = _run_dir(tmp_path)
    text = rd.trials_file.read_text().splitlines()
    rd.trials_file.write_text("\n".join([text[0], "{oops", text[1]]) + "\n")
    with pytest.raises(ConfigError, match=r"trials.jsonl:2: not a JSON trial record"):
        rd.records()
    with pytest.raises(ConfigError, match=r"trials.jsonl:2"):
        load_run(rd.path)


def test_malformed_pareto_json_is_a_config_error(tmp_path):
    rd = _run_dir(tmp_path)
    (rd.path / "pareto.json").write_text('{"trials": [')
    with pytest.raises(ConfigError, match="pareto.json: damaged, not valid JSON"):
        load_run(rd.path)


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    path = tmp_path / "doc.json"
    atomic_write_text(path, "old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert os.listdir(tmp_path) == ["doc.json"]


def test_identity_names_the_differing_key(tmp_path):
    rd = RunDir(tmp_path)
    rd.check_identity({"name": "a", "importance": "taylor"})
    rd.check_identity({"name": "a", "space_hash": "123"})  # new keys are added
    with pytest.raises(ConfigError, match="different 'importance'") as err:
        rd.check_identity({"importance": "magnitude"})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="different 'space_hash'"):
        rd.check_identity({"space_hash": "456"})
    assert json.loads((tmp_path / "identity.json").read_text()) == {
        "name": "a",
        "importance": "taylor",
        "space_hash": "123",
    }
