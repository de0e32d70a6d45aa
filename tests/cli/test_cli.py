from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from _support.models import MLP
from _support.subprocesses import run_python

from autocompress import load_artifact
from autocompress.techniques.importance import IMPORTANCES

# _support.toy_plugins.WEAK_ROW_SUM: not imported here, importing it registers ``toy`` in this
# process (the test shows the CLI's own process registers it when the task loads)
WEAK_ROW_SUM = 0.1

TESTS = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(TESTS)}
TEACHER_KEYS = {"accuracy", "size_bytes", "latency_ms", "latency_p90_ms", "params", "macs"}
METRIC_KEYS = TEACHER_KEYS | {
    "speedup",
    "compression",
    "teacher",
    "layers",
    "artifact",
    "target",
    "threads",
    "finetune_scope",
    "trained_params",
    "trained_on",  # the device and precision fine-tuning ran in
    "teacher_paired",  # the teacher timed interleaved with the artifact
}
OPTIONAL_KEYS = {"latency_retakes"}  # only when a disturbed timing was taken again


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_python("-m", "autocompress.cli", *args, env=ENV, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def applied(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("apply")
    policy = root / "policy.json"
    policy.write_text(
        json.dumps({"prune": {"default": 0.5}, "quant": {"default": 8}, "finetune": {"epochs": 1}})
    )
    out = cli(
        "apply",
        "--task",
        f"{TESTS}/_support/tasks.py:mlp",
        "--policy",
        str(policy),
        "--out",
        str(root / "out"),
    )
    assert out.returncode == 0, out.stderr
    return root / "out"


def test_apply_writes_artifact_policy_and_metrics(applied):
    assert {p.name for p in applied.iterdir()} == {"model.pt", "policy.json", "metrics.json"}
    metrics = json.loads((applied / "metrics.json").read_text())
    assert set(metrics) - OPTIONAL_KEYS == METRIC_KEYS
    assert metrics["size_bytes"] == (applied / "model.pt").stat().st_size
    assert set(metrics["teacher"]) == TEACHER_KEYS


def test_artifact_loads_in_fresh_process_from_its_recorded_task(applied):
    code = (
        "import json, torch; from autocompress import load_artifact; "
        f"m = load_artifact(r'{applied}/model.pt'); "
        "x = torch.zeros(1, 64); print(json.dumps(m(x).tolist()))"
    )
    a = run_python("-c", code, env=ENV, check=True)
    b = run_python("-c", code, env=ENV, check=True)
    assert json.loads(a.stdout) == json.loads(b.stdout)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"prune": {"layers": {"nope.*": 0.5}}}, "prune.layers['nope.*'] matches no"),
        ({"quant": {"default": 5}}, "quant.default"),
        ({"prune": {"default": 0.1}, "typo": 1}, "unknown policy key typo"),
    ],
)
def test_apply_bad_policy_is_one_line_exit_2(tmp_path, policy, message):
    path = tmp_path / "p.json"
    path.write_text(json.dumps(policy))
    out = cli(
        "apply",
        "--task",
        f"{TESTS}/_support/tasks.py:mlp",
        "--policy",
        str(path),
        "--out",
        str(tmp_path / "o"),
    )
    assert out.returncode == 2
    assert message in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def test_missing_task_file_is_one_line_exit_2(tmp_path):
    path = tmp_path / "p.json"
    path.write_text("{}")
    out = cli(
        "apply", "--task", "nowhere.py:build", "--policy", str(path), "--out", str(tmp_path / "o")
    )
    assert out.returncode == 2
    assert "task file nowhere.py does not exist" in out.stderr


def test_inspect_prints_layers_and_dimension():
    out = cli("inspect", "--task", f"{TESTS}/_support/tasks.py:mlp", "--space", "default")
    assert out.returncode == 0, out.stderr
    assert "net.0" in out.stdout and "output layer" in out.stdout
    assert "dimension:" in out.stdout


def test_unknown_space_preset_exit_2():
    out = cli("inspect", "--task", f"{TESTS}/_support/tasks.py:mlp", "--space", "nosuchspace")
    assert out.returncode == 2
    assert "nosuchspace" in out.stderr


def test_search_export_and_report(tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(
        json.dumps(
            {"name": "cli", "task": f"{TESTS}/_support/tasks.py:mlp", "trials": 4, "epochs": 1}
        )
    )
    run = tmp_path / "run"
    out = cli("search", str(cfg), "--backend", "local", "--out", str(run), "--no-tracking")
    assert out.returncode == 0, out.stderr
    assert "on the Pareto front" in out.stdout
    pareto = json.loads((run / "pareto.json").read_text())
    number = pareto["trials"][0]["number"]
    recorded = pareto["trials"][0]["metrics"]

    exported = cli("export", str(run), "--trial", str(number), "--out", str(tmp_path / "e1"))
    assert exported.returncode == 0, exported.stderr
    assert (
        json.loads((tmp_path / "e1" / "metrics.json").read_text())["accuracy"]
        == recorded["accuracy"]
    )

    # a model the search did not keep is rebuilt deterministically from its policy and seed;
    # a polished trial is rebuilt as polished (its polish record holds the figures export gives)
    records = [json.loads(line) for line in (run / "trials.jsonl").read_text().splitlines()]
    polish = run / "polish.jsonl"
    lines = polish.read_text().splitlines() if polish.exists() else []
    polished = {r["number"]: r for r in map(json.loads, lines) if r["state"] == "complete"}
    records = [polished.get(r["number"], r) for r in records]
    dropped = [
        r
        for r in records
        if r["state"] == "complete" and not (run / "trials" / str(r["number"])).exists()
    ]
    for r in dropped:
        out_dir = tmp_path / f"rebuilt{r['number']}"
        rebuilt = cli("export", str(run), "--trial", str(r["number"]), "--out", str(out_dir))
        assert rebuilt.returncode == 0, rebuilt.stderr
        metrics = json.loads((out_dir / "metrics.json").read_text())
        assert metrics["accuracy"] == r["metrics"]["accuracy"], r["number"]
        assert metrics["size_bytes"] == r["metrics"]["size_bytes"], r["number"]

    picked = cli(
        "export",
        str(run),
        "--pick",
        "--max-accuracy-drop",
        "1.0",
        "--by",
        "size",
        "--out",
        str(tmp_path / "e3"),
    )
    assert picked.returncode == 0, picked.stderr
    smallest = min(pareto["trials"], key=lambda t: t["metrics"]["size_bytes"])
    assert picked.stdout.startswith(f"trial {smallest['number']}:")

    onnx = cli(
        "export",
        str(run),
        "--trial",
        str(number),
        "--format",
        "onnx",
        "--out",
        str(tmp_path / "e5"),
    )
    assert onnx.returncode == 0, onnx.stderr
    measured = json.loads((tmp_path / "e5" / "metrics.onnx.json").read_text())
    assert measured["target"] == "onnx" and measured["artifact"] == "model.onnx"
    assert measured["size_bytes"] == (tmp_path / "e5" / "model.onnx").stat().st_size
    assert all(rec["mode"] in ("float", "weight-only") for rec in measured["layers"].values())
    assert abs(measured["accuracy"] - recorded["accuracy"]) <= 0.05

    (run / "report.html").unlink()
    rebuilt_report = cli("report", str(run))
    assert rebuilt_report.returncode == 0, rebuilt_report.stderr
    assert (run / "report.html").exists() and (run / "pareto.png").exists()

    none = cli(
        "export", str(run), "--pick", "--max-accuracy-drop", "-1", "--out", str(tmp_path / "e4")
    )
    assert none.returncode == 2 and "no Pareto point" in none.stderr


# -- --importance: the registry's names, a plug-in criterion the task's module registers when
# the task loads, and an unknown name as one line

TOY_TASK = f"{TESTS / '_support' / 'tasks.py'}:mlp_with_toy_importance"


@pytest.fixture(scope="module")
def toy_policy(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_text(json.dumps({"prune": {"layers": {"net.0": 0.25}}}))  # 16 of 64 units go
    return path


def _apply(policy: Path, out: Path, importance: str) -> subprocess.CompletedProcess:
    return cli(
        "apply",
        "--task",
        TOY_TASK,
        "--policy",
        str(policy),
        "--out",
        str(out),
        "--importance",
        importance,
        "--repeats",
        "20",
    )


def test_apply_with_a_plug_in_criterion_the_task_module_registers(toy_policy, tmp_path):
    assert "toy" not in IMPORTANCES  # known only to the CLI's process, once the task loaded
    done = _apply(toy_policy, tmp_path / "toy", "toy")
    assert done.returncode == 0, done.stderr
    metrics = json.loads((tmp_path / "toy" / "metrics.json").read_text())
    assert metrics["layers"]["net.0"]["channels_kept"] == 48
    pruned = load_artifact(tmp_path / "toy", model=MLP())  # the architecture, not the task
    rows = pruned.net[0].weight.detach()
    # toy (inverse magnitude) keeps the weak unit 0 that magnitude and taylor drop first
    assert rows.shape == (48, 64) and rows[0].abs().sum() < WEAK_ROW_SUM
    assert (rows[1:].abs().sum(dim=1) > WEAK_ROW_SUM).all()


def test_apply_with_magnitude_drops_the_weak_unit(toy_policy, tmp_path):
    done = _apply(toy_policy, tmp_path / "magnitude", "magnitude")
    assert done.returncode == 0, done.stderr
    rows = load_artifact(tmp_path / "magnitude", model=MLP()).net[0].weight.detach()
    assert rows.shape == (48, 64) and (rows.abs().sum(dim=1) > WEAK_ROW_SUM).all()


def test_an_unknown_importance_is_one_line_naming_the_flag_and_the_known_names(
    toy_policy, tmp_path
):
    done = _apply(toy_policy, tmp_path / "bad", "toyy")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "--importance" in lines[0] and "'toyy'" in lines[0]
    assert "magnitude, taylor, toy" in lines[0]  # the task module registered toy before


def test_help_lists_the_registered_criteria():
    done = cli("apply", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.replace("│", " ").split())  # the help box's borders out
    assert ", ".join(sorted(IMPORTANCES)) in text
