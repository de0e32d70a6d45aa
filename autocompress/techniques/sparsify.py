"""The ``weight`` pruning strategy: individual weights zeroed (unstructured), per-layer sparsity.

Each Linear/Conv layer with sparsity s loses the round(s · n) weights of lowest importance
(a criterion of ``importance``): |w·g| (first-order Taylor, summed over a few training batches
with each batch's gradient), |w| (magnitude) or a plug-in's score.
The mask stays fixed while fine-tuning (``apply_masks_`` after every optimizer step).

Storage (``encode_sparse`` / ``decode_sparse``): a bitmask of the kept positions (1 bit per
weight, packed) plus the kept values at the layer's bit-width (int8 codes, packed 2/3/4-bit
codes, float16 or float32) and, when quantized, the per-channel scales. A layer is written in
this encoding only where it is smaller than the dense one. Dense kernels run the loaded
weights, so sparsity saves bytes, not time: records say ``"sparsity": "storage-only"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from itertools import islice

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.analysis.layers import list_layers, resolve_keys
from autocompress.errors import PolicyError
from autocompress.policy import Policy
from autocompress.task import Task, run_model
from autocompress.techniques.importance import Importance, get_importance
from autocompress.techniques.quantize import dequantize, pack_codes, quantize_weight, unpack_codes


def weight_scores(
    model: nn.Module,
    task: Task,
    layers: Mapping[str, nn.Module],
    criterion: Importance,
    batches: int,
) -> dict[str, torch.Tensor]:
    """Per layer, the criterion's score of each weight: once without gradients, or summed over
    ``batches`` batches, each with that batch's gradient (for a criterion that reads them)."""
    if not criterion.needs_grad:
        return {p: criterion(m.weight.detach(), None) for p, m in layers.items()}
    weights = [m.weight for m in layers.values()]
    flags = [w.requires_grad for w in weights]
    scores = [torch.zeros_like(w, requires_grad=False) for w in weights]
    was_training = model.training
    model.eval()  # gradients without touching BatchNorm running statistics
    try:
        for w in weights:
            w.requires_grad_(True)  # a frozen teacher still gets scores
        for inputs, targets in islice(iter(task.train_loader), batches):
            with torch.enable_grad():
                loss = task.task_loss(task.output_fn(run_model(model, inputs)), targets)
                grads = torch.autograd.grad(loss, weights, allow_unused=True)
            for score, w, g in zip(scores, weights, grads, strict=True):
                if g is not None:
                    score += criterion(w.detach(), g)
    finally:
        for w, flag in zip(weights, flags, strict=True):
            w.requires_grad_(flag)
        model.train(was_training)
    return dict(zip(layers, scores, strict=True))


def resolve_sparsity(model: nn.Module, policy: Policy) -> dict[str, float]:
    """Per-layer sparsity (> 0 only) from ``prune.sparsity``; errors name the policy key."""
    paths = [i.path for i in list_layers(model) if i.prunable]
    chosen, unmatched = resolve_keys(policy.sparsity_layers, paths)
    if unmatched:
        raise PolicyError(
            f"policy key prune.sparsity.layers[{unmatched[0]!r}] matches no Linear/Conv layer; "
            f"layers are: {', '.join(paths[:12])}{' ...' if len(paths) > 12 else ''}"
        )
    values = {
        p: policy.sparsity_layers[chosen[p]] if p in chosen else policy.sparsity_default
        for p in paths
    }
    return {p: s for p, s in values.items() if s > 0}


def sparsify_(
    model: nn.Module,
    task: Task,
    sparsity: Mapping[str, float],
    *,
    importance: str | Importance = "taylor",
    batches: int = 4,
) -> dict[str, torch.Tensor]:
    """Zero the least important weights of each layer in place; returns the keep masks."""
    if not sparsity:
        return {}
    layers = {p: model.get_submodule(p) for p in sparsity}
    scores = weight_scores(model, task, layers, get_importance(importance), batches)
    masks: dict[str, torch.Tensor] = {}
    for path, ratio in sparsity.items():
        score = scores[path].reshape(-1)
        k = min(score.numel() - 1, int(round(ratio * score.numel())))
        mask = torch.ones(score.numel(), dtype=torch.bool, device=score.device)
        if k > 0:
            mask[torch.topk(score, k, largest=False).indices] = False
        masks[path] = mask.reshape(scores[path].shape)
    apply_masks_(model, masks)
    return masks


def apply_masks_(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Re-zero the pruned weights (the latent weight under a fake-quant parametrization)."""
    with torch.no_grad():
        for path, mask in masks.items():
            mod = model.get_submodule(path)
            if parametrize.is_parametrized(mod, "weight"):
                weight = mod.parametrizations.weight.original
            else:
                weight = mod.weight
            weight.mul_(mask.to(weight.device))


# -- storage ---------------------------------------------------------------------------------


def payload_bytes(n: int, kept: int, bits: int) -> int:
    """Bytes of the encoded mask and kept values (scales and shape not included)."""
    return math.ceil(n / 8) + math.ceil(kept * bits / 8)


def encode_sparse(weight: torch.Tensor, bits: int) -> dict[str, torch.Tensor] | None:
    """``{suffix: tensor}`` for a weight in the bitmask encoding, or None if dense is smaller.

    Suffixes: ``.mask`` (uint8, packed bits), ``.shape`` (int64), ``.sparse<bits>`` (the kept
    values: int8 codes for 8 bits, packed codes below, float16/float32 above) and ``.scale``
    (per-channel, quantized layers only)."""
    out: dict[str, torch.Tensor] = {".shape": torch.tensor(list(weight.shape), dtype=torch.int64)}
    if bits <= 8:
        dense, out[".scale"] = quantize_weight(weight, bits)
    else:
        dense = weight.detach().to(torch.float16 if bits == 16 else torch.float32)
    mask = (dense != 0).reshape(-1)
    kept = int(mask.sum())
    dense_bytes = math.ceil(dense.numel() * bits / 8)
    if payload_bytes(dense.numel(), kept, bits) + (8 * weight.dim() if bits >= 8 else 0) >= (
        dense_bytes
    ):
        return None
    out[".mask"] = torch.from_numpy(np.packbits(mask.numpy(), bitorder="little"))
    values = dense.reshape(-1)[mask].contiguous()
    out[f".sparse{bits}"] = pack_codes(values, bits) if bits < 8 else values
    return out


def decode_sparse(
    tensors: Mapping[str, torch.Tensor], base: str, *, codes: bool = False
) -> torch.Tensor:
    """The dense float32 weight ``base`` (or its int8 codes with ``codes=True``)."""
    key = next(k for k in tensors if k.startswith(base + ".sparse"))
    bits = int(key[len(base + ".sparse") :])
    shape = tuple(int(s) for s in tensors[base + ".shape"])
    n = int(np.prod(shape))
    mask = np.unpackbits(tensors[base + ".mask"].numpy(), bitorder="little")[:n].astype(bool)
    values = tensors[key]
    if bits < 8:
        values = unpack_codes(values, bits, (int(mask.sum()),))
    dense = torch.zeros(n, dtype=values.dtype)
    dense[torch.from_numpy(mask)] = values
    dense = dense.reshape(shape)
    if bits > 8:
        return dense.to(torch.float32)
    return dense if codes else dequantize(dense, tensors[base + ".scale"])


def achieved_sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros in a weight, as the loaded model holds it."""
    return float((weight == 0).sum()) / max(1, weight.numel())


def summary(
    records: Mapping[str, Mapping], model: nn.Module, requested: Mapping[str, float]
) -> dict[str, float | str]:
    """Top-level record of the weight strategy: mode and achieved sparsity over the sparsified
    layers (weighted by weight count); empty when no layer was sparsified.

    ``storage-only``: the target stores the sparse encoding and runs dense kernels; ``dense``:
    a target without the encoding (e.g. ONNX Runtime) stores and runs the zeros densely."""
    if not requested:
        return {}
    sizes = {p: model.get_submodule(p).weight.numel() for p in requested}
    achieved = {
        p: records.get(p, {}).get("sparsity_achieved")
        or achieved_sparsity(model.get_submodule(p).weight.detach())
        for p in requested
    }
    encoded = any(records.get(p, {}).get("encoding") == "bitmask" for p in requested)
    zeros = sum(achieved[p] * sizes[p] for p in requested)
    return {
        "sparsity": "storage-only" if encoded else "dense",
        "sparsity_achieved": zeros / sum(sizes.values()),
    }


__all__ = [
    "achieved_sparsity",
    "apply_masks_",
    "decode_sparse",
    "encode_sparse",
    "payload_bytes",
    "resolve_sparsity",
    "sparsify_",
    "summary",
    "weight_scores",
]
