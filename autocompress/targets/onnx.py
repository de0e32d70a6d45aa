"""ONNX export of a deployed model, for ONNX Runtime.

The exported graph computes in float32 with the deployed (already quantized) weight values:
PyTorch's dynamic int8 Linear does not export, so int8 Linears become float Linears holding
the dequantized int8 weights. Every layer is therefore ``weight-only`` in the ONNX file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn


def _float_linear(q: nn.Module) -> nn.Linear:
    weight, bias = q._weight_bias()
    lin = nn.Linear(q.in_features, q.out_features, bias=bias is not None)
    lin.weight = nn.Parameter(weight.dequantize(), requires_grad=False)
    if bias is not None:
        lin.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
    return lin


def export_onnx(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], path: Path) -> Path:
    """Write ``model`` as ONNX (opset 17, dynamic batch) to ``path``."""
    model = copy.deepcopy(model).eval()
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.ao.nn.quantized.dynamic.Linear):
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, _float_linear(mod))
    names = [f"input{i}" for i in range(len(example_inputs))]
    torch.onnx.export(
        model,
        example_inputs,
        str(path),
        input_names=names,
        output_names=["output"],
        dynamic_axes={n: {0: "batch"} for n in [*names, "output"]},
        opset_version=17,
        dynamo=False,
    )
    return path
