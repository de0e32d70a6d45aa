"""The driver's process around a Ray search: temp folder, worker import path, console.

No Ray import: these are paths, environment variables and loggers that ``backends.ray`` sets
before ``ray.init`` and around ``Tuner.fit``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autocompress.task import Task

# Ray puts AF_UNIX sockets (limit 107 bytes) up to 64 characters below its temp folder
# ("/session_<date>_<time>_<microseconds>_<pid of up to 7 digits>/sockets/plasma_store")
_MAX_TEMP_DIR = 107 - 64


def ray_temp_dir(run_dir: Path) -> Path:
    """``<run_dir>/ray/tmp``, or a short ``/tmp/ac-ray-<hash>`` when that path is too long."""
    candidate = run_dir.resolve() / "ray" / "tmp"
    if len(str(candidate)) <= _MAX_TEMP_DIR:
        return candidate
    digest = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"ac-ray-{digest}"


def worker_pythonpath() -> str:
    """The driver's import path, so workers find task modules next to it (e.g. ``tests/``)."""
    prefixes = {sys.base_prefix, sys.prefix, sys.exec_prefix}
    paths = [os.getcwd()]
    for p in sys.path:
        p = os.path.abspath(p or os.getcwd())
        if "site-packages" in p or any(p.startswith(x) for x in prefixes) or not os.path.isdir(p):
            continue
        paths.append(p)
    paths += [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(paths))


def task_modules(task: Task) -> list[ModuleType]:
    """Modules of a task loaded by file path: no importable modules on workers (ship their code)."""
    folders = set()
    if task.spec and ":" in task.spec:
        target = task.spec.rsplit(":", 1)[0]
        if target.endswith(".py"):
            folders.add(Path(target).resolve().parent)
    found = []
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file is None:
            continue
        if name.startswith("_autocompress_task_") or Path(file).resolve().parent in folders:
            found.append(module)
    return found


@contextlib.contextmanager
def environ(**values: str) -> Iterator[None]:
    """Environment variables set for the block, restored after it."""
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def ray_log_level(verbose: bool) -> int:
    return logging.INFO if verbose else logging.WARNING


@contextlib.contextmanager
def quiet(on: bool) -> Iterator[None]:
    """With ``on`` (no ``verbose``): Tune's legacy reporter at verbosity 0 (silent) instead of
    the new one, which prints its configuration box and TensorBoard hint whatever the verbosity."""
    if not on:
        yield
        return
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.WARNING)
    try:
        with environ(RAY_AIR_NEW_OUTPUT="0"):
            yield
    finally:
        tune_log.setLevel(level)
