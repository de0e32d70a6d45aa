"""Issue floors: our int8 ONNX Runtime artifact against the fp32 ORT artifact and against
ONNX Runtime's own ``quantize_static`` of the teacher (the post-training peer).

Models: an MLP (256-512-512-10) and a larger one (4 hidden layers 1024 wide), both on the
digits data; the digits ResNet-style CNN (examples/digits, real 8×8 digits upsampled to 16×16);
a small transformer encoder (dim 128) and a larger one (dim 256) on generated sequences. Per
model, all artifacts are timed round-robin in one process at batch 1, one intra-op thread
(ORT_ENABLE_ALL); accuracy is the task metric on each artifact's own session. Policies: identity
pruning + 8 bits, without fine-tuning (our scales, MinMax calibration), with 2 epochs of QAT
(weights and activations fake-quantized; on the small MLP only unless ``--qat``), and with ``linear: dynamic``
(DynamicQuantizeMatMul); for the CNN also 30 % pruning + 8 bits with 2 epochs. Peers: ``quantize_static`` (the issue's
peer), the same with ``reduce_range=True`` and, for Linear models, ``quantize_dynamic``.

The JSON records the CPU (model, VNNI yes/no) and what the target's ``reduce_range: auto``
resolved to: on CPUs without VNNI our int-compute weights are 7-bit codes (see the README).

    .venv/bin/python benchmarks/onnxruntime_int8.py            # the full run (< 6 min idle)
    .venv/bin/python benchmarks/onnxruntime_int8.py --rounds 20 --models mlp   # a smoke run
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from autocompress import MeasureSettings, Policy, Task, compress
from autocompress.targets import get_target
from autocompress.targets.runtimes import OrtModule, cpu_record, export_float
from autocompress.techniques.fold import fold_batchnorm, foldable_pairs

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the teachers train with the tests' loop
from _support.models import fit  # noqa: E402

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
        return fit(model, train, epochs, lr=lr)


def mlp_task(width: int = 512, hidden: int = 2, epochs: int = 8) -> Task:
    x_train, y_train, x_val, y_val = _digits().load_data()
    flat = lambda x: x.reshape(len(x), -1)  # noqa: E731  (B, 256)
    train = [(flat(x_train[i : i + 64]), y_train[i : i + 64]) for i in range(0, len(x_train), 64)]
    val = [(flat(x_val[i : i + 64]), y_val[i : i + 64]) for i in range(0, len(x_val), 64)]
    layers: list[nn.Module] = [nn.Linear(256, width), nn.ReLU()]
    for _ in range(hidden - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    _train(model, train, epochs=epochs, lr=2e-3 if width <= 512 else 5e-4)
    name = "mlp" if width == 512 else f"mlp-{width}"
    return Task(
        model=model, train_loader=train, val_loader=val, example_inputs=(val[0][0][:1],), name=name
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


def encoder_task(n: int = 1536, dim: int = 128, depth: int = 4, epochs: int = 6) -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 32, 16, generator=g)
    y = (x[:, :16, :4].sum(dim=1) - x[:, 16:, 4:8].sum(dim=1)).argmax(dim=1)
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, n, 64)]
    train, val = batches[:20], batches[20:]
    model = _train(Encoder(dim=dim, depth=depth), train, epochs=epochs, lr=1e-3)
    name = "transformer" if dim == 128 else f"transformer-{dim}"
    return Task(model=model, train_loader=train, val_loader=val, example_inputs=(x[:1],), name=name)


def digits_task() -> Task:
    return _digits().build_task()


def peers(task: Task, out: Path, dynamic: bool) -> dict[str, Path]:
    """The post-training peers of the teacher: ``quantize_static`` (QDQ, uint8 activations, int8
    per-channel weights, MinMax calibration on the same training batches our target calibrates
    on), the same with ``reduce_range=True`` (7-bit weights, ORT's advice without VNNI) and, for
    Linear models, ``quantize_dynamic`` (int8 per-channel weights)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    float_path = out / "teacher_float.onnx"
    model = fold_batchnorm(task.model, foldable_pairs(task.model))
    onnx.save(export_float(model, task.example_inputs), str(float_path))
    paths = {
        "peer": _static(task, float_path, out / "peer.onnx", reduce_range=False),
        "peer-rr": _static(task, float_path, out / "peer_rr.onnx", reduce_range=True),
    }
    if dynamic:
        paths["peer-dynamic"] = out / "peer_dynamic.onnx"
        quantize_dynamic(
            str(float_path),
            str(paths["peer-dynamic"]),
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
    return paths


def _static(task: Task, float_path: Path, path: Path, *, reduce_range: bool) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter([{"input0": x.numpy()} for x, _ in islice(task.train_loader, 8)])

        def get_next(self):
            return next(self.it, None)

    quantize_static(
        str(float_path),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=reduce_range,
    )
    return path


def round_robin(
    paths: dict[str, Path], example: torch.Tensor, rounds: int = ROUNDS
) -> dict[str, dict[str, float]]:
    sessions = {k: OrtModule(p, threads=1) for k, p in paths.items()}
    feed = example.numpy()
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for r in range(WARMUP + rounds):
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


def bench(task: Task, policies: dict[str, dict], tmp: Path, rounds: int = ROUNDS) -> dict:
    from autocompress import measure_teacher

    rows: dict[str, dict] = {}
    paths: dict[str, Path] = {}
    baseline = measure_teacher(task, target="onnxruntime", settings=SETTINGS)
    for name, policy in policies.items():
        t0 = time.time()
        res = compress(
            task,
            Policy.from_dict(policy),
            target="onnxruntime",
            out_dir=tmp / name,
            settings=SETTINGS,
            baseline=baseline,
            target_options=OPTIONS.get(name),
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
    linear_only = not any(isinstance(m, nn.Conv2d) for m in task.model.modules())
    for name, path in peers(task, tmp, dynamic=linear_only).items():
        paths[name] = path
        rows[name] = {"accuracy": task.evaluate(OrtModule(path)), "size_bytes": path.stat().st_size}
    lat = round_robin(paths, task.example_inputs[0][:1], rounds)
    for name in rows:
        rows[name].update(latency_ms=lat[name]["median_ms"], latency_p90_ms=lat[name]["p90_ms"])
        rows[name]["speedup_vs_fp32"] = lat["fp32"]["median_ms"] / lat[name]["median_ms"]
        rows[name]["compression_vs_fp32"] = rows["fp32"]["size_bytes"] / rows[name]["size_bytes"]
    return rows


IDENTITY8 = {"quant": {"default": 8}}
QAT8 = {"quant": {"default": 8}, "finetune": {"epochs": 2, "lr": 1e-4}}
OPTIONS = {"int8-dynamic": {"linear": "dynamic"}}  # target options per policy name
FLOORS = {"mlp": 1.8, "mlp-1024": 1.8, "digits-cnn": 2.5, "transformer": 1.8}
FLOORS["transformer-256"] = 1.8


def _document(results: dict, t0: float, rounds: int = ROUNDS) -> dict:
    checks = {}
    for name, rows in results.items():
        ours, fp32, p = rows["int8"], rows["fp32"], rows["peer"]
        checks[name] = {
            f"int8 >= {FLOORS[name]}x faster than fp32": ours["speedup_vs_fp32"] >= FLOORS[name],
            "int8 within 1 point of fp32": abs(ours["accuracy"] - fp32["accuracy"]) <= 0.01,
            "int8 no slower than peer": ours["latency_ms"] <= p["latency_ms"],
            "int8 within 0.5 point of peer": abs(ours["accuracy"] - p["accuracy"]) <= 0.005,
        }
        rr = rows["peer-rr"]  # the fair peer on a CPU without VNNI (ours reduce range there)
        checks[name]["int8 no slower than peer-rr"] = ours["latency_ms"] <= rr["latency_ms"]
        checks[name]["int8 within 0.5 point of peer-rr"] = (
            abs(ours["accuracy"] - rr["accuracy"]) <= 0.005
        )
        if "int8-dynamic" in rows:
            fast = rows["int8-dynamic"]["speedup_vs_fp32"] >= FLOORS[name]
            checks[name][f"int8-dynamic >= {FLOORS[name]}x faster than fp32"] = fast
    import onnxruntime

    doc = {
        "machine": {
            **cpu_record(),
            "cores": os.cpu_count(),
            "onnxruntime": onnxruntime.__version__,
            "reduce_range": get_target("onnxruntime").reduces_range,  # what auto resolved to
        },
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "settings": {
            "threads": 1,
            "batch": 1,
            "rounds": rounds,
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
    parser.add_argument("--models", default=",".join(FLOORS))
    parser.add_argument("--lean", action="store_true", help="only fp32, int8 and the peers")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timed round-robin rounds")
    parser.add_argument(
        "--qat", action="store_true", help="add the 2-epoch QAT row to every model (slow)"
    )
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    t0 = time.time()
    results = {}
    # the full run stays under 6 minutes: QAT only on the small MLP unless --qat
    base = {"fp32": {"quant": {"default": 32}}, "int8": IDENTITY8}
    qat = {"int8-qat": QAT8} if args.qat else {}
    linear = {**base, "int8-dynamic": IDENTITY8}
    jobs = {
        "mlp": (mlp_task, {**linear, "int8-qat": QAT8}),
        "mlp-1024": (lambda: mlp_task(width=1024, hidden=4, epochs=4), {**linear, **qat}),
        "digits-cnn": (
            digits_task,
            {
                **base,
                **qat,
                "prune30-int8": {
                    "prune": {"default": 0.3},
                    "quant": {"default": 8},
                    "finetune": {"epochs": 2, "lr": 1e-3},
                },
            },
        ),
        "transformer": (encoder_task, {**linear, **qat}),
        "transformer-256": (
            lambda: encoder_task(dim=256, depth=2, epochs=2),
            {**linear, **qat},
        ),
    }
    with tempfile.TemporaryDirectory(prefix="ort-int8-bench-") as tmp:
        for name in args.models.split(","):
            make, policies = jobs[name]
            if args.lean:
                policies = {k: policies[k] for k in ("fp32", "int8")}
            task = make()
            results[name] = bench(task, policies, Path(tmp) / name, args.rounds)
            print(f"{name} done ({time.time() - t0:.0f} s)", flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            partial = _document(results, t0, args.rounds)
            args.out.write_text(json.dumps(partial, indent=2))
    doc = _document(results, t0, args.rounds)
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
    m = doc["machine"]
    print(
        f"floors on this CPU ({m['model'] or '?'}, vnni {'yes' if m['vnni'] else 'no'}, "
        f"reduce_range {str(m['reduce_range']).lower()}, load {doc['load_average_1min']}):"
    )
    for name, c in checks.items():
        held = [k for k, v in c.items() if v]
        print(
            f"  {name}: {len(held)}/{len(c)} hold;",
            ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in c.items()),
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
