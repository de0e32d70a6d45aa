"""Attention the user did not write for us: ``nn.MultiheadAttention`` (a ViT on
``nn.TransformerEncoder``) and a Hugging Face GPT-2 decoder (``Conv1D``, packed q/k/v) are
unpacked into equivalent Linears when the task is built, then lose whole heads and MLP neurons
and are quantized on every target, as the records say."""

from __future__ import annotations

import pytest
import torch
from _support.models import gpt2_task, mha_task, vit_task

from autocompress import Policy, compress
from autocompress.unpack import SplitMultiheadAttention

POLICY = Policy.from_dict(
    {"prune": {"default": 0.5}, "quant": {"default": 8}, "finetune": {"epochs": 0}}
)
CASES = {  # family: (its head-pruned projection, an MLP layer)
    "vit": (vit_task, "encoder.layers.0.self_attn.q", "encoder.layers.0.linear1"),
    "gpt2": (gpt2_task, "lm.transformer.h.0.attn.c_attn", "lm.transformer.h.0.mlp.c_fc"),
    "mha": (mha_task, "attn.q", "fc1"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    build, heads, mlp = CASES[request.param]
    return build(epochs=0), heads, mlp


def test_the_task_holds_equivalent_unpacked_modules(case):
    task, heads, _ = case
    kinds = {type(m).__name__ for m in task.model.modules()}
    assert "MultiheadAttention" not in kinds and "Conv1D" not in kinds
    assert isinstance(task.model.get_submodule(heads), torch.nn.Linear)
    assert not task.packed_attention


@pytest.mark.parametrize("target", ["torch", "onnxruntime"])
def test_heads_and_neurons_pruned_and_quantized_on_each_target(case, target, tmp_path):
    task, heads, mlp = case
    result = compress(task, POLICY, out_dir=tmp_path, target=target)
    layers = result.metrics["layers"]
    for path in (heads, mlp):
        rec = layers[path]
        assert rec["prune"] == 0.5 and rec["channels_kept"] * 2 == rec["channels_original"], rec
        assert rec["bits"] == 8 and rec["mode"] in ("int-compute", "weight-only"), rec
    assert (
        result.metrics["compression"] > 1.0
    )  # floors for real sizes: benchmarks/attention_models.py
    assert 0.0 <= result.metrics["accuracy"] <= 1.0  # the deployed artifact ran the metric


def test_a_tied_output_projection_is_untied_and_recorded(tmp_path):
    task = gpt2_task(epochs=0)
    lm = task.model.lm
    assert lm.lm_head.weight is lm.transformer.wte.weight  # the teacher keeps its tie
    result = compress(task, POLICY, out_dir=tmp_path, target="onnxruntime")
    assert result.metrics["untied_weights"] == ["lm.lm_head ~ lm.transformer.wte"]
    assert result.metrics["layers"]["lm.transformer.wte"]["op"] != "not exported as its own node"


def test_split_attention_is_the_same_function_under_every_mask():
    torch.manual_seed(0)
    for batch_first in (True, False):
        mha = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=12, vdim=12).eval()
        split = SplitMultiheadAttention.from_packed(mha).eval()
        q = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
        kv = torch.randn(2, 7, 12) if batch_first else torch.randn(7, 2, 12)
        pad = torch.zeros(2, 7, dtype=torch.bool)
        pad[0, -2:] = True
        mask = torch.zeros(5, 7, dtype=torch.bool)
        mask[1, 3] = True
        for kw in ({}, {"key_padding_mask": pad, "attn_mask": mask}):
            a, wa = mha(q, kv, kv, average_attn_weights=False, **kw)
            b, wb = split(q, kv, kv, average_attn_weights=False, **kw)
            assert torch.allclose(a, b, atol=1e-6) and torch.allclose(wa, wb, atol=1e-6)
    layer = torch.nn.TransformerEncoderLayer(32, 4, 64, batch_first=True).eval()
    x = torch.randn(2, 6, 32)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(6)
    packed = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    from autocompress.unpack import split_packed_attention

    unpacked, kept = split_packed_attention(packed)
    assert not kept
    with torch.no_grad():
        assert torch.allclose(
            packed(x, mask=causal, is_causal=True),
            unpacked.eval()(x, mask=causal, is_causal=True),
            atol=1e-5,
        )
