"""The weight and structure pruning strategies, measured on their artifacts.

    .venv/bin/python benchmarks/strategies.py [--epochs 2] [--rounds 40]

1. The digits CNN at 8 bits everywhere, dense vs 80 % unstructured sparsity (``weight``
   strategy, Taylor importance, fixed masks while fine-tuning): artifact bytes, the encoded
   weight bytes, accuracy and latency. Dense kernels run both, so no speedup is expected.
2. A 6-layer transformer encoder (the tests' encoder layers, trained here on generated data)
   with 2 and 3 of its layers dropped (``structure`` strategy, fine-tuned with distillation):
   latency and accuracy against the full encoder, as trained and fine-tuned alike.

All latencies of one part are measured on the loaded artifacts, round-robin in this process,
one intra-op thread, batch 1, medians over every round. Writes
benchmarks/results/strategies.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from _common import RESULTS, ROOT
from torch import nn

from autocompress import MeasureSettings, Policy, compress, measure_teacher
from autocompress.measure.timing import threads
from autocompress.targets import get_target
from autocompress.targets.runtimes import read_torch_artifact as read
from autocompress.task import Task, load_task, run_model

QUICK = MeasureSettings(warmup=2, repeats=20)  # compress's own figures; the table times below


def round_robin(
    models: dict[str, nn.Module], inputs: tuple, *, rounds: int, per_round: int = 10
) -> dict[str, float]:
    """Median ms per forward of each model, models interleaved round by round."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with threads(1), torch.inference_mode():
        for model in models.values():
            model.eval()
            for _ in range(5):
                run_model(model, inputs)
        for _ in range(rounds):
            for name, model in models.items():
                for _ in range(per_round):
                    t0 = time.perf_counter()
                    run_model(model, inputs)
                    times[name].append((time.perf_counter() - t0) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def weight_bytes(artifact: Path) -> int:
    """Bytes of every weight encoding in the file (codes/values, masks, scales, shapes)."""
    _, tensors = read(artifact)
    return sum(
        t.numel() * t.element_size()
        for k, t in tensors.items()
        if ".weight." in k or k.endswith(".weight")
    )


def unstructured(epochs: int, rounds: int) -> dict[str, Any]:
    task = load_task(f"{ROOT / 'examples' / 'digits' / 'task.py'}:build_task")
    baseline = measure_teacher(task, settings=QUICK)
    common = {
        "quant": {"default": 8},
        "distill": {"alpha": 0.5, "temperature": 4.0},
        "finetune": {"epochs": epochs, "lr": 1e-3, "lambda": 0.0},
    }
    policies = {
        "dense int8": common,
        "80% sparse int8": {**common, "prune": {"sparsity": {"default": 0.8}}},
    }
    tmp = Path(tempfile.mkdtemp(prefix="strategies-"))
    results = {
        name: compress(
            task, Policy.from_dict(p), out_dir=tmp / str(i), baseline=baseline, settings=QUICK
        )
        for i, (name, p) in enumerate(policies.items())
    }
    teacher = tmp / "teacher.pt"
    torch_target = get_target("torch")
    torch_target.save(task.model, teacher, bits={}, structure={}, meta={})
    deployed = torch_target.load(teacher, task.model)  # BatchNorms folded, like the others
    models = {"fp32 teacher": deployed, **{n: r.model for n, r in results.items()}}
    latency = round_robin(models, task.example_inputs, rounds=rounds)
    rows: dict[str, dict[str, Any]] = {
        "fp32 teacher": {
            "accuracy": task.evaluate(deployed),
            "size_bytes": teacher.stat().st_size,
            "weight_bytes": weight_bytes(teacher),
        }
    }
    for name, r in results.items():
        rows[name] = {
            "accuracy": r.metrics["accuracy"],
            "size_bytes": r.metrics["size_bytes"],
            "weight_bytes": weight_bytes(r.artifact),
            "sparsity": r.metrics.get("sparsity", "none"),
            "sparsity_achieved": r.metrics.get("sparsity_achieved", 0.0),
        }
    for name in rows:
        rows[name]["latency_ms"] = latency[name]
    dense, sparse = rows["dense int8"], rows["80% sparse int8"]
    return {
        "model": "examples/digits DigitsResNet",
        "policy": policies["80% sparse int8"],
        "rows": rows,
        "bytes_vs_dense_int8": sparse["size_bytes"] / dense["size_bytes"],
        "weight_bytes_vs_dense_int8": sparse["weight_bytes"] / dense["weight_bytes"],
        "latency_vs_dense_int8": sparse["latency_ms"] / dense["latency_ms"],
        "note": "dense kernels run the sparse weights: storage-only, no speedup expected",
    }


def encoder_task(n: int = 2048, seq: int = 16, layers: int = 6, epochs: int = 15) -> Task:
    """A deeper, wider TinyEncoder trained on generated sequences (labels need the sequence)."""
    sys.path.insert(0, str(ROOT / "tests"))
    from _support.models import EncoderLayer, TinyEncoder

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, seq, 8, generator=g)
    y = x.cumsum(dim=1)[:, :, :4].relu().sum(dim=1).argmax(dim=1)
    split = [(x[i : i + 64], y[i : i + 64]) for i in range(0, n, 64)]
    train, val = split[: len(split) * 4 // 5], split[len(split) * 4 // 5 :]
    torch.manual_seed(0)
    model = TinyEncoder(d_in=8, dim=64, heads=4, ffn=128)
    model.layers = nn.ModuleList([EncoderLayer(64, 4, 128) for _ in range(layers)])
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    for _ in range(epochs):
        for xb, yb in train:
            opt.zero_grad()
            nn.functional.cross_entropy(model.train()(xb), yb).backward()
            opt.step()
    model.eval()
    return Task(model=model, train_loader=train, val_loader=val, example_inputs=(x[:1],))


def layer_drop(epochs: int, rounds: int) -> dict[str, Any]:
    task = encoder_task()
    baseline = measure_teacher(task, settings=QUICK)
    tune = {"distill": {"alpha": 0.3, "temperature": 4.0}, "finetune": {"epochs": epochs}}
    policies = {
        "full, fine-tuned alike": tune,
        "drop 2 of 6": {**tune, "drop": {"blocks": ["layers.1", "layers.4"]}},
        "drop 3 of 6": {**tune, "drop": {"blocks": ["layers.1", "layers.3", "layers.5"]}},
    }
    tmp = Path(tempfile.mkdtemp(prefix="strategies-enc-"))
    results = {
        name: compress(
            task, Policy.from_dict(p), out_dir=tmp / str(i), baseline=baseline, settings=QUICK
        )
        for i, (name, p) in enumerate(policies.items())
    }
    models = {"full (6 layers)": task.model, **{n: r.model for n, r in results.items()}}
    latency = round_robin(models, task.example_inputs, rounds=rounds)
    rows = {
        "full (6 layers)": {
            "accuracy": task.evaluate(task.model),
            "size_bytes": baseline["size_bytes"],
        }
    }
    for name, r in results.items():
        rows[name] = {
            "accuracy": r.metrics["accuracy"],
            "size_bytes": r.metrics["size_bytes"],
            "dropped_blocks": r.metrics.get("dropped_blocks", []),
        }
    for name in rows:
        rows[name]["latency_ms"] = latency[name]
        rows[name]["speedup"] = latency["full (6 layers)"] / latency[name]
    return {
        "model": "6 x tests/_support/models.EncoderLayer (dim 64, 4 heads, FFN 128), seq 16",
        "policies": policies,
        "rows": rows,
    }


def table(title: str, rows: dict[str, dict[str, Any]], columns: list[str]) -> str:
    lines = [f"{title}", "| variant | " + " | ".join(columns) + " |"]
    lines.append("| --- " * (len(columns) + 1) + "|")
    for name, row in rows.items():
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, torch "
        f"{torch.__version__}",
        "settings": {"threads": 1, "batch": 1, "rounds": args.rounds, "per_round": 10},
        "load_average_before": os.getloadavg(),  # a shared machine: other work moves absolutes
        "epochs": args.epochs,
        "weight": unstructured(args.epochs, args.rounds),
        "structure": layer_drop(args.epochs, args.rounds),
    }
    out["load_average_after"] = os.getloadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "strategies.json").write_text(json.dumps(out, indent=2))
    print(
        table(
            "weight strategy, digits CNN, 8 bits:",
            out["weight"]["rows"],
            ["accuracy", "size_bytes", "weight_bytes", "sparsity_achieved", "latency_ms"],
        )
    )
    w = out["weight"]
    print(
        f"sparse/dense int8: file {w['bytes_vs_dense_int8']:.3f}, weights "
        f"{w['weight_bytes_vs_dense_int8']:.3f}, latency {w['latency_vs_dense_int8']:.3f} "
        f"({w['note']})\n"
    )
    print(
        table(
            "structure strategy, transformer encoder:",
            out["structure"]["rows"],
            ["accuracy", "size_bytes", "latency_ms", "speedup"],
        )
    )


if __name__ == "__main__":
    main()
