"""Issue floors: our int8 ONNX Runtime artifact against the fp32 ORT artifact and against
ONNX Runtime's own ``quantize_static`` of the teacher (the post-training peer).

Models: an MLP and the digits ResNet-style CNN (examples/digits, real 8×8 digits upsampled to
16×16), and a small transformer encoder on generated sequences. Per model, all artifacts are
timed round-robin in one process at batch 1, one intra-op thread (ORT_ENABLE_ALL); accuracy is
the task metric on each artifact's own session. Policies: identity pruning + 8 bits, without
fine-tuning (our scales, MinMax calibration) and with 2 epochs of QAT (weights and activations
fake-quantized); for the CNN also 30 % pruning + 8 bits with 4 epochs.

    .venv/bin/python benchmarks/onnxruntime_int8.py
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from autocompress import Policy, Task, compress
from autocompress.compress import MeasureSettings
from autocompress.fold import fold_batchnorm, foldable_pairs
from autocompress.targets._ort_graph import OrtModule, export_float

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "onnxruntime_int8.json"
SETTINGS = MeasureSettings(threads=1, warmup=10, repeats=30)
ROUNDS, WARMUP = 400, 50


def _digits():
    spec = importlib.util.spec_from_file_location("digits_task", ROOT / "examples/digits/task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _train(model: nn.Module, train, epochs: int, lr: float = 2e-3) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(epochs):
            model.train()
            for xb, yb in train:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
    return model.eval()


def mlp_task() -> Task:
    x_train, y_train, x_val, y_val = _digits().load_data()
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731  (B, 256)
    train = [(flat(x_train[i : i + 64]), y_train[i : i + 64]) for i in range(0, len(x_train), 64)]
    val = [(flat(x_val[i : i + 64]), y_val[i : i + 64]) for i in range(0, len(x_val), 64)]
    model = nn.Sequential(
        nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )
    _train(model, train, epochs=8)
    return Task(
        model=model, train_loader=train, val_loader=val, example_inputs=(val[0][0][:1],), name="mlp"
    )


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.q, self.k, self.v, self.proj = (nn.Linear(dim, dim) for _ in range(4))
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x):  # (B, T, D)
        b, t, d = x.shape
        h = self.norm1(x)
        split = lambda y: y.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        att = F.scaled_dot_product_attention(split(self.q(h)), split(self.k(h)), split(self.v(h)))
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Encoder(nn.Module):
    def __init__(self, d_in: int = 16, dim: int = 128, heads: int = 4, depth: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, dim)
        self.layers = nn.ModuleList([_Layer(dim, heads) for _ in range(depth)])
        self.head = nn.Linear(dim, 4)

    def forward(self, x):
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(dim=1))


def encoder_task(n: int = 1536) -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, 16, generator=g)
    y = (x[:, :16, :4].sum(dim=1) - x[:, 16:, 4:8].sum(dim=1)).argmax(dim=1)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, n, 64)]
    train, val = batches[:20], batches[20:]
    model = _train(Encoder(), train, epochs=6, lr=1e-3)
    return Task(
        model=model, train_loader=train, val_loader=val, example_inputs=(x[:1],), name="transformer"
    )


def digits_task() -> Task:
    return _digits().build_task()


def peer(task: Task, out: Path) -> Path:
    """``quantize_static`` of the teacher: QDQ, uint8 activations, int8 per-channel weights,
    MinMax calibration on the same training batches our target calibrates on."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    float_path = out / "teacher_float.onnx"
    model = fold_batchnorm(task.model, foldable_pairs(task.model))
    onnx.save(export_float(model, task.example_inputs), str(float_path))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input0": x.numpy()} for x, _ in islice(task.train_loader, 8)])

        def get_next(self):
            return next(self.it, None)

    path = out / "peer.onnx"
    quantize_static(
        str(float_path),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return path


def round_robin(paths: dict[str, Path], example: torch.Tensor) -> dict[str, dict[str, float]]:
    sessions = {k: OrtModule(p, threads=1) for k, p in paths.items()}
    feed = example.numpy()
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(WARMUP + ROUNDS):
        for k, s in sessions.items():
            t0 = time.perf_counter()
            s.session.run(None, {s.names[0]: feed})
            if r >= WARMUP:
                times[k].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for k, ts in times.items():
        ts.sort()
        out[k] = {"median_ms": statistics.median(ts), "p90_ms": ts[int(0.9 * (len(ts) - 1))]}
    return out


def bench(task: Task, policies: dict[str, dict], tmp: Path) -> dict:
    from autocompress.compress import measure_baseline

    rows: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    baseline = measure_baseline(task, target="onnxruntime", settings=SETTINGS)
    for name, policy in policies.items():
        t0 = time.time()
        res = compress(
            task,
            Policy.from_dict(policy),
            target="onnxruntime",
            out_dir=tmp / name,
            settings=SETTINGS,
            baseline=baseline,
        )
        modes = [r["mode"] for r in res.metrics["layers"].values()]
        rows[name] = {
            "accuracy": res.metrics["accuracy"],
            "size_bytes": res.metrics["size_bytes"],
            "int_compute_layers": f"{modes.count('int-compute')}/{len(modes)}",
            "ops": sorted({r["op"] for r in res.metrics["layers"].values()}),
            "seconds": round(time.time() - t0, 1),
        }
        paths[name] = res.artifact
        if name == "fp32":
            rows[name]["int_compute_layers"] = "0/" + str(len(modes))
    paths["peer"] = peer(task, tmp)
    rows["peer"] = {
        "accuracy": task.evaluate(OrtModule(paths["peer"])),
        "size_bytes": paths["peer"].stat().st_size,
    }
    lat = round_robin(paths, task.example_inputs[0][:1])
    for name in rows:
        rows[name].update(latency_ms=lat[name]["median_ms"], latency_p90_ms=lat[name]["p90_ms"])
        rows[name]["speedup_vs_fp32"] = lat["fp32"]["median_ms"] / lat[name]["median_ms"]
        rows[name]["compression_vs_fp32"] = rows["fp32"]["size_bytes"] / rows[name]["size_bytes"]
    return rows


IDENTITY8 = {"quant": {"default": 8}}
QAT8 = {"quant": {"default": 8}, "finetune": {"epochs": 2, "lr": 1e-4}}
FLOORS = {"mlp": 1.8, "digits-cnn": 2.5, "transformer": 1.8}


def _document(results: dict, t0: float) -> dict:
    checks = {}
    for name, rows in results.items():
        ours, fp32, p = rows["int8"], rows["fp32"], rows["peer"]
        checks[name] = {
            f"int8 >= {FLOORS[name]}x faster than fp32": ours["speedup_vs_fp32"] >= FLOORS[name],
            "int8 within 1 point of fp32": abs(ours["accuracy"] - fp32["accuracy"]) <= 0.01,
            "int8 no slower than peer": ours["latency_ms"] <= p["latency_ms"],
            "int8 within 0.5 point of peer": abs(ours["accuracy"] - p["accuracy"]) <= 0.005,
        }
    doc = {
        "machine": "2 vCPU AMD EPYC (AVX-512 VNNI), shared with other processes",
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            "threads": 1,
            "batch": 1,
            "rounds": ROUNDS,
            "warmup": WARMUP,
            "order": "round-robin",
        },
        "load_average_1min": round(os.getloadavg()[0], 1),  # other processes on the 2 cores
        "results": results,
        "checks": checks,
        "seconds": round(time.time() - t0),
    }
    return doc


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,digits-cnn,transformer")
    parser.add_argument("--lean", action="store_true", help="only fp32, int8 and the peer")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    t0 = time.time()
    results = {}
    base = {"fp32": {"quant": {"default": 32}}, "int8": IDENTITY8, "int8-qat": QAT8}
    jobs = {
        "mlp": (mlp_task, base),
        "digits-cnn": (
            digits_task,
            {
                **base,
                "prune30-int8": {
                    "prune": {"default": 0.3},
                    "quant": {"default": 8},
                    "finetune": {"epochs": 4, "lr": 1e-3},
                },
            },
        ),
        "transformer": (encoder_task, base),
    }
    with tempfile.TemporaryDirectory(prefix="ort-int8-bench-") as tmp:
        for name in args.models.split(","):
            make, policies = jobs[name]
            if args.lean:
                policies = {k: policies[k] for k in ("fp32", "int8")}
            task = make()
            results[name] = bench(task, policies, Path(tmp) / name)
            print(f"{name} done ({time.time() - t0:.0f} s)", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(_document(results, t0), indent=2))  # partial results
    doc = _document(results, t0)
    checks = doc["checks"]
    args.out.write_text(json.dumps(doc, indent=2))
    print(
        f"{'model':<12} {'artifact':<14} {'accuracy':>8} {'bytes':>10} {'ms (p50)':>9} {'x fp32':>7} {'x smaller':>9}  int layers"
    )
    for name, rows in results.items():
        for art, r in rows.items():
            print(
                f"{name:<12} {art:<14} {r['accuracy']:>8.4f} {r['size_bytes']:>10} {r['latency_ms']:>9.4f} "
                f"{r['speedup_vs_fp32']:>7.2f} {r['compression_vs_fp32']:>9.2f}  {r.get('int_compute_layers', '')}"
            )
    for name, c in checks.items():
        print(name, ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in c.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
