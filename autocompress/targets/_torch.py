"""The ``torch`` target: a safe ``model.pt`` (tensors + JSON, loaded with weights_only=True).

What each bit-width becomes on this target:

- 32: float32 weights, float compute.
- 16: float16 storage, upcast on load (``weight-only``).
- 8 on Linear: int8 per-channel weights run by PyTorch's dynamic-quantized Linear
  (fbgemm integer kernels, activations quantized on the fly) — ``int-compute``.
- 8 on Conv, and 2/3/4 everywhere: integer codes stored packed (8 bits per byte for 8,
  a bit stream for fewer) with per-channel scales, dequantized to float32 on load
  (``weight-only``).
- Embedding tables at 2-8 bits: per-row codes (int8, or packed for fewer bits) and per-row
  float32 scales; loaded as a ``QuantEmbedding`` that gathers the looked-up rows' codes and
  dequantizes those rows only (``weight-only``: a lookup is not integer compute).
- Layers the policy sparsifies (``meta["sparse"]``, the ``weight`` strategy) are stored as a
  bitmask plus the kept values at their bit-width where that is smaller (see ``sparsify``);
  they load as dense tensors (``"sparsity": "storage-only"``).

The file holds no pickled Python objects: the architecture comes from the task's model, and
the artifact records which module attributes pruning changed (channel counts, heads) so the
loader can rebuild the pruned structure before filling in the tensors.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.targets.modes import LayerMode
from autocompress.techniques.drop import drop_blocks_
from autocompress.techniques.embedding import QuantEmbedding, quantizes_rows
from autocompress.techniques.fold import fold_batchnorm, foldable_pairs, unfolded_skeleton
from autocompress.techniques.quantize import dequantize, pack_codes, quantize_weight, unpack_codes
from autocompress.techniques.sparsify import achieved_sparsity, decode_sparse, encode_sparse

FORMAT = "autocompress-torch/1"
_SCALAR_TYPES = (int, float, bool, str)


# PyTorch modules that read their Linears' ``.weight`` tensors directly (fused fast paths):
# their Linears cannot become dynamic-int8 modules and stay weight-only.
_READS_WEIGHTS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


def _reads_weights(parent: nn.Module | None) -> bool:
    """A transformer layer whose attention was unpacked (``autocompress.unpack``) never takes
    its fused fast path (it needs the packed ``in_proj_bias``): its Linears are called."""
    if isinstance(parent, nn.TransformerEncoderLayer | nn.TransformerDecoderLayer):
        return isinstance(getattr(parent, "self_attn", None), nn.MultiheadAttention)
    return isinstance(parent, _READS_WEIGHTS)


def layer_mode(module: nn.Module, bits: int, parent: nn.Module | None = None) -> str:
    if bits == 32:
        return LayerMode.FLOAT
    if bits == 8 and type(module) is nn.Linear and not _reads_weights(parent):
        return LayerMode.INT_COMPUTE
    return LayerMode.WEIGHT_ONLY


def _plain(value: Any) -> bool:
    if isinstance(value, _SCALAR_TYPES) or value is None:
        return True
    return isinstance(value, tuple | list) and all(isinstance(v, _SCALAR_TYPES) for v in value)


def structure_diff(original: nn.Module, pruned: nn.Module) -> dict[str, dict[str, Any]]:
    """Plain module attributes (channel counts, heads...) that differ after pruning."""
    before = dict(original.named_modules())
    diff: dict[str, dict[str, Any]] = {}
    for path, mod in pruned.named_modules():
        ref = before.get(path)
        if ref is None:
            raise AutoCompressError(f"module {path!r} is not in the original model")
        changed = {
            k: v
            for k, v in vars(mod).items()
            if not k.startswith("_") and _plain(v) and vars(ref).get(k) != v
        }
        if changed:
            diff[path] = changed
    return diff


def save(
    model: nn.Module,
    path: Path,
    *,
    bits: Mapping[str, int],
    structure: Mapping[str, Mapping[str, Any]],
    meta: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Write the deployable file; returns per-layer ``{"bits", "mode"}`` records.

    BatchNorms that directly follow a conv are folded into it first (see ``fold``)."""
    folded = foldable_pairs(model)
    model = fold_batchnorm(model, folded)
    modules = dict(model.named_modules())
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    quantized = {p: b for p, b in bits.items() if b < 32}
    sparse: Mapping[str, float] = meta.get("sparse", {})
    for name, tensor in model.state_dict().items():
        owner, _, leaf = name.rpartition(".")
        encoded = (
            encode_sparse(tensor, bits[owner]) if owner in sparse and leaf == "weight" else None
        )
        if encoded is not None:
            tensors.update({name + suffix: t for suffix, t in encoded.items()})
            continue
        b = quantized.get(owner)
        if b is None or leaf != "weight":
            tensors[name] = tensor.detach().clone().contiguous()
            continue
        if b == 16:
            tensors[name + ".fp16"] = tensor.detach().to(torch.float16).contiguous()
            continue
        codes, scale = quantize_weight(tensor, b)
        tensors[name + ".scale"] = scale
        if b == 8:
            tensors[name + ".int8"] = codes.contiguous()
        else:
            tensors[name + f".packed{b}"] = pack_codes(codes, b)
            tensors[name + ".shape"] = torch.tensor(list(codes.shape), dtype=torch.int64)
    for p, b in bits.items():
        parent = modules.get(p.rpartition(".")[0]) if "." in p else model
        layers[p] = {"bits": b, "mode": layer_mode(modules[p], b, parent)}
        if isinstance(modules[p], nn.Embedding):
            layers[p].update(_table_record(modules[p], b, tensors, p + ".weight"))
    layers.update(_sparse_records(tensors, layers, sparse))
    header = dict(meta, format=FORMAT, structure=structure, layers=layers, folded=folded)
    torch.save({"format": FORMAT, "meta": json.dumps(header), "tensors": tensors}, path)
    return layers


def _table_record(
    table: nn.Module, bits: int, tensors: Mapping[str, torch.Tensor], weight: str
) -> dict[str, Any]:
    """An embedding table's lookup and the bytes its weight takes in the file."""
    stored = [t for k, t in tensors.items() if k == weight or k.startswith(weight + ".")]
    lookup = "gather codes, dequantize the rows" if quantizes_rows(table, bits) else "gather"
    return {"op": lookup, "bytes": sum(t.numel() * t.element_size() for t in stored)}


def _sparse_records(
    tensors: Mapping[str, torch.Tensor],
    layers: Mapping[str, Mapping[str, Any]],
    sparse: Mapping[str, float],
) -> dict[str, dict[str, Any]]:
    state = _float_state(tensors) if sparse else {}
    return {
        p: {
            **layers[p],
            "sparsity": "storage-only" if p + ".weight.mask" in tensors else "dense",
            "sparsity_requested": sparse[p],
            "sparsity_achieved": achieved_sparsity(state[p + ".weight"]),
            "encoding": "bitmask" if p + ".weight.mask" in tensors else "dense",
        }
        for p in sparse
        if p in layers
    }


def read(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AutoCompressError(f"cannot read artifact {path}: {exc}") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise AutoCompressError(f"{path} is not an autocompress torch artifact ({FORMAT})")
    return json.loads(blob["meta"]), blob["tensors"]


def _float_state(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float tensors for every state-dict entry; quantized weights dequantized."""
    state: dict[str, torch.Tensor] = {}
    side: set[str] = set()
    for key, t in tensors.items():
        base, _, kind = key.rpartition(".")
        if kind == "fp16":
            state[base] = t.to(torch.float32)
        elif kind == "int8":
            state[base] = dequantize(t, tensors[base + ".scale"])
        elif kind.startswith("packed"):
            shape = tuple(int(s) for s in tensors[base + ".shape"])
            codes = unpack_codes(t, int(kind[len("packed") :]), shape)
            state[base] = dequantize(codes, tensors[base + ".scale"])
        elif kind.startswith("sparse"):
            state[base] = decode_sparse(tensors, base)
        else:
            continue
        side.update({base + ".scale", base + ".shape", base + ".mask"})
    for key, t in tensors.items():
        base, _, kind = key.rpartition(".")
        if key not in side and base not in state:
            state[key] = t
    return state


def _codes(tensors: Mapping[str, torch.Tensor], weight: str) -> torch.Tensor:
    """The int8 codes of a quantized weight (stored as int8 or packed low-bit)."""
    if weight + ".int8" in tensors:
        return tensors[weight + ".int8"]
    kind = next(k for k in tensors if k.startswith(weight + ".packed"))
    shape = tuple(int(s) for s in tensors[weight + ".shape"])
    return unpack_codes(tensors[kind], int(kind[len(weight + ".packed") :]), shape)


def _int8_linear(linear: nn.Linear, codes: torch.Tensor, scale: torch.Tensor) -> nn.Module:
    with warnings.catch_warnings():
        # PyTorch 2.13 flags quantized tensor creation as deprecated; the kernels still run.
        warnings.filterwarnings("ignore", message=".*quantized tensor creation.*")
        return _make_int8_linear(linear, codes, scale)


def _make_int8_linear(linear: nn.Linear, codes: torch.Tensor, scale: torch.Tensor) -> nn.Module:
    qlinear = torch.ao.nn.quantized.dynamic.Linear(
        linear.in_features, linear.out_features, bias_=linear.bias is not None, dtype=torch.qint8
    )
    qweight = torch._make_per_channel_quantized_tensor(
        codes, scale.to(torch.float64), torch.zeros_like(scale, dtype=torch.int64), 0
    )
    qlinear.set_weight_bias(qweight, None if linear.bias is None else linear.bias.detach())
    return qlinear


def load(path: Path, skeleton: nn.Module) -> nn.Module:
    """Rebuild the deployable model: pruned structure from ``skeleton``'s architecture,
    tensors from the file, int8 Linears on integer kernels."""
    meta, tensors = read(path)
    if meta.get("unpacked"):  # written from unpacked modules: the user's packed ones follow
        from autocompress.unpack import unpack_model

        skeleton = unpack_model(skeleton)[0]
    model = drop_blocks_(copy.deepcopy(skeleton).eval(), meta.get("dropped", {}))
    modules = dict(model.named_modules())
    for mpath, attrs in meta["structure"].items():
        if mpath not in modules:
            raise AutoCompressError(f"artifact {path}: module {mpath!r} is not in the model")
        for k, v in attrs.items():
            setattr(modules[mpath], k, tuple(v) if isinstance(v, list) else v)
    unfolded_skeleton(model, meta.get("folded", {}))
    modules = dict(model.named_modules())
    state = _float_state(tensors)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise AutoCompressError(
            f"artifact {path} does not fit the model: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    for name, value in state.items():
        owner, _, leaf = name.rpartition(".")
        mod = modules[owner] if owner else model
        if leaf in mod._parameters:
            mod._parameters[leaf] = nn.Parameter(value, requires_grad=False)
        else:
            mod._buffers[leaf] = value
    for lpath, rec in meta["layers"].items():
        parent_path, _, child = lpath.rpartition(".")
        parent = modules[parent_path] if parent_path else model
        w = lpath + ".weight"
        if quantizes_rows(modules[lpath], rec["bits"]):
            pad = modules[lpath].padding_idx
            setattr(parent, child, QuantEmbedding(_codes(tensors, w), tensors[w + ".scale"], pad))
            continue
        if rec["mode"] != LayerMode.INT_COMPUTE:
            continue
        codes = (
            tensors[w + ".int8"]
            if w + ".int8" in tensors
            else decode_sparse(tensors, w, codes=True)
        )
        setattr(parent, child, _int8_linear(modules[lpath], codes, tensors[w + ".scale"]))
    return model.eval()
