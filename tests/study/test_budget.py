"""``budget: 30m``: a wall-clock budget instead of a trial count, shared by the start and the
trials; progress shows the time left; bad values are one line."""

from __future__ import annotations

import time

import pytest
from _support.study_inputs import QUICK_SEARCH, QUICK_SEARCH_YAML
from typer.testing import CliRunner

from autocompress.api import run_search
from autocompress.cli import app
from autocompress.errors import ConfigError
from autocompress.study.budget import MAX_TRIALS, Budget, parse_budget
from autocompress.study.config import SearchConfig


def test_durations_parse_or_fail_in_one_line():
    assert parse_budget("90s") == 90 and parse_budget("30m") == 1800
    assert parse_budget("1h30m") == 5400 and parse_budget(" 2H ") == 7200
    assert parse_budget(45) == 45.0
    for bad in ("30", "3 weeks", "m30", "", "-5m", 0, True, None):
        with pytest.raises(ConfigError, match="duration|longer than 0"):
            parse_budget(bad)
    with pytest.raises(ConfigError, match=r"budget: 'soon' is not a duration"):
        SearchConfig.from_dict({"name": "b", "task": "t.py:f", "budget": "soon"})
    only_budget = SearchConfig.from_dict({"name": "b", "task": "t.py:f", "budget": "10m"})
    assert only_budget.trials == MAX_TRIALS  # the budget bounds the search
    both = SearchConfig.from_dict({"name": "b", "task": "t.py:f", "budget": "10m", "trials": 5})
    assert both.trials == 5


def test_a_spent_budget_asks_no_new_trial(tmp_path, capfd):
    budget = 6.0
    cfg = SearchConfig.from_dict(
        {
            **QUICK_SEARCH,
            "name": "budget",
            "task": "tests/_support/tasks.py:mlp",
            "backend": "local",
            "tracking": False,
            "epochs": 1,
            "report_every": 0,
            "budget": f"{budget:g}s",
            "out": str(tmp_path / "run"),
        }
    )
    began = time.monotonic()
    result = run_search(cfg)
    took = time.monotonic() - began
    durations = [r["duration_s"] for r in result.trials]
    assert 1 <= len(result.trials) < MAX_TRIALS
    # the last trial started inside the budget; nothing started after it was spent
    assert took <= budget + max(durations) + 10.0, (took, durations)
    err = capfd.readouterr().err
    assert "budget left" in err and "/10000" not in err


def test_budget_left_counts_down():
    b = Budget(0.2)
    assert not b.spent and 0 < b.left() <= 0.2
    time.sleep(0.25)
    assert b.spent


def test_cli_budget_flag_and_summary(tmp_path):
    import yaml

    cfg = tmp_path / "search.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "name": "budget-cli",
                "task": "tests/_support/tasks.py:mlp",
                "backend": "local",
                "epochs": 0,
                "report_every": 0,
                **QUICK_SEARCH_YAML,
                "starts": ["identity"],
            }
        )
    )
    out = CliRunner().invoke(
        app, ["search", str(cfg), "--budget", "2s", "--out", str(tmp_path / "r"), "--no-tracking"]
    )
    assert out.exit_code == 0, out.output
    assert "budget 2s, " in out.stdout and "recorded" in out.stdout


def test_the_polish_reserve_narrows_to_its_measured_cost_during_a_search(tmp_path):
    """A real local search with a budget and a polish: once trials have trained, the share kept
    for the polish shrinks to the polish's estimated cost (these trials take well under a
    second; a quarter of the budget is 4 s), so the search asks trials past that quarter."""
    from autocompress.study._polish_plan import POLISH_BUDGET_SHARE
    from autocompress.study.backends import local
    from autocompress.study.polish import polish_stage, with_budget_share
    from autocompress.study.session import finish, prepare

    cfg = SearchConfig.from_dict(
        {
            **QUICK_SEARCH,
            "name": "reserve",
            "task": "tests/_support/tasks.py:mlp",
            "backend": "local",
            "tracking": False,
            "epochs": 1,
            "report_every": 0,
            "budget": "16s",
            "polish": {"candidates": 1, "epochs": 2},
            "out": str(tmp_path / "run"),
        }
    )
    session = prepare(cfg)
    with_budget_share(session, POLISH_BUDGET_SHARE)
    cap = POLISH_BUDGET_SHARE * 16.0
    assert session.budget.reserve == cap  # nothing trained yet: the whole share
    local.run(session)
    trained = [r for r in session.controller.records.values() if r["policy"]["finetune"]["epochs"]]
    assert len(trained) >= 3
    assert 0 < session.budget.reserve < cap
    polish_stage(session, getattr(local, "polish", None))  # whatever time is left
    finish(session)
