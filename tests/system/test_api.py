"""One Python function per CLI command: each, called on a real tiny run (a 2-trial local search of
the MLP task), returns what the command prints for the same inputs."""

from __future__ import annotations

import json

import pytest
from _support.runs import same_trials, timing_free
from _support.study_inputs import QUICK_SEARCH_YAML
from conftest import MLP_TASK
from typer.testing import CliRunner

import autocompress
from autocompress.cli import app
from autocompress.reporting.comparison import format_table
from autocompress.study.rundir import RunDir

POLICY = {"prune": {"default": 0.5}, "quant": {"default": 8}, "finetune": {"epochs": 1}}


def cli(*args: object) -> str:
    """The command's stdout (it must succeed)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, object]:
    """The same search config run by ``search_config`` and by ``autocompress search``."""
    root = tmp_path_factory.mktemp("api")
    config = root / "search.yaml"
    config.write_text(
        # fixed starts, no polish: the measured start keeps bit-widths by timing, which two
        # runs on a loaded machine need not agree on
        json.dumps(
            {**QUICK_SEARCH_YAML, "name": "api", "task": MLP_TASK, "trials": 2, "epochs": 1}
            | {"seed": 0}
        )
    )
    result = autocompress.search_config(config, out=root / "api", backend="local", tracking=False)
    printed = cli("search", config, "--out", root / "cli", "--backend", "local", "--no-tracking")
    return {"root": root, "result": result, "printed": printed}


def test_search_config_runs_the_search_the_cli_runs(runs):
    result, printed = runs["result"], runs["printed"]
    assert result.config.trials == 2 and result.run_dir == runs["root"] / "api"
    same_trials(result.trials, RunDir(runs["root"] / "cli").records())
    failed = sum(r["state"] == "failed" for r in result.trials)
    # the CLI prints its own run's front (which trials dominate depends on timings: the two runs'
    # fronts may differ on a loaded machine, so the count is read from the CLI's run)
    cli_front = RunDir(runs["root"] / "cli").read_pareto()["trials"]
    assert printed.startswith(
        f"2 trials asked, {len(result.trials)} recorded ({failed} failed), "
        f"{len(cli_front)} on the Pareto front"
    )


def test_apply_returns_what_the_cli_writes_and_prints(tmp_path):
    result = autocompress.apply(MLP_TASK, POLICY, out_dir=tmp_path / "api")
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    printed = cli("apply", "--task", MLP_TASK, "--policy", policy, "--out", tmp_path / "cli")
    shown = json.loads(printed[: printed.rindex("}") + 1])
    assert timing_free(shown) == timing_free(
        {k: v for k, v in result.metrics.items() if k != "layers"}
    )
    written = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    assert timing_free(written) == timing_free(result.metrics)
    assert (tmp_path / "api" / "policy.json").read_text() == (
        tmp_path / "cli" / "policy.json"
    ).read_text()


def test_apply_takes_a_task_object_and_a_policy_file(tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    by_spec = autocompress.apply(MLP_TASK, POLICY, out_dir=tmp_path / "a")
    by_object = autocompress.apply(autocompress.load_task(MLP_TASK), policy, out_dir=tmp_path / "b")
    assert timing_free(by_object.metrics) == timing_free(by_spec.metrics)


def test_inspect_returns_the_printed_table():
    text = autocompress.inspect(MLP_TASK, space="default")
    assert "net.0" in text and "dimension:" in text
    assert cli("inspect", "--task", MLP_TASK, "--space", "default") == text + "\n"


def test_report_returns_the_files_the_cli_names(runs):
    run = runs["root"] / "api"
    paths = autocompress.report(run)
    assert [p.name for p in paths] == ["report.html", "pareto.png"]
    assert all(p.is_file() for p in paths)
    assert cli("report", run).splitlines() == [f"wrote {p}" for p in paths]


def test_export_picks_and_writes_what_the_cli_does(runs, tmp_path):
    run = runs["root"] / "api"
    picked = autocompress.export(run, out=tmp_path / "api", max_accuracy_drop=1.0, by="size")
    smallest = min(runs["result"].pareto, key=lambda t: t["metrics"]["size_bytes"])
    assert picked.trial == smallest["number"] and picked.out == tmp_path / "api"
    assert picked.metrics == json.loads((tmp_path / "api" / "metrics.json").read_text())
    printed = cli("export", run, "--pick", "--max-accuracy-drop", "1.0", "--out", tmp_path / "cli")
    assert printed.startswith(f"trial {picked.trial}: accuracy {picked.metrics['accuracy']:.4f}")
    assert timing_free(json.loads((tmp_path / "cli" / "metrics.json").read_text())) == timing_free(
        picked.metrics
    )
    by_number = autocompress.export(run, out=tmp_path / "n", trial=picked.trial)
    assert by_number.metrics == picked.metrics


def test_compare_returns_the_rows_the_cli_prints(runs, tmp_path):
    sources = (runs["root"] / "api", runs["root"] / "cli")
    rows, html, png = autocompress.compare(*sources, out=tmp_path / "api")
    assert [r["trials"] for r in rows] == [len(runs["result"].trials)] * 2
    assert html.is_file() and png.is_file()
    printed = cli("compare", *sources, "--out", tmp_path / "cli")
    assert printed.startswith(format_table(rows))


def test_sync_uploads_what_the_cli_uploads(runs, tmp_path):
    run = runs["root"] / "api"
    uri = f"sqlite:///{tmp_path / 'api.db'}"
    uploaded, used = autocompress.sync(run, tracking_uri=uri)
    assert used == uri and uploaded == len(runs["result"].trials)
    assert autocompress.sync(run, tracking_uri=uri) == (0, uri)  # all tracked already
    other = f"sqlite:///{tmp_path / 'cli.db'}"
    assert cli("sync", run, "--tracking-uri", other) == f"uploaded {uploaded} trial(s) to {other}\n"
