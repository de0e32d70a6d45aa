"""Lower a (BatchNorm-folded) student to an XNNPACK ``.pte`` whose int8 layers carry our codes.

Route (pt2e with fixed qparams): the model is exported, annotated by ExecuTorch's own
``XNNPACKQuantizer`` (per-channel symmetric int8 weights in [-127, 127], int8 per-tensor
activations), and ``prepare_pt2e`` inserts its observers. Before ``convert_pt2e`` the observers
that matter are pinned to our values: each 8-bit layer's weight observer returns our
per-channel scales (the weight is already ``codes · scale``, so ``round(w / s)`` gives back our
codes exactly: checked after conversion), and its input observer returns the fine-tuning's
uint8 activation qparams shifted to int8 (``zero_point - 128``: the same grid), except for a
Linear whose output feeds no int8 layer: XNNPACK's qd8 kernel, its input quantized per call and
the fine-tuning's input scale not used (``_quantizer``). The other ops
the quantizer annotates (adds, multiplications, concatenations, pooling) are quantized only on
the activation path into an 8-bit layer (``_off_activation_path``: a CNN's residual adds, yes;
an attention-mask bias or a transformer's residual stream before its LayerNorm, no) and keep
the quantizer's own observers, calibrated on a few training batches, as ONNX Runtime's target
calibrates its remaining tensors. Layers not at 8 bits are left out of the quantizer (fp32 on
XNNPACK).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.techniques.quantize import dequantize, quantize_weight

_LAYER_OPS = ("conv1d", "conv2d", "linear")


def set_codes_(model: nn.Module, layers: Iterable[str]) -> dict[str, tuple[torch.Tensor, ...]]:
    """Replace each layer's weight by its dequantized 8-bit codes; returns ``{layer: (codes,
    scale)}`` (the values the artifact must carry)."""
    codes = {}
    for path in layers:
        module = model.get_submodule(path)
        c, s = quantize_weight(module.weight, 8)
        module.weight = nn.Parameter(dequantize(c, s), requires_grad=False)
        codes[path] = (c, s)
    return codes


def set_tables_(model: nn.Module, tables: Iterable[str]) -> dict[str, int]:
    """Replace each 8-bit embedding table by a ``QuantEmbedding`` (int8 codes, per-row float32
    scales: the codes the table's fake quantization trained); returns each table's bytes."""
    from autocompress.techniques.embedding import QuantEmbedding

    out = {}
    for path in tables:
        parent, _, name = path.rpartition(".")
        table = QuantEmbedding.from_embedding(model.get_submodule(path), 8)
        setattr(model.get_submodule(parent) if parent else model, name, table)
        out[path] = table.codes.numel() + 4 * table.scale.numel()
    return out


def _export(model: nn.Module, inputs: tuple, dynamic: bool) -> Any:
    from torch.export import Dim, export

    if not dynamic:
        return export(model, inputs)
    doubled = tuple(torch.cat([t, t]) for t in inputs)  # batch 2: not specialized as 1
    batch = Dim("batch", max=4096)
    return export(model, doubled, dynamic_shapes=tuple({0: batch} for _ in inputs))


def _fixed(scale: torch.Tensor, zero_point: torch.Tensor) -> Callable[[], Any]:
    return lambda: (scale, zero_point)


def _layer(node: Any) -> str | None:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else None


def _quantizer(floats: set[str]) -> Any:
    """ExecuTorch's XNNPACKQuantizer (per-channel int8 everywhere it has a pattern), leaving the
    Conv/Linear ops of the layers in ``floats`` unannotated (fp32 on XNNPACK).

    A Linear whose output reaches no 8-bit layer (see ``_feeds_int8``) is annotated with the
    quantizer's dynamic config instead: XNNPACK's qd8 kernel (int8 input quantized per call,
    our int8 weight codes, float output). Its static kernel must write an int8 output, one
    per-tensor grid that is dequantized again before the next float op (a LayerNorm after the
    residual add, a softmax): on MiniLM with half its FFN units pruned that grid cost 0.035
    WordSim-353 (0.694 on XNNPACK vs 0.729 for the float model carrying the same codes; 0.724
    with the FFN output Linears dynamic, 0.726 with every Linear dynamic). The layers annotated
    so are in ``dynamic`` after ``prepare_pt2e`` (their fine-tuned input scales are not used)."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer_utils import (
        _mark_nodes_as_annotated,
    )

    on_the_fly = get_symmetric_quantization_config(is_per_channel=True, is_dynamic=True)

    class Quantizer(XNNPACKQuantizer):
        def __init__(self) -> None:
            super().__init__()
            self.dynamic: set[str] = set()  # the Linears annotated qd8 (filled by annotate)

        def transform_for_annotation(self, model: Any) -> Any:
            return keep_integer_scalars(super().transform_for_annotation(model))

        def annotate(self, model: Any) -> Any:
            # pre-marked nodes are skipped by every annotator: float layers, integer
            # arithmetic (position ids, masks), which int8 activations would turn into floats,
            # and float arithmetic on values not computed by a layer (see _off_activation_path)
            feeds = _feeds_int8(model.graph, floats)
            off = _off_activation_path(model.graph, feeds)
            _mark_nodes_as_annotated(
                [
                    n
                    for n in model.graph.nodes
                    if (_layer(n) in floats and _is_layer_op(n)) or _integer(n) or n in off
                ]
            )
            model = super().annotate(model)
            self.dynamic = set()
            shared = _shared_sources(model.graph)
            for node in model.graph.nodes:
                held = node.meta.get("quantization_annotation")
                if _op_name(node) != "linear" or node in feeds or held is None:
                    continue
                if node in shared:  # a view's int8 output shares this Linear's grid: keep it
                    continue
                x = node.args[0]
                if held.output_qspec is None or x not in held.input_qspec_map:
                    continue
                held.input_qspec_map[x] = on_the_fly.input_activation
                held.output_qspec = None
                self.dynamic.add(_layer(node))
            return model

    return Quantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))


def keep_integer_scalars(model: Any) -> Any:
    """Undo one step of ``XNNPACKQuantizer.transform_for_annotation``: it turns the scalar of
    every add/mul into a float tensor constant, which makes integer arithmetic float (GPT-2's
    position ids, BERT's: then ``IndexError: tensors used as indices must be long...``); the
    scalars of integer ops become integer constants again."""
    for node in model.graph.nodes:
        if node.op != "call_function" or not _integer(node):
            continue
        for arg in node.args:
            if getattr(arg, "op", None) == "get_attr" and "." not in arg.target:
                held = getattr(model, arg.target)
                if held.is_floating_point() and held.dim() == 0:
                    model.register_buffer(arg.target, held.to(node.meta["val"].dtype))
    return model


def _shared_sources(graph: Any) -> set[Any]:
    """Nodes whose output qparams another node's annotation shares (``propagate_annotation``
    gives a slice or view after a Linear its grid): that Linear must keep its int8 output."""
    from torchao.quantization.pt2e.quantizer import SharedQuantizationSpec

    out: set[Any] = set()
    for node in graph.nodes:
        held = node.meta.get("quantization_annotation")
        if held is None:
            continue
        for spec in (held.output_qspec, *held.input_qspec_map.values()):
            if isinstance(spec, SharedQuantizationSpec):
                source = spec.edge_or_node
                out.add(source[0] if isinstance(source, tuple) else source)
    return out


def _feeds_int8(graph: Any, floats: set[str]) -> set[Any]:
    """The nodes whose output reaches an 8-bit Conv/Linear through ops that keep int8
    (activations, views, pooling, adds, concatenations)."""
    feeds: set[Any] = set()
    for node in reversed(list(graph.nodes)):
        for user in node.users:
            if _is_layer_op(user) and _layer(user) not in floats:
                feeds.add(node)
            elif user in feeds and _op_name(user) in _KEEPS_INT8:
                feeds.add(node)
    return feeds


def _off_activation_path(graph: Any, feeds_int8: set[Any]) -> set[Any]:
    """The non-layer ops (add, mul, cat, pooling, ...) the quantizer must leave fp32.

    Two kinds. An op with a tensor input that no Conv/Linear computed: the input comes from the
    model's inputs, buffers and constants only (an attention mask turned into a ``finfo.min``
    bias, embedding sums, a pooling mask), and one int8 per-tensor grid over a sentinel and
    the attention scores rounds every score to the same value. And an op not in ``feeds_int8``
    (``_feeds_int8``): its int8 output would only be dequantized again (before a LayerNorm or a
    softmax), so quantizing it buys no kernel and loses precision (the residual stream of a
    transformer, whose outlier channels one per-tensor scale cannot hold). MiniLM's
    WordSim-353: 0.72 on ONNX Runtime's int8 artifact, -0.05 on XNNPACK's with every add
    quantized, 0.67 with the first rule only. A CNN's residual adds and branch concatenations,
    which feed the next int8 convolution, keep the quantizer's int8 annotation. Scalar
    constants do not count as inputs."""
    nodes = list(graph.nodes)
    from_layers: set[Any] = set()
    off: set[Any] = set()
    for node in nodes:
        inputs = [a for a in node.all_input_nodes if not _scalar(a)]
        if _is_layer_op(node) or (inputs and any(a in from_layers for a in inputs)):
            from_layers.add(node)
        if node.op == "call_function" and not _is_layer_op(node):
            if any(a not in from_layers and _floating(a) for a in inputs):
                off.add(node)
    for node in nodes:
        if node.op == "call_function" and not _is_layer_op(node) and node not in feeds_int8:
            off.add(node)
    return off


# ops through which an int8 tensor reaches the next int8 layer without a dequantize
_KEEPS_INT8 = frozenset(
    """relu relu_ hardtanh hardtanh_ clamp view reshape flatten permute transpose squeeze
    unsqueeze contiguous clone dropout max_pool1d max_pool2d max_pool2d_with_indices avg_pool1d
    avg_pool2d adaptive_avg_pool1d adaptive_avg_pool2d mean cat concat add add_ mul mul_ getitem
    _to_copy alias identity""".split()
)


def _op_name(node: Any) -> str:
    if node.op != "call_function":
        return ""
    return getattr(node.target, "__name__", str(node.target)).split(".")[0]


def _scalar(node: Any) -> bool:
    val = node.meta.get("val")
    if isinstance(val, torch.Tensor):
        return val.dim() == 0
    return node.op == "get_attr" and "." not in str(node.target)


def _floating(node: Any) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and val.dtype.is_floating_point


def _integer(node: Any) -> bool:
    val = node.meta.get("val")
    return isinstance(val, torch.Tensor) and not val.dtype.is_floating_point


def _is_layer_op(node: Any) -> bool:
    name = getattr(node.target, "__name__", "")
    return node.op == "call_function" and name.split(".")[0] in _LAYER_OPS


def quantize(
    model: nn.Module,
    inputs: tuple,
    *,
    codes: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    activations: Mapping[str, tuple[float, int]],
    batches: list[tuple],
) -> tuple[nn.Module, dict[str, dict[str, Any]]]:
    """The pt2e-quantized graph module with our codes and scales; per layer what was pinned."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    floats = {
        p
        for p, m in model.named_modules()
        if isinstance(m, nn.Conv1d | nn.Conv2d | nn.Linear) and p not in codes
    }
    quantizer = _quantizer(floats)
    try:
        graph, dynamic = _export(model, inputs, True).module(), True
    except Exception:  # a model whose batch cannot be symbolic: calibrate at the example's batch
        graph, dynamic = _export(model, inputs, False).module(), False
    prepared = prepare_pt2e(graph, quantizer)
    size = inputs[0].shape[0]
    with torch.no_grad():
        for batch in batches:
            batch = batch if isinstance(batch, tuple | list) else (batch,)
            step = batch[0].shape[0] if dynamic else size
            for i in range(0, batch[0].shape[0] - step + 1, step):
                prepared(*(t[i : i + step] for t in batch))
    pinned: dict[str, dict[str, Any]] = {}
    for node in prepared.graph.nodes:
        path = _layer(node)
        if path not in codes or not _is_layer_op(node):
            continue
        x, w = node.args[0], node.args[1]
        if not (x.op == "call_module" and w.op == "call_module"):
            continue  # the quantizer has no int8 pattern here: the layer stays fp32
        c, s = codes[path]
        getattr(prepared, w.target).calculate_qparams = _fixed(
            s.clone(), torch.zeros_like(s, dtype=torch.int64)
        )
        pinned[path] = {"weight_node": node.name}
        if path in quantizer.dynamic:
            pinned[path]["activations"] = "dynamic"
        elif path in activations:
            scale, zero_point = activations[path]
            getattr(prepared, x.target).calculate_qparams = _fixed(
                torch.tensor([scale], dtype=torch.float32), torch.tensor([zero_point - 128])
            )
            pinned[path]["input_qparams"] = [scale, zero_point - 128]
    converted = convert_pt2e(prepared)
    _check_codes(converted, codes, pinned)
    return converted, pinned


def _check_codes(
    converted: nn.Module,
    codes: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
    pinned: Mapping[str, Any],
) -> None:
    """Every pinned layer's int8 weight in the converted graph equals our codes and scales."""
    seen = set()
    for node in converted.graph.nodes:
        path = _layer(node)
        if path not in pinned or not _is_layer_op(node):
            continue
        dq = node.args[1]
        if "dequantize_per_channel" not in getattr(dq.target, "__name__", ""):
            continue
        stored = getattr(converted, dq.args[0].target)
        scale = getattr(converted, dq.args[1].target)
        ours, our_scale = codes[path]
        if not (torch.equal(stored, ours) and torch.equal(scale.float(), our_scale)):
            raise AutoCompressError(
                f"layer {path}: the XNNPACK quantizer re-quantized our 8-bit codes (internal)"
            )
        seen.add(path)
    missing = sorted(set(pinned) - seen)
    if missing:
        raise AutoCompressError(f"layers {missing}: int8 weights not found after conversion")


def lower(model: nn.Module, inputs: tuple, methods: dict[str, Any]) -> tuple[Any, Any]:
    """``(edge program manager, lowered ExportedProgram)``: ``model`` exported at the example
    inputs' static shapes and lowered with the ``XnnpackPartitioner``. ``methods``: the
    program's constant methods (placeholders; ``set_method_`` fills them in once known)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    exported = _export(model, inputs, False)
    edge = to_edge_transform_and_lower(
        exported, partitioner=[XnnpackPartitioner()], constant_methods=methods
    )
    return edge, edge.exported_program()


def set_method_(edge: Any, name: str, value: Any) -> None:
    """Replace constant method ``name`` of a lowered program before ``to_executorch`` (the
    manager keeps its own copy of the methods it was given)."""
    methods = edge._config_methods
    if name not in methods:
        raise AutoCompressError(f"constant method {name!r} not in the lowered program (internal)")
    methods[name] = value
