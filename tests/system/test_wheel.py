"""The wheel carries the presets: built, installed (not editable) and used from elsewhere."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _support.subprocesses import run_python

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_python("-m", "pip", *args, cwd=cwd, timeout=600)


@pytest.mark.slow
def test_wheel_installs_presets_and_inspect_runs_from_another_directory(tmp_path):
    source = tmp_path / "src"  # a copy: the build writes build/ and *.egg-info beside the code
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".cache", "_presets"
        ),
    )
    built = _pip(
        "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "w"), ".", cwd=source
    )
    assert built.returncode == 0, built.stderr[-3000:]
    assert "Deprecat" not in built.stdout + built.stderr  # a clean install log from our pyproject
    wheel = next((tmp_path / "w").glob("autocompress-*.whl"))
    site = tmp_path / "site"
    installed = _pip("install", "--no-deps", "--target", str(site), str(wheel), cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert (site / "autocompress" / "_presets" / "search_spaces" / "grouped.yaml").is_file()
    assert (site / "autocompress" / "_presets" / "objectives" / "edge.yaml").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(TESTS)])}
    code = "import autocompress.study.presets as p; print(p.preset_dir('objectives'))"
    where = run_python("-c", code, cwd=elsewhere, env=env, check=True)
    assert where.stdout.strip().startswith(str(site))
    inspect = run_python(
        "-m",
        "autocompress.cli",
        "inspect",
        "--task",
        f"{TESTS / '_support' / 'tasks.py'}:mlp",
        "--space",
        "grouped",
        cwd=elsewhere,
        env=env,
        timeout=300,
    )
    assert inspect.returncode == 0, inspect.stderr[-3000:]
    assert "dimension:" in inspect.stdout
