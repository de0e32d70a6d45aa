"""Fine-tuning scopes and full-int8 on the digits CNN (examples/digits).

1. One fixed policy (30 % pruning, 8 bits, weights and activations, alpha 0.5, feature weight
   0) fine-tuned under each ``finetune.scope``: accuracy of the ONNX Runtime artifact, trained
   parameters (as recorded), fine-tuning wall time (the fine-tune stage, from stage callbacks).
2. ``full-int8`` (every layer weight+activation, graph input quantized, output dequantized)
   against weight-only 8-bit, no pruning, no fine-tuning: both artifacts timed round-robin in
   this process at batch 1, one intra-op thread; the float islands each graph keeps.

    .venv/bin/python benchmarks/finetune_scopes.py [--epochs 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from _common import RESULTS
from onnxruntime_int8 import SETTINGS, digits_task, round_robin

from autocompress import Policy, compress, measure_teacher
from autocompress.policy import FINETUNE_SCOPES

OUT = RESULTS / "finetune_scopes.json"


def scope_rows(task, baseline, epochs: int, tmp: Path) -> list[dict]:
    rows = []
    for scope in FINETUNE_SCOPES:
        marks: dict[str, float] = {}
        policy = Policy.from_dict(
            {
                "distill": {"alpha": 0.5, "temperature": 4.0, "feature_weight": 0.0},
                "prune": {"default": 0.3},
                "quant": {"default": 8, "scope": {"default": "weight+activation"}},
                "finetune": {"epochs": epochs, "lr": 1e-3, "lambda": 1e-5, "scope": scope},
            }
        )
        result = compress(
            task,
            policy,
            target="onnxruntime",
            out_dir=tmp / scope,
            settings=SETTINGS,
            baseline=baseline,
            on_stage=lambda s, marks=marks: marks.setdefault(
                s.split(" epoch")[0], time.perf_counter()
            ),
        )
        m = result.metrics
        rows.append(
            {
                "finetune_scope": scope,
                "accuracy": m["accuracy"],
                "trained_params": m["trained_params"],
                "params": m["params"],
                "finetune_s": round(marks["convert"] - marks["fine-tune"], 2),
                "latency_ms": m["latency_ms"],
            }
        )
        print(rows[-1], flush=True)
    return rows


def full_int8_rows(task, baseline, tmp: Path) -> dict:
    runs, paths = {}, {}
    for name, scope in (("full-int8", "weight+activation"), ("weight-only-int8", "weight")):
        policy = Policy.from_dict({"quant": {"default": 8, "scope": {"default": scope}}})
        res = compress(
            task,
            policy,
            target="onnxruntime",
            out_dir=tmp / name,
            settings=SETTINGS,
            baseline=baseline,
        )
        paths[name] = res.artifact
        runs[name] = {
            "accuracy": res.metrics["accuracy"],
            "size_bytes": res.metrics["size_bytes"],
            "graph": res.metrics["graph"],
        }
    timed = round_robin(paths, task.example_inputs[0][:1])
    for name in runs:
        runs[name].update(timed[name])
    runs["speedup_full_vs_weight_only"] = (
        timed["weight-only-int8"]["median_ms"] / timed["full-int8"]["median_ms"]
    )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    task = digits_task()
    baseline = measure_teacher(task, target="onnxruntime", settings=SETTINGS)
    with tempfile.TemporaryDirectory(prefix="finetune-scopes-") as tmp:
        full = full_int8_rows(task, baseline, Path(tmp))
        print(json.dumps(full, indent=1), flush=True)
        rows = scope_rows(task, baseline, args.epochs, Path(tmp))
    result = {
        "what": __doc__.splitlines()[0],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.processor() or platform.machine(),
        "policy": "prune 0.3, 8 bits weight+activation, alpha 0.5, onnxruntime target",
        "epochs": args.epochs,
        "baseline": {k: baseline[k] for k in ("accuracy", "latency_ms", "size_bytes")},
        "finetune_scopes": rows,
        "batch1_latency": full,
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
