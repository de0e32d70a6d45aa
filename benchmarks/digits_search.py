"""Issue floor for the search: on the digits example with 24 trials, the front has >= 3 points,
one of them within 1 point of the teacher's accuracy and >= 4x smaller, and no point on it is
dominated by a baseline trial.

    .venv/bin/python benchmarks/digits_search.py [--backend ray|local] [--trials 24]

Writes benchmarks/results/digits_search.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from _common import RESULTS, ROOT

from autocompress.api import run_search
from autocompress.study.config import SearchConfig
from autocompress.study.pareto import dominates

METRICS = ("accuracy", "size_bytes", "latency_ms")
DIRECTIONS = ("maximize", "minimize", "minimize")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="ray", choices=("ray", "local"))
    parser.add_argument("--trials", type=int, default=24)
    args = parser.parse_args()
    config = SearchConfig.from_yaml(ROOT / "examples" / "digits" / "search.yaml")
    with tempfile.TemporaryDirectory(prefix="acd") as tmp:
        config = config.with_overrides(
            backend=args.backend, trials=args.trials, out=str(Path(tmp) / "run"), tracking=False
        )
        result = run_search(config)
    teacher = result.teacher
    front = [r["metrics"] for r in result.pareto]
    close = [m for m in front if teacher["accuracy"] - m["accuracy"] <= 0.01]
    best = max(close, key=lambda m: m["compression"]) if close else None
    baselines = [r for r in result.trials if r["baseline"] and r["state"] == "complete"]
    dominated = [
        (p["number"], b["baseline"])
        for p in result.pareto
        for b in baselines
        if dominates(
            [b["metrics"][k] for k in METRICS], [p["metrics"][k] for k in METRICS], DIRECTIONS
        )
    ]
    states = [r["state"] for r in result.trials]
    figures = {
        "backend": args.backend,
        "trials": len(result.trials),
        "states": {s: states.count(s) for s in sorted(set(states))},
        "teacher": {k: teacher[k] for k in METRICS},
        "front": [
            {
                "number": r["number"],
                **{k: r["metrics"][k] for k in METRICS},
                "compression": r["metrics"]["compression"],
                "speedup": r["metrics"]["speedup"],
            }
            for r in result.pareto
        ],
        "front_size": len(front),
        "best_within_1_point": best and {k: best[k] for k in (*METRICS, "compression", "speedup")},
        "front_points_dominated_by_a_baseline": dominated,
    }
    print(f"{len(result.trials)} trials {figures['states']}, front of {len(front)} (floor 3)")
    if best:
        print(
            f"within 1 point of the teacher ({teacher['accuracy']:.4f}): accuracy {best['accuracy']:.4f}, "
            f"{best['compression']:.1f}x smaller (floor 4x), {best['speedup']:.2f}x faster"
        )
    print(f"front points dominated by a baseline trial: {dominated or 'none'}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "digits_search.json").write_text(json.dumps(figures, indent=2))
    print(f"wrote {RESULTS / 'digits_search.json'}")


if __name__ == "__main__":
    main()
