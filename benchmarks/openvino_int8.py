"""Issue 21 floor: our int8 OpenVINO artifact against the OpenVINO fp32 teacher, and NNCF's
post-training ``nncf.quantize`` of the teacher (the peer an OpenVINO user would run).

Model: the digits ResNet-style CNN (``examples/digits/task.py:build_task``). Rows, all OpenVINO
IRs compiled for CPU with one inference thread, one stream, the latency hint:

- ``fp32``: the teacher, ``INFERENCE_PRECISION_HINT=f32`` (what the target compiles everything with);
- ``fp32-default-hint``: the same IR under OpenVINO's default precision hint (bf16 on CPUs with
  AVX-512 BF16 / AMX): shown, not used as a baseline;
- ``int8``: ours, no pruning, 8 bits everywhere, no fine-tuning (our codes, MinMax activation
  scales); ``int8-qat``: the same with 2 epochs of QAT (``--qat-epochs``);
- ``nncf``: ``nncf.quantize`` of the fp32 IR on 300 training images.

Timed round-robin in one process at batch 1 (see ``round_robin``: per turn a cold call right
after another model, recorded as ``latency_cold_ms``, then the timed call); accuracy is the task metric on each compiled
artifact. The JSON records the CPU's name and int8/bf16 features, the precision each artifact
ran in, and the runtime op counts (``layerType precision``).

    .venv/bin/python benchmarks/openvino_int8.py                 # the full run (~2 min idle)
    .venv/bin/python benchmarks/openvino_int8.py --rounds 50     # a smoke run
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
from autocompress.targets import _ov_runtime as rt
from autocompress.targets import get_target
from autocompress.targets._cpu import VNNI_FLAGS, cpu_info, cpu_record

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "openvino_int8.json"
SETTINGS = MeasureSettings(threads=1, warmup=10, repeats=30)
ROUNDS, WARMUP = 400, 50
FLOOR = 2.5  # int8 vs OpenVINO fp32, no pruning, on an AVX-512 VNNI CPU
CALIBRATION = 300  # images for nncf.quantize (its default subset size)


def _ours(task: Task, policy: dict, out: Path, baseline: dict) -> tuple[Path, dict]:
    res = compress(
        task,
        Policy.from_dict(policy),
        target="openvino",
        out_dir=out,
        settings=SETTINGS,
        baseline=baseline,
    )
    modes = [r["mode"] for r in res.metrics["layers"].values()]
    row = {
        "accuracy": res.metrics["accuracy"],
        "size_bytes": res.metrics["size_bytes"],
        "int_compute_layers": f"{modes.count('int-compute')}/{len(modes)}",
        "runtime_precisions": sorted(
            {r.get("runtime_precision", "?") for r in res.metrics["layers"].values()}
        ),
    }
    return res.artifact, row


def _nncf(task: Task, teacher: Path, out: Path) -> Path:
    import nncf
    import openvino as ov

    images = [x[i : i + 1].numpy() for x, _ in task.train_loader for i in range(len(x))]
    dataset = nncf.Dataset(images[:CALIBRATION])
    model = nncf.quantize(rt.core().read_model(str(teacher)), dataset, subset_size=CALIBRATION)
    path = out / "nncf" / "model.xml"
    path.parent.mkdir(parents=True)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def _compiled(path: Path, default_hint: bool = False):
    config = rt.compile_config(1)
    if default_hint:
        config.pop("INFERENCE_PRECISION_HINT")
    return rt.core().compile_model(str(path), "CPU", config)


def bench(task: Task, tmp: Path, rounds: int, qat_epochs: int, peer: bool) -> dict:
    baseline = measure_baseline(task, target="openvino", settings=SETTINGS)
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
        paths["nncf"] = _nncf(task, paths["fp32"], tmp)
        files = get_target("openvino").files(paths["nncf"])
        rows["nncf"] = {"size_bytes": sum(f.stat().st_size for f in files)}
    runs = {name: rt.OvModule(_compiled(path)) for name, path in paths.items()}
    runs["fp32-default-hint"] = rt.OvModule(_compiled(paths["fp32"], default_hint=True))
    rows["fp32-default-hint"] = {"size_bytes": rows["fp32"]["size_bytes"]}
    for name, run in runs.items():
        rows[name]["accuracy"] = task.evaluate(run)
        rows[name].update(rt.graph_record(run.compiled))
    lat = round_robin(runs, task.example_inputs[0][:1], rounds, WARMUP)
    for name, row in rows.items():
        row.update(latency_ms=lat[name]["median_ms"], latency_p90_ms=lat[name]["p90_ms"])
        row["latency_cold_ms"] = lat[name]["cold_median_ms"]  # right after another model
        row["speedup_vs_fp32"] = lat["fp32"]["median_ms"] / lat[name]["median_ms"]
        row["compression_vs_fp32"] = rows["fp32"]["size_bytes"] / row["size_bytes"]
    return rows


def machine() -> dict:
    import nncf
    import openvino as ov

    flags = cpu_info()[1]
    features = [f for f in (*VNNI_FLAGS, "avx512_bf16", "amx_bf16") if f in flags]
    return {
        **cpu_record(),
        "int8_features": features,
        "cores": os.cpu_count(),
        "openvino": ov.__version__,
        "nncf": nncf.__version__,
        "torch": torch.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="timed round-robin rounds")
    parser.add_argument("--qat-epochs", type=int, default=2, help="0: no int8-qat row")
    parser.add_argument("--no-peer", action="store_true", help="leave out the NNCF row")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="autocompress-ov-bench-") as tmp:
        rows = bench(digits_task(), Path(tmp), args.rounds, args.qat_epochs, not args.no_peer)
    cpu = machine()
    speedup = rows["int8"]["speedup_vs_fp32"]
    checks = {
        f"int8 >= {FLOOR}x faster than OpenVINO fp32 (no pruning)": speedup >= FLOOR,
        "int8 within 1 point of fp32": rows["fp32"]["accuracy"] - rows["int8"]["accuracy"] <= 0.01,
        "fp32 teacher ran f32": rows["fp32"]["inference_precision"] == "f32",
        "every int8 layer ran u8/i8": rows["int8"]["int_compute_layers"].split("/")[0]
        == rows["int8"]["int_compute_layers"].split("/")[1],
    }
    if "nncf" in rows:
        checks["int8 no slower than nncf"] = (
            rows["int8"]["latency_ms"] <= rows["nncf"]["latency_ms"]
        )
    doc = {
        "machine": cpu,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": "examples/digits/task.py:build_task (ResNet-style CNN, 16x16 digits)",
        "settings": {
            "threads": 1,
            "streams": 1,
            "batch": 1,
            "rounds": args.rounds,
            "warmup": WARMUP,
            "order": "round-robin, random order per round (seed 0); per turn a cold call "
            "(latency_cold_ms) then the timed call (latency_ms)",
            "hint": "LATENCY",
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
            f"{name:18s} acc {row['accuracy']:.4f}  {row['size_bytes'] / 1e6:6.3f} MB  "
            f"{row['latency_ms']:.3f} ms  {row['speedup_vs_fp32']:.2f}x  "
            f"({row['inference_precision']})"
        )
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")


if __name__ == "__main__":
    main()
