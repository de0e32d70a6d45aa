"""README code blocks marked ``runnable`` run as written, in order, in one fresh folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(python|bash) runnable\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def runnable_blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def test_the_readme_marks_runnable_blocks():
    kinds = [kind for kind, _ in runnable_blocks((ROOT / "README.md").read_text())]
    assert "python" in kinds and "bash" in kinds


@pytest.mark.slow
def test_runnable_readme_blocks_run(tmp_path):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    }
    for i, (kind, code) in enumerate(runnable_blocks((ROOT / "README.md").read_text())):
        cmd = (
            [sys.executable, "-c", code]
            if kind == "python"
            else ["bash", "-euo", "pipefail", "-c", code]
        )
        done = subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"README block {i} ({kind}):\n{code}\n{done.stderr[-3000:]}"
