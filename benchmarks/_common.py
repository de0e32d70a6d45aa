"""What the search benchmarks share: paths and which task they run."""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def task_spec(which: str = "auto") -> tuple[str, str]:
    """(task spec, search space): the digits example, or with ``cnn`` the small test CNN."""
    digits = ROOT / "examples" / "digits" / "task.py"
    if which != "cnn" and digits.exists():
        return f"{digits}:build_task", "grouped"
    sys.path.insert(0, str(ROOT / "tests"))  # tests/_support/tasks.py imports its sibling models.py
    return f"{ROOT / 'tests' / '_support' / 'tasks.py'}:cnn", "default"


def parse_search_args(description: str, **defaults: int) -> argparse.Namespace:
    """``--<name> N`` for each default (e.g. trials=8) plus ``--task auto|cnn``; Ray kept on
    127.0.0.1 without a token prompt."""
    parser = argparse.ArgumentParser(description=description)
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument(
        "--task", choices=("auto", "cnn"), default="auto", help="cnn: tests/_support/tasks.py:cnn"
    )
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return parser.parse_args()


def digits_task():
    """The bundled digits example's task (``examples/digits/task.py:build_task``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_task", ROOT / "examples/digits/task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_task()


def latency_stats(ts: list[float]) -> dict[str, float]:
    ts = sorted(ts)
    return {"median_ms": statistics.median(ts), "p90_ms": ts[int(0.9 * (len(ts) - 1))]}


def round_robin(runs: dict, example: Any, rounds: int, warmup: int) -> dict[str, dict]:
    """Per deployed module, the median and p90 ms of its call, in rounds over all modules in a
    random order (seed 0). Each turn makes two calls: the first (``cold``) runs right after
    another model, the second (the latency) is the steady state of a model called repeatedly.
    On AMX CPUs the first int8 call after an fp32 model is much slower (AMX warm-up); a fixed
    order would charge that to whichever model follows the fp32 one."""
    order = random.Random(0)
    names = list(runs)
    times: dict[str, list[float]] = {k: [] for k in runs}
    cold: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(warmup + rounds):
        order.shuffle(names)
        for k in names:
            for out in (cold[k], times[k]):
                t0 = time.perf_counter()
                runs[k](example)
                if r >= warmup:
                    out.append((time.perf_counter() - t0) * 1e3)
    return {
        k: {**latency_stats(times[k]), "cold_median_ms": latency_stats(cold[k])["median_ms"]}
        for k in runs
    }
