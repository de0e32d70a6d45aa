"""The ``openvino`` target on real OpenVINO compiled models (CPU plugin)."""

from __future__ import annotations

import functools

import openvino as ov
import pytest
import torch
from _support import lowered, models
from _support.models import mlp_task
from conftest import ENV

from autocompress.targets import _ov_runtime as rt
from autocompress.techniques.fold import fold_batchnorm, foldable_pairs
from autocompress.techniques.quantize import quantize_weight

_apply = functools.partial(lowered.apply_policy, target="openvino")


@pytest.fixture(scope="module")
def int8(cnn, tmp_path_factory):
    return _apply(cnn, {"quant": {"default": 8}}, tmp_path_factory.mktemp("ov-int8"))


def _constant(model: ov.Model, name: str):
    return next(op for op in model.get_ops() if op.get_friendly_name() == name).get_data()


def test_int8_cnn_runs_u8_kernels_and_says_so(cnn, int8):
    layers = int8.metrics["layers"]
    compute = [p for p, m in cnn.model.named_modules() if isinstance(m, lowered.COMPUTE)]
    assert {layers[p]["mode"] for p in compute} == {"int-compute"}
    assert {layers[p]["runtime_precision"] for p in compute} <= set(rt.INTEGER)
    assert {layers[p]["op"] for p in compute} == {"Convolution", "FullyConnected"}
    assert int8.metrics["inference_precision"] == "f32"
    assert int8.metrics["graph"]["runtime_ops"]["Convolution u8"] == len(compute) - 1
    assert int8.artifact.name == "model.xml" and (int8.artifact.parent / "model.bin").exists()
    assert int8.metrics["size_bytes"] == sum(
        (int8.artifact.parent / n).stat().st_size for n in ("model.xml", "model.bin")
    )


def test_the_ir_holds_our_int8_codes_and_scales(cnn, int8):
    ir = ov.Core().read_model(str(int8.artifact))
    folded = fold_batchnorm(cnn.model, foldable_pairs(cnn.model))
    for path in ("fc", "stem", "layer2.conv2"):
        codes, scale = quantize_weight(folded.get_submodule(path).weight, 8)
        assert (_constant(ir, f"{path}.weight_quantized") == codes.numpy()).all(), path
        stored = torch.from_numpy(_weight_scale(ir, f"{path}.weight_quantized").copy())
        assert torch.allclose(stored.flatten(), scale), path


def test_the_int8_ir_is_simplified_and_keeps_int8_weights(int8):
    """The offline transformations fold the QDQ graph's shape subgraphs (the XML of the digits
    CNN: 229 -> 108 KB) and leave the weights int8."""
    ir = ov.Core().read_model(str(int8.artifact))
    types = [op.get_type_name() for op in ir.get_ops()]
    assert "ShapeOf" not in types and "Broadcast" not in types
    weights = [
        op
        for op in ir.get_ops()
        if op.get_type_name() == "Constant" and op.get_friendly_name().endswith("weight_quantized")
    ]
    assert weights and {op.get_element_type() for op in weights} == {ov.Type.i8}


def _weight_scale(model: ov.Model, codes: str):
    """The scale that multiplies the int8 codes ``codes`` (i8 Const -> Convert -> Multiply by a
    Const: the offline transformations fold the scale's reshape, so it is found by position)."""
    const = next(op for op in model.get_ops() if op.get_friendly_name() == codes)
    node = const
    while node.get_type_name() != "Multiply":
        node = next(iter(node.output(0).get_target_inputs())).get_node()
    scale = next(
        i.get_source_output().get_node()
        for i in node.inputs()
        if i.get_source_output().get_node().get_type_name() == "Constant"
    )
    return scale.get_data()


_FRESH = """
import json, sys
from pathlib import Path
import torch
from autocompress.pipeline._compress import load_artifact
from autocompress.targets import _ov_runtime as rt
model = load_artifact(Path(sys.argv[1]), torch.nn.Identity())  # the IR needs no skeleton
x = torch.load(sys.argv[2])
ops = rt.runtime_ops(model.compiled)
print(json.dumps({"out": model(x).tolist(), "ops": ops, "precision": rt.inference_precision(
    model.compiled)}))
"""


def test_reloaded_in_a_fresh_process_records_match_the_runtime_graph(cnn, int8, tmp_path):
    x = torch.cat([b[0] for b in cnn.val_loader])[:8]
    fresh = lowered.run_fresh(tmp_path, _FRESH, int8.artifact.parent, x, ENV)
    assert torch.allclose(torch.tensor(fresh["out"]), int8.model(x), atol=1e-5)
    assert fresh["precision"] == "f32"
    by_name = {op["name"]: op for op in fresh["ops"]}
    for path, rec in int8.metrics["layers"].items():
        op = by_name[rec["runtime_node"]]
        assert (op["type"], op["precision"]) == (rec["op"], rec["runtime_precision"]), path
    assert int8.metrics["accuracy"] == pytest.approx(cnn.evaluate(int8.model))


def test_fp32_teacher_runs_fp32_not_bf16(cnn, tmp_path):
    result = _apply(cnn, {"quant": {"default": 32}}, tmp_path)
    assert result.metrics["inference_precision"] == "f32"
    assert {r["mode"] for r in result.metrics["layers"].values()} == {"float"}
    assert {r["runtime_precision"] for r in result.metrics["layers"].values()} == {"f32"}
    x = cnn.example_inputs[0]
    assert torch.allclose(result.model(x), cnn.model(x), atol=1e-4)


def test_4bit_linear_is_u4_weight_compression_with_its_group_size(tmp_path):
    task = mlp_task(epochs=1)
    result = _apply(task, {"quant": {"default": 4}}, tmp_path)
    for rec in result.metrics["layers"].values():
        assert rec["mode"] == "weight-only" and rec["op"] == "FullyConnected"
        assert rec["runtime_precision"] == "u4" and rec["group_size"] == 32


def test_16bit_stores_f16_weights_and_computes_f32(cnn, tmp_path):
    result = _apply(cnn, {"quant": {"default": 16}}, tmp_path / "16")
    full = _apply(cnn, {"quant": {"default": 32}}, tmp_path / "32")
    assert {r["mode"] for r in result.metrics["layers"].values()} == {"weight-only"}
    assert {r["runtime_precision"] for r in result.metrics["layers"].values()} == {"f32"}
    bins = [(r.artifact.parent / "model.bin").stat().st_size for r in (result, full)]
    assert bins[0] < 0.6 * bins[1]


FAMILIES = [
    "resnet_task",
    "resnext_task",
    "mobilenet_task",
    "densenet_task",
    "unet_task",
    "two_heads_task",
    "audio_task",
    "mha_task",
    "bert_task",
    "grouped_concat_task",
    "encoder_task",
    "vit_task",
    "mha_task:add_bias_kv",  # kept packed (nn.MultiheadAttention): float, with the reason
]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_test_model_runs_int8_on_openvino(family, tmp_path):
    name, _, flag = family.partition(":")
    # nn.TransformerEncoder clones its layer: untrained, the layers' weights are identical and
    # the ONNX nodes (matched to layers by weight values) cannot be told apart; one epoch can
    epochs = 1 if name == "vit_task" else 0
    task = getattr(models, name)(epochs=epochs, **({flag: True} if flag else {}))
    result = _apply(task, {"quant": {"default": 8}}, tmp_path)
    modules = dict(task.model.named_modules())
    for path, rec in result.metrics["layers"].items():
        if rec["bits"] == 8 and isinstance(modules.get(path), lowered.COMPUTE):
            assert rec["mode"] == "int-compute", (path, rec)
        elif rec["mode"] != "int-compute":
            assert rec.get("op"), (path, rec)  # what ran it, or why it is not an int8 kernel
    assert result.metrics["inference_precision"] == "f32"
    assert result.metrics["accuracy"] == pytest.approx(task.evaluate(result.model))


def test_cli_apply_on_a_tiny_cnn(tmp_path):
    metrics = lowered.cli_applied(tmp_path, "openvino", "model.xml", ENV)
    assert metrics["inference_precision"] == "f32"
    assert (tmp_path / "o" / "model.bin").exists()


def test_tiny_local_search_on_openvino(tmp_path):
    done = lowered.tiny_search(tmp_path, "openvino", "default", "model.xml")
    assert all(t["metrics"]["inference_precision"] == "f32" for t in done)
    names = lowered.export_complete_trial(tmp_path, "openvino", done)
    assert names == ["metrics.json", "model.bin", "model.xml", "policy.json"]
