"""Attention modules whose heads can be removed (read-only: the removal is ``techniques.heads``).

Recognised forms (one prune parameter per module; q/k/v are never searched separately):

- a module with an int ``num_heads`` and child Linears ``q/k/v`` (or ``q_proj/k_proj/v_proj``,
  ``query/key/value``) plus an output Linear child (``proj``/``out_proj``/``o_proj``/``out``/
  ``dense``);
- Hugging Face BERT-style self-attention: ``query``/``key``/``value`` Linears with
  ``num_attention_heads``, ``attention_head_size`` and ``all_head_size``; the output projection
  is the sibling ``output.dense`` of the parent module (``BertAttention.output.dense``).

- packed q/k/v (Hugging Face GPT-2 style, its ``Conv1D`` layers turned into Linears when the
  task is built): one Linear ``c_attn`` whose ``3·split_size`` rows are q, k and v, an int
  ``num_heads`` and ``split_size``, and the output Linear ``c_proj``; heads are removed from the
  three row blocks alike and ``split_size`` follows.

``nn.MultiheadAttention`` packs q/k/v into one ``in_proj_weight`` whose width must equal the
embedding width, so its heads cannot be removed without shrinking the residual stream: it is
listed by :func:`packed_attention` and its heads are recorded as not pruned.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

_QKV_NAMES = (("q", "k", "v"), ("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
_OUT_NAMES = ("proj", "out_proj", "o_proj", "out", "dense")
_HEAD_ATTRS = ("num_heads", "num_attention_heads")


@dataclass(frozen=True)
class AttentionLayer:
    """An attention module whose heads can be removed: q/k/v rows and out-projection columns."""

    module: nn.Module
    qkv: tuple[nn.Linear, ...]  # q, k, v; or the one packed projection
    qkv_paths: tuple[str, ...]
    out: nn.Linear
    heads_attr: str

    @property
    def packed(self) -> bool:
        return len(self.qkv) == 1

    @property
    def heads(self) -> int:
        return int(getattr(self.module, self.heads_attr))


def _linear(mod: nn.Module | None, name: str) -> nn.Linear | None:
    child = getattr(mod, name, None) if mod is not None else None
    return child if isinstance(child, nn.Linear) else None


def _out_projection(model: nn.Module, path: str, mod: nn.Module) -> nn.Linear | None:
    for name in _OUT_NAMES:
        if (lin := _linear(mod, name)) is not None:
            return lin
    parent_path = path.rpartition(".")[0]
    parent = model.get_submodule(parent_path) if path and "." in path else model
    if parent is mod:
        return None
    return _linear(getattr(parent, "output", None), "dense")


def _packed_qkv(path: str, mod: nn.Module, attr: str) -> AttentionLayer | None:
    qkv, out, split = _linear(mod, "c_attn"), _linear(mod, "c_proj"), getattr(mod, "split_size", 0)
    if qkv is None or out is None or not isinstance(split, int) or qkv.out_features != 3 * split:
        return None  # cross-attention (k/v only in c_attn) and other shapes are left alone
    prefix = f"{path}." if path else ""
    return AttentionLayer(mod, (qkv,), (prefix + "c_attn",), out, attr)


def attention_modules(model: nn.Module) -> dict[str, AttentionLayer]:
    """Attention modules recognised for head pruning, by path."""
    found: dict[str, AttentionLayer] = {}
    for path, mod in model.named_modules():
        attr = next((a for a in _HEAD_ATTRS if isinstance(getattr(mod, a, None), int)), None)
        if attr is None or isinstance(mod, nn.MultiheadAttention):
            continue
        if (packed := _packed_qkv(path, mod, attr)) is not None:
            found[path] = packed
            continue
        for names in _QKV_NAMES:
            qkv = tuple(_linear(mod, n) for n in names)
            if not all(q is not None for q in qkv):
                continue
            out = _out_projection(model, path, mod)
            if out is not None and out not in qkv:
                prefix = f"{path}." if path else ""
                paths = tuple(prefix + n for n in names)
                found[path] = AttentionLayer(mod, qkv, paths, out, attr)  # type: ignore[arg-type]
            break
    return found


def packed_attention(model: nn.Module) -> list[str]:
    """Paths of ``nn.MultiheadAttention`` modules (packed q/k/v: heads not pruned)."""
    return [p for p, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
