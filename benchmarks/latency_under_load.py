"""Does a trial's latency change when another trial runs beside it?

One fixed policy (the ``prune30-int8`` baseline) is run several times:

- ``alone``: the ``local`` backend, one trial after another, nothing else running;
- ``ray``: the ``ray`` backend, 2 concurrent trials, latency measured while the other trial
  trains or measures (``backends.ray.run(exclusive_timing=False)``);
- ``ray+gate``: the same with the default timing gate (``autocompress.measure.gate``): a trial times its
  artifact while the other trial waits at a batch boundary.

    .venv/bin/python benchmarks/latency_under_load.py [--repeats 6] [--epochs 2] [--task cnn]

Prints the median latency per mode and writes ``benchmarks/results/latency_under_load.json``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

from _common import RESULTS, ROOT, parse_search_args, task_spec

from autocompress.study.backends import get_backend
from autocompress.study.config import SearchConfig
from autocompress.study.session import finish, prepare

POLICY = "prune30-int8"


def run(mode: str, out: Path, *, repeats: int, epochs: int, task: str, space: str) -> dict:
    config = SearchConfig(
        name=f"latency-{mode}",
        task=task,
        search_space=space,
        backend="local" if mode == "alone" else "ray",
        starts=(POLICY,) * repeats,
        trials=repeats,
        epochs=epochs,
        scheduler="none",
        max_concurrent=2,
        tracking=False,
        report_every=0,
        out=str(out / mode.replace("+", "-")),
    )
    session = prepare(config)
    start = time.perf_counter()
    if mode == "alone":
        get_backend("local").load().run(session)
    else:
        get_backend("ray").load().run(session, exclusive_timing=mode == "ray+gate")
    wall = time.perf_counter() - start
    result = finish(session)
    # an infeasible (accuracy) trial measured its artifact too
    lat = [r["metrics"]["latency_ms"] for r in result.trials if "latency_ms" in r["metrics"]]
    if not lat:
        raise SystemExit(f"{mode}: no trial measured: {[r['error'] for r in result.trials]}")
    return {
        "latency_ms": [round(v, 4) for v in lat],
        "median_ms": round(statistics.median(lat), 4),
        "baseline_latency_ms": round(session.teacher["latency_ms"], 4),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    args = parse_search_args(__doc__.splitlines()[0], repeats=6, epochs=2)
    task, space = task_spec(args.task)
    modes = {}
    with tempfile.TemporaryDirectory(prefix="acl") as tmp:
        for mode in ("alone", "ray", "ray+gate"):
            modes[mode] = run(
                mode, Path(tmp), repeats=args.repeats, epochs=args.epochs, task=task, space=space
            )
            print(
                f"{mode:9s} median {modes[mode]['median_ms']:.4f} ms  {modes[mode]['latency_ms']}"
            )
    alone = modes["alone"]["median_ms"]
    diffs = {m: round(modes[m]["median_ms"] / alone - 1, 4) for m in ("ray", "ray+gate")}
    for m, d in diffs.items():
        print(f"{m:9s} differs from alone by {100 * d:+.1f} %")
    doc = {
        "task": task.replace(str(ROOT) + "/", ""),
        "policy": POLICY,
        "epochs": args.epochs,
        "repeats": args.repeats,
        "threads_per_trial": 1,
        "modes": modes,
        "relative_difference": diffs,
        "threshold": 0.15,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency_under_load.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {RESULTS / 'latency_under_load.json'}")


if __name__ == "__main__":
    main()
