"""Issue 21: our int8 ``.pte`` (XNNPACK) against the ExecuTorch XNNPACK fp32 teacher, and the
XNNPACK quantizer's own post-training flow on the teacher (the peer an ExecuTorch user would run).

Model: the digits ResNet-style CNN (``examples/digits/task.py:build_task``). Rows, all ``.pte``
programs lowered to the XNNPACK delegate and run by ExecuTorch's runtime, threadpool at one
thread:

- ``fp32``: the teacher (BatchNorms folded), fp32 XNNPACK kernels;
- ``int8``: ours, no pruning, 8 bits everywhere, no fine-tuning (our per-channel codes, MinMax
  activation scales pinned into the XNNPACKQuantizer's graph); ``int8-qat``: the same with 2
  epochs of QAT (``--qat-epochs``);
- ``pt2e``: ``prepare_pt2e`` / ``convert_pt2e`` (torchao) with ``XNNPACKQuantizer`` and
  ``get_symmetric_quantization_config(is_per_channel=True)`` on the teacher, calibrated on 300
  training images, then lowered the same way.

Timed round-robin in one process at batch 1 (random order per round, seed 0; per turn a cold
call, then the timed call); accuracy is the task metric on each program. The JSON records the
CPU's name and int8 features, and per row the ops delegated to XNNPACK and left portable.

    .venv/bin/python benchmarks/executorch_int8.py                 # the full run (~3 min idle)
    .venv/bin/python benchmarks/executorch_int8.py --rounds 50     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from _common import digits_task, round_robin

from autocompress import Policy, Task, compress
from autocompress.pipeline._compress import MeasureSettings, measure_baseline
from autocompress.targets import _et_lower
from autocompress.targets import _et_runtime as rt
from autocompress.targets._cpu import VNNI_FLAGS, cpu_info, cpu_record

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "executorch_int8.json"
SETTINGS = MeasureSettings(threads=1, warmup=10, repeats=30)
ROUNDS, WARMUP = 400, 50
CALIBRATION = 300  # images for the pt2e peer (as NNCF's default subset in openvino_int8.py)


def _ours(task: Task, policy: dict, out: Path, baseline: dict) -> tuple[Path, dict]:
    res = compress(
        task,
        Policy.from_dict(policy),
        target="executorch",
        out_dir=out,
        settings=SETTINGS,
        baseline=baseline,
    )
    modes = [r["mode"] for r in res.metrics["layers"].values()]
    row = {
        "size_bytes": res.metrics["size_bytes"],
        "int_compute_layers": f"{modes.count('int-compute')}/{len(modes)}",
        **res.metrics["graph"],
    }
    return res.artifact, row


def _pt2e(task: Task, out: Path) -> tuple[Path, dict]:
    """The XNNPACK quantizer's post-training flow on the teacher, lowered like ours."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torch.export import export
    from torch.utils._pytree import tree_structure, treespec_dumps
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = tuple(task.example_inputs)
    model = task.model.eval()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(True))
    prepared = prepare_pt2e(export(model, example).module(), quantizer)
    images = [x[i : i + 1] for x, _ in task.train_loader for i in range(len(x))]
    with torch.no_grad():
        for image in images[:CALIBRATION]:
            prepared(image)
    converted = convert_pt2e(prepared)
    header = {"batch": 1, "out_spec": treespec_dumps(tree_structure(model(*example)))}
    methods = {rt.HEADER_METHOD: rt.header_tensor(header)}
    edge, program = _et_lower.lower(converted, example, methods)
    ops = rt.program_ops(program)  # before to_executorch, which rewrites ops to out variants
    path = out / "pt2e" / "model.pte"
    path.parent.mkdir(parents=True)
    path.write_bytes(edge.to_executorch().buffer)
    int8 = sum(1 for rec in ops["layers"].values() if rec["int8"] and rec["runs"] == "XNNPACK")
    row = {
        "size_bytes": path.stat().st_size,
        "int_compute_layers": f"{int8}/{len(ops['layers'])}",
        **{k: ops[k] for k in ("partitions", "delegated_ops", "portable_ops")},
    }
    return path, row


def bench(task: Task, tmp: Path, rounds: int, qat_epochs: int, peer: bool) -> dict:
    baseline = measure_baseline(task, target="executorch", settings=SETTINGS)
    paths, rows = {}, {}
    policies = {"fp32": {"quant": {"default": 32}}, "int8": {"quant": {"default": 8}}}
    if qat_epochs:
        policies["int8-qat"] = {
            "quant": {"default": 8},
            "finetune": {"epochs": qat_epochs, "lr": 1e-4},
        }
    for name, policy in policies.items():
        policy = {"finetune": {"epochs": 0}, **policy}
        paths[name], rows[name] = _ours(task, policy, tmp / name, baseline)
    if peer:
        paths["pt2e"], rows["pt2e"] = _pt2e(task, tmp)
    runs = {name: rt.EtModule(path, threads=1) for name, path in paths.items()}
    for name, run in runs.items():
        rows[name]["accuracy"] = task.evaluate(run)
    lat = round_robin(runs, task.example_inputs[0][:1], rounds, WARMUP)
    for name, row in rows.items():
        row.update(latency_ms=lat[name]["median_ms"], latency_p90_ms=lat[name]["p90_ms"])
        row["latency_cold_ms"] = lat[name]["cold_median_ms"]
        row["speedup_vs_fp32"] = lat["fp32"]["median_ms"] / lat[name]["median_ms"]
        row["compression_vs_fp32"] = rows["fp32"]["size_bytes"] / row["size_bytes"]
    return rows


def machine() -> dict:
    from importlib.metadata import version

    import torchao

    flags = cpu_info()[1]
    features = [f for f in (*VNNI_FLAGS, "avx512_bf16", "amx_bf16") if f in flags]
    return {
        **cpu_record(),
        "int8_features": features,
        "cores": os.cpu_count(),
        "executorch": version("executorch"),
        "torchao": torchao.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timed round-robin rounds")
    parser.add_argument("--qat-epochs", type=int, default=2, help="0: no int8-qat row")
    parser.add_argument("--no-peer", action="store_true", help="leave out the pt2e row")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="autocompress-et-bench-") as tmp:
        rows = bench(digits_task(), Path(tmp), args.rounds, args.qat_epochs, not args.no_peer)
    cpu = machine()
    int8 = rows["int8"]
    checks = {
        "int8 within 1 point of fp32": rows["fp32"]["accuracy"] - int8["accuracy"] <= 0.01,
        "every int8 layer ran XNNPACK int8": int8["int_compute_layers"].split("/")[0]
        == int8["int_compute_layers"].split("/")[1],
        "int8 faster than fp32": int8["speedup_vs_fp32"] > 1,
    }
    if "pt2e" in rows:
        checks["int8 no slower than pt2e"] = int8["latency_ms"] <= rows["pt2e"]["latency_ms"]
        checks["int8 no larger than pt2e"] = int8["size_bytes"] <= rows["pt2e"]["size_bytes"]
    doc = {
        "machine": cpu,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": "examples/digits/task.py:build_task (ResNet-style CNN, 16x16 digits)",
        "settings": {
            "threads": 1,
            "batch": 1,
            "rounds": args.rounds,
            "warmup": WARMUP,
            "order": "round-robin, random order per round (seed 0); per turn a cold call "
            "(latency_cold_ms) then the timed call (latency_ms)",
            "int8_route": "pt2e XNNPACKQuantizer graph with observers pinned to our codes' "
            "scales and the fine-tuning's activation qparams (codes checked after convert)",
        },
        "load_average_1min": round(os.getloadavg()[0], 1),  # other processes on the cores
        "results": rows,
        "checks": checks,
        "seconds": round(time.time() - t0),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{cpu['model']} | int8 features: {', '.join(cpu['int8_features']) or 'none'}")
    for name, row in rows.items():
        print(
            f"{name:10s} acc {row['accuracy']:.4f}  {row['size_bytes'] / 1e6:6.3f} MB  "
            f"{row['latency_ms']:.3f} ms  {row['speedup_vs_fp32']:.2f}x  "
            f"int8 layers {row['int_compute_layers']}  portable {row['portable_ops']}"
        )
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")


if __name__ == "__main__":
    main()
