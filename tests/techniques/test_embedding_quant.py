"""Quantized embedding tables on both targets: per-row codes in the artifact, only the
looked-up rows dequantized, outputs equal to the fake-quantized torch model."""

from __future__ import annotations

import copy

import pytest
import torch
from _support.models import bert_task
from torch import nn

from autocompress import Policy
from autocompress.errors import PolicyError
from autocompress.pipeline._compress import (
    MeasureSettings,
    compress,
    load_artifact,
    measure_teacher,
    resolve_policy,
)
from autocompress.reporting.inspect import describe
from autocompress.study.space import load_space
from autocompress.targets import get_target
from autocompress.targets._ort_graph import optimized_graph
from autocompress.techniques.embedding import QuantEmbedding
from autocompress.techniques.quantize import dequantize, quantize_weight

FAST = MeasureSettings(warmup=1, repeats=20)
WORD = "bert.embeddings.word_embeddings"
TABLES = (WORD, "bert.embeddings.position_embeddings", "bert.embeddings.token_type_embeddings")


@pytest.fixture(scope="module")
def task():
    return bert_task(epochs=0)


@pytest.fixture(scope="module")
def baselines(task):
    return {t: measure_teacher(task, target=t, settings=FAST) for t in ("torch", "onnxruntime")}


def _fake_quantized(model: nn.Module, bits: int) -> nn.Module:
    """The float model whose embedding tables hold their dequantized per-row codes."""
    model = copy.deepcopy(model)
    for path in TABLES:
        weight = model.get_submodule(path).weight
        weight.data = dequantize(*quantize_weight(weight.detach(), bits))
    return model


def _ids(task) -> torch.Tensor:
    ids, _ = next(iter(task.val_loader))
    return ids


def _compress(task, baselines, target, bits, tmp_path):
    policy = Policy.from_dict({"quant": {"layers": {"bert.embeddings.*": bits}}})
    return compress(
        task, policy, target=target, out_dir=tmp_path, settings=FAST, teacher=baselines[target]
    )


@pytest.mark.parametrize("target", ["torch", "onnxruntime"])
@pytest.mark.parametrize("bits", [8, 4])
def test_tables_store_codes_and_match_the_fake_quantized_model(
    task, baselines, target, bits, tmp_path
):
    result = _compress(task, baselines, target, bits, tmp_path)
    vocab, dim = task.model.get_submodule(WORD).weight.shape
    rec = result.metrics["layers"][WORD]
    assert rec["bits"] == bits and rec["mode"] == "weight-only"
    # codes (one byte each at 8 bits, two per byte at 4) plus one float32 scale per row (one
    # block per row here; the torch file adds the packed tensor's 2-value shape)
    assert rec["bytes"] == pytest.approx(vocab * dim * bits / 8 + 4 * vocab, abs=16)
    if bits == 8:
        assert vocab * dim * 4 / rec["bytes"] > 3.5
    saved = baselines[target]["size_bytes"] - result.metrics["size_bytes"]
    assert saved >= 0.6 * sum(
        task.model.get_submodule(p).weight.numel() * 4 * (1 - bits / 32) for p in TABLES
    )

    reloaded = load_artifact(result.artifact, task.model)
    ids = _ids(task)
    with torch.no_grad():
        want = _fake_quantized(task.model, bits)(ids)
        float_out = task.model(ids)
    for model in (result.model, reloaded):
        got = torch.as_tensor(model(ids))
        assert torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
    assert not torch.allclose(want, float_out, atol=1e-6)  # the codes really are coarser
    if target == "torch":
        table = reloaded.get_submodule(WORD)
        assert isinstance(table, QuantEmbedding) and table.codes.dtype == torch.int8
        assert table.padding_idx == task.model.get_submodule(WORD).padding_idx


def test_onnx_gathers_the_int8_rows_without_dequantizing_the_table(task, baselines, tmp_path):
    result = _compress(task, baselines, "onnxruntime", 8, tmp_path)
    graph = optimized_graph(result.artifact.read_bytes()).graph
    inits = {i.name: i for i in graph.initializer}
    codes = f"{WORD}.weight_quantized"
    users = [n for n in graph.node if codes in n.input]
    assert [n.op_type for n in users] == ["Gather"]
    assert inits[codes].data_type == 3  # INT8
    assert f"{WORD}.weight" not in inits  # the float table is gone
    assert not any(n.op_type == "DequantizeLinear" and codes in n.input for n in graph.node)


def test_uniform_int8_policy_quantizes_tables_and_linears_on_onnxruntime(task, baselines, tmp_path):
    policy = Policy.from_dict({"quant": {"default": 8}})
    result = compress(
        task, policy, target="onnxruntime", out_dir=tmp_path, settings=FAST,
        teacher=baselines["onnxruntime"],
    )  # fmt: skip
    layers = result.metrics["layers"]
    assert all(layers[p]["mode"] == "weight-only" and layers[p]["bits"] == 8 for p in TABLES)
    assert layers["bert.encoder.layer.0.intermediate.dense"]["mode"] == "int-compute"
    assert result.metrics["size_bytes"] < baselines["onnxruntime"]["size_bytes"]
    with torch.no_grad():
        ids = _ids(task)
        assert torch.allclose(result.model(ids), task.model(ids), atol=0.1)


def test_embedding_tables_take_bits_but_no_prune_ratio(task, baselines):
    with pytest.raises(PolicyError, match="embedding table"):
        compress(
            task, Policy.from_dict({"prune": {"layers": {WORD: 0.5}}}),
            settings=FAST, teacher=baselines["torch"],
        )  # fmt: skip
    policy = Policy.from_dict({"prune": {"default": 0.5}, "quant": {"layers": {WORD: 8}}})
    result = compress(task, policy, settings=FAST, teacher=baselines["torch"])
    assert result.model.get_submodule(WORD).num_embeddings == 100
    assert "prune" not in result.metrics["layers"][WORD]
    assert result.metrics["layers"]["bert.encoder.layer.0.intermediate.dense"]["channels_kept"]


def test_quant_embedding_gathers_rows_like_the_dequantized_table():
    table = nn.Embedding(50, 24, padding_idx=0)
    q = QuantEmbedding.from_embedding(table, bits=3)
    ids = torch.randint(0, 50, (2, 3, 5))
    codes, scale = quantize_weight(table.weight, 3)
    want = nn.functional.embedding(ids, dequantize(codes, scale))
    assert q(ids).shape == (2, 3, 5, 24) and torch.equal(q(ids), want)
    assert int(q.codes.abs().max()) <= 3 and q.padding_idx == 0
    with pytest.raises(ValueError, match="int8 codes"):
        QuantEmbedding(codes.float(), scale)


def test_hf_bert_space_searches_int8_or_float_for_the_word_and_position_tables(task):
    target = get_target("onnxruntime")
    space = load_space("hf-bert").resolve(
        task.model, task.example_inputs, supported_bits=target.bits
    )
    layers = {layer.path: layer for layer in space.layers}
    assert space.param("bits.bert.embeddings").choices == (8, 32)
    assert {layers[p].bits_param for p in TABLES[:2]} == {"bits.bert.embeddings"}
    assert layers[TABLES[2]].bits_param is None and layers[TABLES[2]].bits == 32
    for kind, bits in (("int8", 8), ("identity", 32)):
        policy = space.policy_from_params(space.params_for_policy(kind))
        resolved = resolve_policy(task, policy, target)
        assert resolved.bits[WORD] == bits and WORD not in resolved.prune
    text = describe(task, "hf-bert", width=200)
    assert "embedding table: bits only" in text and "bits.bert.embeddings {8, 32}" in text


@pytest.mark.parametrize(
    ("dim", "bits", "op", "storage"),
    [
        (32, 4, "GatherBlockQuantized", None),
        (24, 4, "Gather", "int8 codes (no 4-bit block divides the row)"),
        (24, 16, "Gather", None),
    ],
)
def test_onnx_table_rewrite_runs_in_onnxruntime(dim, bits, op, storage):
    from autocompress.targets._embedding import map_tables, quantize_tables_, table_records_
    from autocompress.targets._ort_graph import OrtModule, _read_modes, export_float

    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(20, dim)).eval()
    ids = torch.randint(0, 20, (2, 5))
    graph = export_float(model, (ids,))
    tables = map_tables(graph, {"0": model[0].weight})
    assert set(tables) == {"0"}
    quantize_tables_(graph, tables, {"0": bits})
    blob = graph.SerializeToString()
    weight = model[0].weight.detach()
    table = weight.half().float() if bits == 16 else dequantize(*quantize_weight(weight, bits))
    assert torch.allclose(OrtModule(blob)(ids), nn.functional.embedding(ids, table), atol=1e-6)
    records = {"0": {"bits": bits}}
    _read_modes(optimized_graph(blob), records)
    table_records_(blob, tables, records)
    assert records["0"]["mode"] == "weight-only" and records["0"]["op"] == op
    assert records["0"].get("storage") == storage
    assert records["0"]["bytes"] < weight.numel() * 4 * (0.6 if bits == 16 else 0.35)
