"""ExecuTorch as the ``executorch`` target runs it: the runtime's one-thread XNNPACK threadpool,
the callable wrapper the task metric uses, the header stored in the ``.pte`` itself (a constant
method), and what the lowered program delegates to XNNPACK and what it leaves to the portable
kernels."""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets._base import require_modules
from autocompress.targets.modes import LayerMode

HEADER_METHOD = "autocompress_header"
# graph nodes that move values around rather than compute (not counted as portable ops)
_PLUMBING = ("getitem", "executorch_call_delegate", "alloc", "view_copy", "clone")
# ops that compute a layer (embedding: a lookup, mapped to its table for the record)
_COMPUTE = ("convolution", "linear", "addmm", "mm", "bmm", "embedding")


def require() -> None:
    """One-line error naming the extra to install when ExecuTorch is missing."""
    require_modules("executorch", "executorch", "executorch.runtime")


def set_threads(threads: int) -> None:
    """XNNPACK's threadpool (one per process) at ``threads`` threads."""
    from executorch.extension.pybindings import portable_lib

    if portable_lib._threadpool_get_thread_count() != threads:
        portable_lib._unsafe_reset_threadpool(int(threads))


def load_program(path: Path) -> Any:
    require()
    from executorch.runtime import Runtime

    return Runtime.get().load_program(str(path))


class EtModule(nn.Module):
    """A ``.pte`` program's ``forward`` run by ExecuTorch's runtime behind the nn.Module call
    interface the task metric uses.

    The program has the static input shapes of the task's example inputs (XNNPACK's memory is
    planned for them); a batch of another size along dim 0 is run in slices of the exported
    batch and the outputs concatenated, as a deployed caller would feed it."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        super().__init__()
        from torch.utils._pytree import treespec_loads

        set_threads(threads)
        program = load_program(path)
        header = read_header(program)
        self.method = program.load_method("forward")
        self.batch = int(header["batch"])
        self.out_spec = treespec_loads(header["out_spec"])

    def forward(self, *inputs: torch.Tensor) -> Any:
        from torch.utils._pytree import tree_unflatten

        n = inputs[0].shape[0] if inputs and inputs[0].dim() else self.batch
        if n == self.batch:
            outs = self._run(inputs)
        else:
            if n % self.batch:
                raise AutoCompressError(
                    f"the .pte runs batches of {self.batch}; got {n} (not a multiple)"
                )
            parts = [
                self._run(tuple(t[i : i + self.batch] for t in inputs))
                for i in range(0, n, self.batch)
            ]
            outs = [torch.cat(list(o)) for o in zip(*parts, strict=True)]
        return tree_unflatten(list(outs), self.out_spec)

    def _run(self, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
        return [o.clone() for o in self.method.execute([t.contiguous() for t in inputs])]


def header_tensor(header: Mapping[str, Any]) -> torch.Tensor:
    """The header as a uint8 tensor (zlib-compressed JSON: it counts in the artifact's bytes),
    returned by the program's ``HEADER_METHOD``."""
    blob = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8)


def read_header(program: Any) -> dict[str, Any]:
    if HEADER_METHOD not in program.method_names:
        return {}
    blob = program.load_method(HEADER_METHOD).execute([])[0]
    return json.loads(zlib.decompress(blob.numpy().tobytes()).decode())


# -- what the lowered program runs ------------------------------------------------------------


def _op_name(node: Any) -> str:
    target = node.target
    name = getattr(target, "__name__", str(target))
    return name.removesuffix(".default").split("::")[-1]


def _layer(node: Any) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


def _is_compute(node: Any) -> bool:
    return _op_name(node).split(".")[-1] in _COMPUTE


def _quantized(node: Any) -> bool:
    """A Conv/Linear node fed a dequantized int8 weight and a dequantized int8 input."""
    args = [a for a in node.args[:2] if hasattr(a, "op")]
    return len(args) == 2 and all("dequantize" in _op_name(a) for a in args)


def _activations(node: Any) -> str:
    """How a quantized node's int8 input is made: qparams fixed in the program, or computed
    from each call's input (``dequantize_per_tensor.tensor`` of a ``choose_qparams``)."""
    x = node.args[0]
    return "dynamic" if _op_name(x).endswith(".tensor") else "static"


def program_ops(edge_program: Any) -> dict[str, Any]:
    """Per compute layer, where it runs; and the op counts delegated / left to portable kernels.

    ``edge_program`` is the ``ExportedProgram`` after ``to_edge_transform_and_lower``: its
    ``executorch_call_delegate`` nodes run lowered XNNPACK subgraphs (read from each lowered
    module's ``original_module``), every other call is a portable (or optimized) kernel."""
    gm = edge_program.graph_module
    layers: dict[str, dict[str, Any]] = {}
    delegated: dict[str, int] = {}
    portable: dict[str, int] = {}
    partitions = 0
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = _op_name(node)
        if name.endswith("executorch_call_delegate"):
            partitions += 1
            lowered = getattr(gm, node.args[0].target)
            for inner in lowered.original_module.graph.nodes:
                if inner.op != "call_function":
                    continue
                delegated[_op_name(inner)] = delegated.get(_op_name(inner), 0) + 1
                if _is_compute(inner) and _layer(inner):
                    int8 = _quantized(inner)
                    found = layers.setdefault(_layer(inner), {})
                    found.update(runs="XNNPACK", op=_op_name(inner), int8=int8)
                    if int8:
                        found["activations"] = _activations(inner)
            continue
        if name.split(".")[-1] in _PLUMBING:
            continue
        portable[name] = portable.get(name, 0) + 1
        if _is_compute(node) and _layer(node):
            layers.setdefault(_layer(node), {}).update(runs="portable", op=name, int8=False)
    return {
        "layers": layers,
        "partitions": partitions,
        "delegated_ops": dict(sorted(delegated.items())),
        "portable_ops": dict(sorted(portable.items())),
    }


def read_records_(ops: Mapping[str, Any], records: dict[str, dict[str, Any]]) -> None:
    """Each layer's ``mode``, ``op`` and ``runs`` (``XNNPACK`` or ``portable``) from the lowered
    program: ``int-compute`` only where XNNPACK runs it on int8 weights and inputs."""
    for path, rec in records.items():
        found = ops["layers"].get(path)
        if found is None:
            rec.update(mode=LayerMode.FLOAT, op="not found in the lowered program", runs="?")
            continue
        int8 = found["int8"] and found["runs"] == "XNNPACK"
        rec.update(
            mode=LayerMode.INT_COMPUTE if int8 else LayerMode.FLOAT,
            op=found["op"],
            runs=found["runs"],
        )
        if int8:  # "dynamic" as the onnxruntime target records it; how, beside it
            rec["activations"] = found.get("activations", "static")
            rec["kernel"] = (
                "XNNPACK qd8: input quantized per call (qparams from that input), float output"
                if rec["activations"] == "dynamic"
                else "XNNPACK qs8: input with fixed qparams, int8 output"
            )
        if rec["bits"] == 8 and not int8:
            rec["fallback"] = "8-bit codes kept as fp32 weights: " + (
                "left to a portable kernel"
                if found["runs"] == "portable"
                else "no int8 pattern for this op in the XNNPACK quantizer"
            )
