"""Issue floor: a ResNet-style CNN, 50 % of every conv pruned + 8 bits, against its fp32 self.

Prints params, MACs, artifact bytes, one-thread latency (median/p90) and accuracy of both, and
writes them to benchmarks/results/compress_resnet.json. The data are generated (32×32, 10
classes), the teacher is trained briefly here; nothing is downloaded.

    .venv/bin/python benchmarks/compress_resnet.py
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from autocompress import Policy, Task, compress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the teacher trains with the tests' loop
from _support.models import fit  # noqa: E402

_spec = importlib.util.spec_from_file_location("digits_task", ROOT / "examples/digits/task.py")
_digits = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_digits)
BasicBlock = _digits.BasicBlock  # the example's residual block

OUT = Path(__file__).parent / "results" / "compress_resnet.json"


class ResNet(nn.Module):
    """ResNet-style: 3 stages × 2 residual blocks, 64/128/256 channels, 32×32 RGB input."""

    def __init__(self, widths=(64, 128, 256), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        blocks, c_in = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [BasicBlock(c_in, w, stride=1 if i == 0 else 2), BasicBlock(w, w)]
            c_in = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


def make_task(n: int = 640, seed: int = 0) -> Task:
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(10, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    x = protos[y] + 1.5 * torch.randn(n, 3, 32, 32, generator=g)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, n, 64)]
    train, val = batches[:8], batches[8:]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = fit(ResNet(), train, 2, lr=2e-3)
    return Task(
        model=model, train_loader=train, val_loader=val, example_inputs=(x[:1],), name="resnet"
    )


def main() -> None:
    t0 = time.time()
    task = make_task()
    policy = Policy.from_dict(
        {
            "distill": {"alpha": 0.5, "temperature": 4.0},
            "prune": {"default": 0.5},
            "quant": {"default": 8},
            "finetune": {"lambda": 1e-5, "epochs": 1, "lr": 1e-3},
        }
    )
    result = compress(task, policy, out_dir=Path(__file__).parent / "results" / "compress_resnet")
    m, b = result.metrics, result.metrics["baseline"]
    modes = sorted({(rec["bits"], rec["mode"]) for rec in m["layers"].values()})
    figures = {
        "params": [b["params"], m["params"], b["params"] / m["params"]],
        "macs": [b["macs"], m["macs"], b["macs"] / m["macs"]],
        "size_bytes": [b["size_bytes"], m["size_bytes"], m["compression"]],
        "latency_ms": [b["latency_ms"], m["latency_ms"], m["speedup"]],
        "latency_p90_ms": [b["latency_p90_ms"], m["latency_p90_ms"]],
        "accuracy": [b["accuracy"], m["accuracy"]],
        "modes": [f"{bits} bits: {mode}" for bits, mode in modes],
        "threads": m["threads"],
        "seconds": round(time.time() - t0, 1),
    }
    print(f"{'':14}{'teacher':>12}{'compressed':>12}{'ratio':>8}")
    for key in ("params", "macs", "size_bytes", "latency_ms"):
        base, comp, ratio = figures[key]
        print(f"{key:14}{base:>12.4g}{comp:>12.4g}{ratio:>7.2f}x")
    print(f"{'accuracy':14}{b['accuracy']:>12.4f}{m['accuracy']:>12.4f}")
    print("modes:", ", ".join(figures["modes"]), f"| threads {m['threads']}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(figures, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
