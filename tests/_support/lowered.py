"""What the tests of the targets behind an extra (``openvino``, ``executorch``) share: the CLI
applying a policy to the tiny CNN, the one-line errors when the extra is missing, a two-trial
local search on the target and exporting one of its trials in the target's format."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from _support.models import cnn_task
from _support.study_inputs import QUICK_SEARCH
from autocompress import Policy
from autocompress.api import run_search
from autocompress.errors import AutoCompressError
from autocompress.pipeline import CompressResult, MeasureSettings, compress, load_artifact
from autocompress.reporting import export_trial
from autocompress.study.config import SearchConfig
from autocompress.targets import get_target

TESTS = Path(__file__).resolve().parents[1]
CNN = f"{TESTS}/_support/tasks.py:cnn"
COMPUTE = (nn.Conv1d, nn.Conv2d, nn.Linear)  # the layers an int8 kernel runs


def apply_policy(task, policy: dict[str, Any], out: Path, target: str, **kwargs) -> CompressResult:
    """``policy`` applied on ``target`` (no fine-tuning unless it says so), timed briefly."""
    policy = {"finetune": {"epochs": 0}, **policy}
    settings = MeasureSettings(repeats=20, warmup=2)
    return compress(
        task, Policy.from_dict(policy), target=target, out_dir=out, settings=settings, **kwargs
    )


def cli_apply(
    tmp_path: Path, target: str, policy: dict[str, Any], env: dict[str, str], timeout: int = 600
) -> subprocess.CompletedProcess:
    """``autocompress apply`` of ``policy`` to the tiny CNN on ``target``, out to tmp_path/o."""
    path = tmp_path / "p.json"
    path.write_text(json.dumps(policy))
    args = ["--task", CNN, "--policy", str(path), "--target", target, "--out", str(tmp_path / "o")]
    return subprocess.run(
        [sys.executable, "-m", "autocompress.cli", "apply", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_applied(tmp_path: Path, target: str, artifact: str, env: dict[str, str]) -> dict[str, Any]:
    """``autocompress apply`` of prune 25% + int8 to the tiny CNN on ``target`` succeeds and
    writes ``artifact``; returns its metrics.json."""
    policy = {"prune": {"default": 0.25}, "quant": {"default": 8}}
    out = cli_apply(tmp_path, target, policy, env)
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["target"] == target and metrics["artifact"] == artifact
    return metrics


def run_fresh(tmp_path: Path, script: str, artifact: Path, x, env: dict[str, str]) -> Any:
    """Run ``script`` (argv: ``artifact``, a saved input ``x``) in a fresh process; its last
    stdout line as JSON."""
    torch.save(x, tmp_path / "x.pt")
    path = tmp_path / "fresh.py"
    path.write_text(script)
    run = subprocess.run(
        [sys.executable, str(path), str(artifact), str(tmp_path / "x.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def assert_missing_extra_is_one_line(monkeypatch: pytest.MonkeyPatch, target: str) -> None:
    """Without the runtime, ``get_target`` fails in one line naming the extra to install; the
    other targets are unaffected."""
    monkeypatch.setitem(sys.modules, target, None)  # import <target> -> ImportError
    extra = re.escape(f'pip install "autocompress[{target}]"')
    with pytest.raises(AutoCompressError, match=extra) as e:
        get_target(target)
    assert "\n" not in str(e.value)
    get_target("onnxruntime")


def assert_cli_without_extra_exits_2(tmp_path: Path, target: str, env: dict[str, str]) -> None:
    """The CLI with the runtime shadowed by a package that fails to import: exit 2, one line."""
    shadow = tmp_path / "shadow" / target
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text(f"raise ImportError('No module named {target}')\n")
    env = {**env, "PYTHONPATH": f"{shadow.parent}:{env['PYTHONPATH']}"}
    out = cli_apply(tmp_path, target, {}, env, timeout=300)
    assert out.returncode == 2
    assert f'pip install "autocompress[{target}]"' in out.stderr
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr


def tiny_search(tmp_path: Path, target: str, space: str, artifact: str) -> list[dict[str, Any]]:
    """A two-trial local search of the tiny CNN on ``target``; its measured trials (complete or
    infeasible: measured, then found to break a constraint, not a failure)."""
    cfg = SearchConfig.from_dict(
        {
            **QUICK_SEARCH,
            "name": f"cnn-{target}",
            "task": CNN,
            "search_space": space,
            "objectives": "accuracy-size-latency",
            "trials": 2,
            "seed": 0,
            "backend": "local",
            "epochs": 1,
            "tracking": False,
            "target": target,
            "out": str(tmp_path / "run"),
        }
    )
    result = run_search(cfg)
    done = [t for t in result.trials if t["state"] in ("complete", "infeasible")]
    assert len(done) == 2, [t.get("error") for t in result.trials]
    assert all(t["metrics"]["target"] == target for t in done)
    assert all(t["metrics"]["artifact"] == artifact for t in done)
    return done


def export_complete_trial(tmp_path: Path, target: str, done: list[dict[str, Any]]) -> list[str]:
    """Export a complete trial of :func:`tiny_search`: ``torch`` is refused naming the target's
    format; the target's format loads back with the recorded accuracy. Returns the file names."""
    number = next(t["number"] for t in done if t["state"] == "complete")
    with pytest.raises(AutoCompressError, match=f"--format {target}"):
        export_trial(tmp_path / "run", number, tmp_path / "e0", fmt="torch")
    metrics = export_trial(tmp_path / "run", number, tmp_path / "e1", fmt=target)
    task = cnn_task(epochs=2)  # what tests/_support/tasks.py:cnn builds
    deployed = load_artifact(tmp_path / "e1", task.model)
    assert task.evaluate(deployed) == pytest.approx(metrics["accuracy"])
    return sorted(p.name for p in (tmp_path / "e1").iterdir())
