"""This Python interpreter run in a child process (the CLI, pip, a snippet), its output captured
as text."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_python(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess:
    """``python *args`` with ``env`` (default: this process's), from ``cwd``."""
    return subprocess.run(
        [sys.executable, *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )
