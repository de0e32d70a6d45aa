"""Seconds per fine-tuning epoch and per trial on each training device this machine has.

For the digits CNN and MiniLM (256 sentences), one hand policy each (the examples' own, with
``--epochs`` epochs) through ``compress`` with ``training=<device>``: the student is pruned,
calibrated and fine-tuned on the device, then converted and measured on the target's CPU
runtime as always. Devices: ``cpu``, and ``cuda`` where PyTorch sees one (never estimated).

    .venv/bin/python benchmarks/device.py            # writes benchmarks/results/device.json
    .venv/bin/python benchmarks/device.py --models digits --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from autocompress import Policy, compress  # noqa: E402
from autocompress.device import Training  # noqa: E402
from autocompress.targets.runtimes import cpu_record  # noqa: E402
from autocompress.task import load_task  # noqa: E402

MODELS = {
    "digits": ("examples/digits/task.py:build_task", "examples/digits/policy-drop-p50-int4.json"),
    "minilm": (
        "examples/minilm/task.py:build_small_task",
        "examples/minilm/policy-drop2-ffn50-int8.json",
    ),
}


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def run_one(task, policy: Policy, device: str, precision: str, target: str) -> dict:
    stamps: list[float] = []

    def on_stage(name: str) -> None:
        if name.startswith("fine-tune"):
            stamps.append(time.perf_counter())

    training = Training.resolve(device, precision=precision)
    with tempfile.TemporaryDirectory() as out:
        began = time.perf_counter()
        result = compress(
            task, policy, out_dir=out, target=target, training=training, on_stage=on_stage
        )
        total = time.perf_counter() - began
    # stages: "fine-tune", then "fine-tune epoch k/E" after each epoch
    epochs = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "device": result.metrics["trained_on"]["device"],
        "device_name": result.metrics["trained_on"].get("device_name", cpu_record()["model"]),
        "precision": precision,
        "target": target,
        "epochs": len(epochs),
        "seconds_per_epoch": round(sum(epochs) / len(epochs), 3) if epochs else None,
        "seconds_per_trial": round(total, 3),
        "accuracy": result.metrics["accuracy"],
        "size_bytes": result.metrics["size_bytes"],
        "latency_ms": result.metrics["latency_ms"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=sorted(MODELS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--target", default="onnxruntime")
    parser.add_argument("--precision", nargs="+", default=["fp32"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "device.json")
    args = parser.parse_args()
    torch.set_num_threads(1)  # what a trial gets on the CPU
    cpu = cpu_record()
    rows = []
    for name in args.models:
        spec, policy_file = MODELS[name]
        task = load_task(str(ROOT / spec))
        data = json.loads((ROOT / policy_file).read_text())
        data["finetune"]["epochs"] = args.epochs
        policy = Policy.from_dict(data)
        for device in devices():
            for precision in args.precision:
                row = {"model": name, **run_one(task, policy, device, precision, args.target)}
                rows.append(row)
                print(
                    f"{name:7s} {row['device']:7s} {precision}: "
                    f"{row['seconds_per_epoch']} s/epoch, {row['seconds_per_trial']} s/trial "
                    f"({row['epochs']} epochs; accuracy {row['accuracy']:.4f} on {args.target})",
                    flush=True,
                )
    result = {
        "machine": {
            "cpu": cpu["model"],
            "vnni": cpu["vnni"],
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": 1,
        },
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
