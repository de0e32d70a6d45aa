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

from pathlib import Path

import _common as common
import torch
from _target_peers import nncf_quantize

from autocompress import Task
from autocompress.targets import get_target
from autocompress.targets.runtimes import openvino_runtime as rt

OUT = common.RESULTS / "openvino_int8.json"
FLOOR = 2.5  # int8 vs OpenVINO fp32, no pruning, on an AVX-512 VNNI CPU


def _compiled(path: Path, default_hint: bool = False):
    config = rt.compile_config(1)
    if default_hint:
        config.pop("INFERENCE_PRECISION_HINT")
    return rt.core().compile_model(str(path), "CPU", config)


def bench(task: Task, tmp: Path, rounds: int, qat_epochs: int, peer: bool) -> dict:
    ours = common.our_rows(task, "openvino", tmp, qat_epochs)
    paths = {name: res.artifact for name, (res, _) in ours.items()}
    rows = {name: row for name, (_, row) in ours.items()}
    for res, row in ours.values():
        layers = res.metrics["layers"].values()
        row["runtime_precisions"] = sorted({r.get("runtime_precision", "?") for r in layers})
    if peer:
        paths["nncf"] = nncf_quantize(task, paths["fp32"], tmp / "nncf" / "model.xml")
        files = get_target("openvino").files(paths["nncf"])
        rows["nncf"] = {"size_bytes": sum(f.stat().st_size for f in files)}
    runs = {name: rt.OvModule(_compiled(path)) for name, path in paths.items()}
    runs["fp32-default-hint"] = rt.OvModule(_compiled(paths["fp32"], default_hint=True))
    rows["fp32-default-hint"] = {"size_bytes": rows["fp32"]["size_bytes"]}
    for name, run in runs.items():
        rows[name].update(rt.graph_record(run.compiled))
    common.measure_runs(rows, runs, task, rounds)
    return rows


def main() -> None:
    import nncf
    import openvino as ov

    args, rows = common.run_lowered(__doc__, "NNCF", bench, "autocompress-ov-bench-")
    cpu = common.int8_machine(
        openvino=ov.__version__, nncf=nncf.__version__, torch=torch.__version__
    )
    speedup = rows["int8"]["speedup_vs_fp32"]
    checks = {
        f"int8 >= {FLOOR}x faster than OpenVINO fp32 (no pruning)": speedup >= FLOOR,
        **common.int8_checks(rows, "u8/i8"),
        "fp32 teacher ran f32": rows["fp32"]["inference_precision"] == "f32",
    }
    if "nncf" in rows:
        checks["int8 no slower than nncf"] = (
            rows["int8"]["latency_ms"] <= rows["nncf"]["latency_ms"]
        )
    common.write_results(args, OUT, cpu, rows, checks, streams=1, hint="LATENCY")
    common.print_results(cpu, rows, checks, 18, lambda row: f"({row['inference_precision']})")


if __name__ == "__main__":
    main()
