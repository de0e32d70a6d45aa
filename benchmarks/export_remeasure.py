"""Issue floor: an exported model, re-measured in a fresh process, matches what the search
recorded (same accuracy, latency within 15 %).

    .venv/bin/python benchmarks/export_remeasure.py runs/digits-cnn [--trial N]

Exports the trial (default: the smallest Pareto point within 1 point of the teacher) with
``autocompress export``, then loads the artifact in a new Python process with
``autocompress.load_artifact`` and measures accuracy and one-thread latency there, beside the
teacher measured the same way. Writes benchmarks/results/export_remeasure.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from autocompress.reporting.export import pick_trial

OUT = Path(__file__).parent / "results" / "export_remeasure.json"

FRESH = r"""
import json, sys
from autocompress import load_artifact
from autocompress import measure_teacher
from autocompress.measure.timing import measure_latency
from autocompress.targets.runtimes import read_torch_artifact as read
from autocompress.task import load_task

path = sys.argv[1]
meta, _ = read(path)
task = load_task(meta["task_spec"], base_dir=meta["task_base_dir"])
model = load_artifact(path, task.model)
lat = measure_latency(model, task.example_inputs, n_threads=1, repeats=50)
base = measure_teacher(task)
print(json.dumps({"accuracy": task.evaluate(model), "latency_ms": lat.median_ms,
                  "baseline_latency_ms": base["latency_ms"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--trial", type=int)
    args = parser.parse_args()
    number = (
        args.trial if args.trial is not None else pick_trial(args.run_dir, max_accuracy_drop=0.01)
    )
    out = Path(tempfile.mkdtemp(prefix="export-")) / f"trial-{number}"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "autocompress.cli",
            "export",
            str(args.run_dir),
            "--trial",
            str(number),
            "--out",
            str(out),
        ],
        check=True,
    )
    recorded = next(
        json.loads(line)
        for line in (args.run_dir / "trials.jsonl").read_text().splitlines()
        if json.loads(line)["number"] == number
    )["metrics"]
    fresh = json.loads(
        subprocess.run(
            [sys.executable, "-c", FRESH, str(out / "model.pt")],
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    figures = {
        "trial": number,
        "recorded": {
            "accuracy": recorded["accuracy"],
            "latency_ms": recorded["latency_ms"],
            "speedup": recorded["speedup"],
        },
        "fresh_process": {
            "accuracy": fresh["accuracy"],
            "latency_ms": fresh["latency_ms"],
            "speedup": fresh["baseline_latency_ms"] / fresh["latency_ms"],
        },
        "latency_ratio": fresh["latency_ms"] / recorded["latency_ms"],
        "same_accuracy": fresh["accuracy"] == recorded["accuracy"],
    }
    print(f"trial {number}")
    print(
        f"  recorded in the search : accuracy {recorded['accuracy']:.4f}  latency {recorded['latency_ms']:.3f} ms"
    )
    print(
        f"  fresh process          : accuracy {fresh['accuracy']:.4f}  latency {fresh['latency_ms']:.3f} ms"
    )
    print(
        f"  latency ratio {figures['latency_ratio']:.3f} (within 15 %: {abs(figures['latency_ratio'] - 1) <= 0.15})"
    )
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
