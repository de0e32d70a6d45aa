"""Wall time of the same search on the ``local`` backend and on ``ray`` with 2 concurrent trials.

    .venv/bin/python benchmarks/ray_speedup.py [--trials 8] [--epochs 1] [--task cnn]

Uses the digits example when it exists (a digits trial takes about a minute), else or with
``--task cnn`` the small ``tests/_support/tasks.py:cnn``. The ray time includes
starting and stopping the local cluster. Every trial runs on one intra-op thread on both
backends (the project's rule for trials on shared cores), so the ratio is what running trials
side by side in processes buys. Prints both and writes
``benchmarks/results/ray_speedup.json``. Target: ray <= 0.65 x local.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

from _common import RESULTS, ROOT, parse_search_args, task_spec

from autocompress.api import run_search
from autocompress.study.config import SearchConfig


def run(backend: str, out: Path, *, trials: int, epochs: int, task: str, space: str) -> dict:
    config = SearchConfig(
        name=f"speedup-{backend}",
        task=task,
        search_space=space,
        backend=backend,
        trials=trials,
        epochs=epochs,
        seed=0,
        scheduler="none",
        max_concurrent=2 if backend == "ray" else None,
        tracking=False,
        report_every=0,
        out=str(out / backend),
    )
    start = time.perf_counter()
    result = run_search(config)
    wall = time.perf_counter() - start
    states = [r["state"] for r in result.trials]
    return {
        "wall_s": round(wall, 2),
        "trials": len(states),
        "states": {s: states.count(s) for s in sorted(set(states))},
        "trial_seconds": round(sum(r.get("duration_s") or 0 for r in result.trials), 2),
    }


def main() -> None:
    args = parse_search_args(__doc__.splitlines()[0], trials=8, epochs=1)
    task, space = task_spec(args.task)
    with tempfile.TemporaryDirectory(prefix="acb") as tmp:
        local = run(
            "local", Path(tmp), trials=args.trials, epochs=args.epochs, task=task, space=space
        )
        ray = run("ray", Path(tmp), trials=args.trials, epochs=args.epochs, task=task, space=space)
    ratio = ray["wall_s"] / local["wall_s"]
    doc = {
        "task": task.replace(str(ROOT) + "/", ""),
        "search_space": space,
        "trials": args.trials,
        "epochs": args.epochs,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "local": local,
        "ray": {**ray, "max_concurrent": 2},
        "ratio_ray_over_local": round(ratio, 3),
        "target_ratio": 0.65,
        "meets_target": ratio <= 0.65,
    }
    print(
        f"local {local['wall_s']:.1f} s, ray (2 concurrent) {ray['wall_s']:.1f} s, ratio {ratio:.2f}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ray_speedup.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS / 'ray_speedup.json'}")


if __name__ == "__main__":
    main()
