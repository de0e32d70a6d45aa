"""A config that names only the task, the target and the objectives gets the benchmarked search:
the ``refine`` space (depth included where the model has droppable blocks), the measured start
``[identity, auto]`` and the polish stage (issue #20, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from autocompress.api import run_search
from autocompress.study._polish_plan import EPOCHS_FACTOR, PolishSettings, polish_settings
from autocompress.study.config import SearchConfig

TESTS = Path(__file__).resolve().parents[1]


def test_the_config_defaults_are_the_benchmarked_search():
    cfg = SearchConfig.from_dict({"name": "d", "task": "t.py:f"})
    assert cfg.search_space == "refine"
    assert cfg.starts == ("identity", "auto")
    assert polish_settings(cfg.polish) == PolishSettings()
    # the demo writes none of these: it runs the defaults rather than repeating them
    demo = yaml.safe_load((TESTS.parent / "examples" / "digits" / "search.yaml").read_text())
    assert not {"search_space", "starts", "baselines", "polish"} & set(demo)


def test_a_config_naming_only_task_target_and_objectives_searches_with_depth_start_and_polish(
    tmp_path,
):
    path = tmp_path / "search.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "defaults",
                "task": str(TESTS / "_support" / "tasks.py") + ":cnn",
                "target": "torch",
                "objectives": "accuracy-size-latency",
                # kept small for the suite: these are sizes, not choices
                "trials": 4,
                "epochs": 1,
                "backend": "local",
                "tracking": False,
                "report_every": 0,
                "out": str(tmp_path / "run"),
            }
        )
    )
    result = run_search(SearchConfig.from_yaml(path))
    run = tmp_path / "run"
    start = json.loads((run / "start.json").read_text())
    assert start["plan"]["depths"][0] == 0 and len(start["plan"]["depths"]) > 1  # depth axis
    space_params = {k for r in result.trials for k in r["params"]}
    assert "global.depth" in space_params or any(r["start"] for r in result.trials)
    assert [r["start"] for r in result.trials[:1]] == ["identity"]
    pareto = json.loads((run / "pareto.json").read_text())
    polished = pareto["polish"]["trials"]
    assert polished, pareto["polish"]
    records = [json.loads(line) for line in (run / "polish.jsonl").read_text().splitlines()]
    for record in records:
        searched = next(r for r in result.trials if r["number"] == record["number"])
        epochs = searched["policy"]["finetune"]["epochs"]
        assert record["policy"]["finetune"]["epochs"] == EPOCHS_FACTOR * max(1, epochs)
        assert record["artifact"] == f"trials/{record['number']}/polish"
    for point in pareto["trials"]:  # a polished point on the front keeps its artifact
        if point.get("polished"):
            assert (run / "trials" / str(point["number"]) / "polish").is_dir()
