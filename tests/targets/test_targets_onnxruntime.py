"""The ``onnxruntime`` target on real ONNX Runtime sessions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _support.models import encoder_task, mlp_task
from _support.study_inputs import QUICK_SEARCH
from onnx import numpy_helper
from torch import nn

from autocompress import Policy
from autocompress.api import run_search
from autocompress.errors import AutoCompressError
from autocompress.pipeline._compress import compress, load_artifact
from autocompress.study.config import SearchConfig
from autocompress.targets._islands import INT_OPS
from autocompress.targets._ort_graph import export_float, optimized_graph
from autocompress.techniques.quantize import ActivationQuant, dequantize, quantize_weight

TESTS = Path(__file__).resolve().parents[1]
FAST = {"repeats": 20}


@pytest.fixture(scope="module")
def mlp():
    return mlp_task()


def _settings():
    from autocompress.pipeline._compress import MeasureSettings

    return MeasureSettings(repeats=20, warmup=2)


def _apply(task, policy: dict, tmp_path: Path, **kwargs):
    return compress(
        task,
        Policy.from_dict(policy),
        target="onnxruntime",
        out_dir=tmp_path,
        settings=_settings(),
        **kwargs,
    )


def _users(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def test_int8_cnn_runs_qlinearconv_and_no_dequantize_feeds_its_convs(cnn, tmp_path):
    result = _apply(cnn, {"quant": {"default": 8}}, tmp_path)
    layers = result.metrics["layers"]
    convs = [p for p, m in cnn.model.named_modules() if isinstance(m, nn.Conv2d)]
    assert {layers[p]["mode"] for p in convs} == {"int-compute"}
    graph = optimized_graph(result.artifact.read_bytes()).graph
    ops = [n.op_type for n in graph.node]
    assert ops.count("QLinearConv") == len(convs)
    assert "QLinearAdd" in ops and "QLinearConcat" in ops and "QLinearGlobalAveragePool" in ops
    users = _users(graph)
    for path in convs:
        consumers = users[f"{path}.weight_quantized"]
        assert [n.op_type for n in consumers] == ["QLinearConv"], path
    dq_out = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert not [
        n for n in graph.node if n.op_type in ("Conv", "FusedConv") and dq_out & set(n.input)
    ]


def test_int8_linear_runs_an_integer_op(mlp, tmp_path):
    result = _apply(mlp, {"quant": {"default": 8}}, tmp_path)
    graph = optimized_graph(result.artifact.read_bytes()).graph
    users = _users(graph)
    for path, rec in result.metrics["layers"].items():
        assert rec["mode"] == "int-compute"
        (node,) = users[f"{path}.weight_quantized"]
        assert node.op_type in INT_OPS and node.op_type == rec["op"]


def test_4bit_linear_is_matmulnbits_holding_our_quantizer_output(mlp, tmp_path):
    result = _apply(mlp, {"quant": {"default": 4}}, tmp_path)
    model = onnx.load(str(result.artifact))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nbits = {n.input[1]: n for n in model.graph.node if n.op_type == "MatMulNBits"}
    for path, module in mlp.model.named_modules():
        if not isinstance(module, nn.Linear):
            continue
        node = nbits[f"{path}.weight_nbits"]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        n, k, block = attrs["N"], attrs["K"], attrs["block_size"]
        packed = inits[node.input[1]]  # (N, k_blocks, block/2), low nibble first
        stored = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n, -1)[:, :k]
        scales = inits[node.input[2]].reshape(n, -1)
        assert np.all(scales == scales[:, :1])  # per-channel scale repeated over blocks
        deployed = (stored.astype(np.float32) - 8) * scales[:, :1]
        expected = dequantize(*quantize_weight(module.weight, 4)).numpy()
        assert block == 32 and np.array_equal(deployed, expected), path
        assert result.metrics["layers"][path]["op"] == "MatMulNBits"


def test_accuracy_is_the_task_metric_on_a_fresh_session(cnn, tmp_path):
    result = _apply(cnn, {"quant": {"default": 8}, "prune": {"default": 0.3}}, tmp_path)
    session = ort.InferenceSession(str(result.artifact), providers=["CPUExecutionProvider"])
    correct = total = 0
    for x, y in cnn.val_loader:
        logits = session.run(None, {"input0": x.numpy()})[0]
        correct += int((logits.argmax(axis=1) == y.numpy()).sum())
        total += len(y)
    assert result.metrics["accuracy"] == correct / total
    assert result.metrics["size_bytes"] == result.artifact.stat().st_size
    reloaded = load_artifact(tmp_path, cnn.model)
    assert cnn.evaluate(reloaded) == result.metrics["accuracy"]


def test_deployed_activation_scales_are_the_fine_tuning_ones(mlp, tmp_path):
    policy = {"quant": {"default": 8}, "finetune": {"epochs": 1}}
    result = _apply(mlp, policy, tmp_path)
    # prune 0: the student before fine-tuning is the teacher; calibration is deterministic
    expected = ActivationQuant(["net.0", "net.2", "net.4"])
    expected.calibrate_(mlp.model, [x for x, _ in mlp.train_loader[:8]])
    model = onnx.load(str(result.artifact))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    gemms = {n.input[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for path in ("net.0", "net.2", "net.4"):
        weight_dq = gemms[f"{path}.weight_quantized"].output[0]
        gemm = next(n for n in model.graph.node if weight_dq in n.input)
        act_dq = next(n for n in model.graph.node if n.output[0] == gemm.input[0])
        scale, zp = float(inits[act_dq.input[1]]), int(inits[act_dq.input[2]])
        assert (scale, zp) == expected.qparams[path]
    assert zp == 0  # after a ReLU


def test_safety_net_falls_layers_back_and_says_so(mlp, tmp_path):
    # a negative allowance: every int8 layer "costs too much", so all fall back
    result = _apply(
        mlp, {"quant": {"default": 8}}, tmp_path, target_options={"max_layer_drop": -1.0}
    )
    for rec in result.metrics["layers"].values():
        assert rec["fallback"] == "weight-only" and rec["mode"] == "weight-only"
        assert "int8_cost" in rec
    graph = optimized_graph(result.artifact.read_bytes()).graph
    assert not [n for n in graph.node if n.op_type in INT_OPS]


def test_unknown_target_option_is_named(mlp, tmp_path):
    with pytest.raises(AutoCompressError, match="max_layer_dorp"):
        _apply(mlp, {}, tmp_path, target_options={"max_layer_dorp": 0.1})


def test_every_test_model_exports(cnn, mlp):
    for task in (cnn, mlp, encoder_task(epochs=0)):
        model = export_float(task.model, task.example_inputs)
        assert any(n.op_type in ("Conv", "Gemm", "MatMul") for n in model.graph.node)


class _Svd(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x.reshape(x.shape[0], 8, 8))[1]


def test_a_module_that_will_not_export_is_named():
    model = nn.Sequential(nn.Linear(64, 64), _Svd()).eval()
    with pytest.raises(AutoCompressError, match="module '1'"):
        export_float(model, (torch.randn(1, 64),))


def test_tiny_local_search_on_onnxruntime(tmp_path):
    cfg = SearchConfig.from_dict(
        {
            **QUICK_SEARCH,
            "name": "mlp-ort",
            "task": str(TESTS / "_support" / "tasks.py") + ":mlp",
            "search_space": "default",
            "objectives": "accuracy-size-latency",
            "trials": 3,
            "seed": 0,
            "backend": "local",
            "epochs": 1,
            "tracking": False,
            "target": "onnxruntime",
            "out": str(tmp_path / "run"),
        }
    )
    result = run_search(cfg)
    done = [t for t in result.trials if t["state"] == "complete"]
    assert done and all(t["metrics"]["target"] == "onnxruntime" for t in done)
    assert all(t["metrics"]["artifact"] == "model.onnx" for t in done)


class _ConcatNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(1, 6, 1, bias=False)
        self.bn = nn.BatchNorm2d(10)
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        y = torch.relu(self.bn(torch.cat([self.a(x), self.b(x)], dim=1)))
        return self.fc(y.mean(dim=(2, 3)))


def test_a_batchnorm_after_a_concat_is_split_over_the_branch_convs(tmp_path):
    from autocompress import Task

    torch.manual_seed(0)
    model = _ConcatNorm()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
        model.bn.weight.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(64, 1, 6, 6)
    y = model(x).argmax(dim=1)
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    task = Task(model=model, train_loader=batches, val_loader=batches, example_inputs=(x[:1],))
    result = _apply(task, {"quant": {"default": 32}}, tmp_path)
    graph = onnx.load(str(result.artifact)).graph
    assert "BatchNormalization" not in {n.op_type for n in graph.node}
    assert result.metrics["accuracy"] == 1.0  # same function as the teacher


def test_an_op_after_a_float_output_qgemm_is_a_float_island(tmp_path):
    """Issue 22, item 8: a QGemm without y_scale writes floats; the Sigmoid after it computes
    on floats (it was counted as an integer op)."""
    from _support.models import multilabel_task

    from autocompress.targets._islands import graph_record

    task = multilabel_task(epochs=1)
    policy = Policy.from_dict({"quant": {"default": 8}})
    result = compress(task, policy, out_dir=tmp_path, target="onnxruntime")
    optimized = optimized_graph(result.artifact.read_bytes(), as_loaded=True)
    qgemm = [n for n in optimized.graph.node if n.op_type == "QGemm"]
    assert qgemm and all(len(n.input) <= 7 or not n.input[7] for n in qgemm)  # float output
    record = graph_record(optimized)
    assert record == result.metrics["graph"]
    assert "Sigmoid" not in record["integer_ops"]
    assert record["integer_ops"]["QGemm"] == len(qgemm)
    assert {"op": "Sigmoid"} in [{"op": i["op"]} for i in record["float_islands"]]
