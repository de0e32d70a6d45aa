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

from pathlib import Path

import _common as common
import torch
from _target_peers import xnnpack_ptq

from autocompress import Task
from autocompress.targets.runtimes import executorch_runtime as rt

OUT = common.RESULTS / "executorch_int8.json"


def bench(task: Task, tmp: Path, rounds: int, qat_epochs: int, peer: bool) -> dict:
    ours = common.our_rows(task, "executorch", tmp, qat_epochs)
    paths = {name: res.artifact for name, (res, _) in ours.items()}
    rows = {name: {**row, **res.metrics["graph"]} for name, (res, row) in ours.items()}
    if peer:
        paths["pt2e"], rows["pt2e"] = xnnpack_ptq(task, tmp / "pt2e")
    runs = {name: rt.EtModule(path, threads=1) for name, path in paths.items()}
    common.measure_runs(rows, runs, task, rounds)
    return rows


def main() -> None:
    from importlib.metadata import version

    import torchao

    args, rows = common.run_lowered(__doc__, "pt2e", bench, "autocompress-et-bench-")
    cpu = common.int8_machine(
        executorch=version("executorch"), torchao=torchao.__version__, torch=torch.__version__
    )
    int8 = rows["int8"]
    checks = {
        **common.int8_checks(rows, "XNNPACK int8"),
        "int8 faster than fp32": int8["speedup_vs_fp32"] > 1,
    }
    if "pt2e" in rows:
        checks["int8 no slower than pt2e"] = int8["latency_ms"] <= rows["pt2e"]["latency_ms"]
        checks["int8 no larger than pt2e"] = int8["size_bytes"] <= rows["pt2e"]["size_bytes"]
    route = (
        "pt2e XNNPACKQuantizer graph with observers pinned to our codes' "
        "scales and the fine-tuning's activation qparams (codes checked after convert)"
    )
    common.write_results(args, OUT, cpu, rows, checks, int8_route=route)
    common.print_results(
        cpu,
        rows,
        checks,
        10,
        lambda row: f"int8 layers {row['int_compute_layers']}  portable {row['portable_ops']}",
    )


if __name__ == "__main__":
    main()
