"""What a user of OpenVINO or ExecuTorch would run on the teacher instead of a search: NNCF's
post-training ``nncf.quantize`` (CNNs) and ``nncf.compress_weights`` (int8 weights, for
transformers) of the teacher's fp32 IR, and the XNNPACK quantizer's post-training (pt2e) flow,
lowered to an XNNPACK ``.pte`` like the ``executorch`` target's own programs.

Shared by ``openvino_int8.py``, ``executorch_int8.py`` and ``compression.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.targets.runtimes import executorch_lowering as et_lower
from autocompress.targets.runtimes import executorch_runtime as et_rt
from autocompress.targets.runtimes import openvino_runtime as ov_rt
from autocompress.task import Task

CALIBRATION = 300  # batch-1 samples for post-training calibration (NNCF's default subset size)


def samples(task: Task, limit: int = CALIBRATION) -> list[tuple[torch.Tensor, ...]]:
    """Up to ``limit`` training samples, each a tuple of batch-1 input tensors."""
    out: list[tuple[torch.Tensor, ...]] = []
    for inputs, _ in task.train_loader:
        inputs = tuple(inputs) if isinstance(inputs, tuple | list) else (inputs,)
        for i in range(len(inputs[0])):
            out.append(tuple(t[i : i + 1] for t in inputs))
            if len(out) == limit:
                return out
    return out


def _save_ir(model: Any, path: Path) -> Path:
    import openvino as ov

    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path), compress_to_fp16=False)
    return path


def nncf_quantize(task: Task, teacher_ir: Path, out: Path) -> Path:
    """``nncf.quantize`` (its defaults: int8, mixed preset) of the fp32 IR, calibrated on
    ``CALIBRATION`` training samples; the IR written to ``out`` (.xml + .bin)."""
    import nncf

    items = [
        s[0].numpy() if len(s) == 1 else [t.numpy() for t in s] for s in samples(task)
    ]  # one input: the array itself, as OpenVINO takes it
    model = nncf.quantize(
        ov_rt.core().read_model(str(teacher_ir)), nncf.Dataset(items), subset_size=len(items)
    )
    return _save_ir(model, out)


def nncf_compress_weights(teacher_ir: Path, out: Path) -> Path:
    """``nncf.compress_weights`` at its default (int8 asymmetric weights, per output channel,
    no data): the weight compression NNCF offers transformers."""
    import nncf

    return _save_ir(nncf.compress_weights(ov_rt.core().read_model(str(teacher_ir))), out)


def xnnpack_ptq(task: Task, out: Path, *, dynamic: bool = False) -> tuple[Path, dict[str, Any]]:
    """The XNNPACK quantizer's post-training flow on the teacher: ``prepare_pt2e`` /
    ``convert_pt2e`` (torchao) with ``XNNPACKQuantizer`` and
    ``get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)`` (global when
    static; on the ``nn.Linear`` layers when dynamic), calibrated on ``CALIBRATION`` training
    samples (static), lowered to XNNPACK. The quantizer's rewrite keeps integer scalars
    integer (``keep_integer_scalars``: BERT's position ids stay indices), nothing else changed.
    Returns the ``.pte`` and its record (size, int8 layers on XNNPACK, partitions, delegated
    and portable ops)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torch.export import export
    from torch.utils._pytree import tree_structure, treespec_dumps
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    example = tuple(task.example_inputs)
    model = task.model.eval()

    class Quantizer(XNNPACKQuantizer):
        # the one fix a user needs on BERT/GPT-2: without it the quantizer's own rewrite turns
        # the position ids' integer arithmetic float (IndexError at calibration); annotation
        # is the stock quantizer's
        def transform_for_annotation(self, model: Any) -> Any:
            return et_lower.keep_integer_scalars(super().transform_for_annotation(model))

    config = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=dynamic)
    quantizer = Quantizer()  # dynamic: the Linear layers only (ExecuTorch's LLM recipe)
    quantizer = quantizer.set_module_type(nn.Linear, config) if dynamic else quantizer.set_global(config)  # fmt: skip
    prepared = prepare_pt2e(export(model, example).module(), quantizer)
    with torch.no_grad():
        for sample in samples(task, 32 if dynamic else CALIBRATION):
            prepared(*sample)
    converted = convert_pt2e(prepared)
    with torch.no_grad():
        structure = tree_structure(model(*example))
    header = {"batch": int(example[0].shape[0]), "out_spec": treespec_dumps(structure)}
    methods = {et_rt.HEADER_METHOD: et_rt.header_tensor(header)}
    edge, program = et_lower.lower(converted, example, methods)
    ops = et_rt.program_ops(program)  # before to_executorch, which rewrites ops to out variants
    path = out / "model.pte"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(edge.to_executorch().buffer)
    layers = ops["layers"].values()
    int8 = sum(1 for rec in layers if rec["int8"] and rec["runs"] == "XNNPACK")
    row = {
        "size_bytes": path.stat().st_size,
        "int_compute_layers": f"{int8}/{len(ops['layers'])}",
        **{k: ops[k] for k in ("partitions", "delegated_ops", "portable_ops")},
    }
    return path, row
