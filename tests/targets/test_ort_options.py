"""The ``onnxruntime`` target's options on real ONNX Runtime sessions: reduce_range (7-bit
integer-compute weights on CPUs without VNNI), dynamic int8 Linear, and how options reach it."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _support.models import mlp_task
from _support.study_inputs import QUICK_SEARCH
from onnx import numpy_helper
from torch import nn

from autocompress import Policy
from autocompress.errors import AutoCompressError
from autocompress.pipeline._compress import MeasureSettings, compress
from autocompress.targets import get_target
from autocompress.targets._cpu import cpu_info, has_vnni
from autocompress.targets._ort_graph import optimized_graph
from autocompress.techniques.quantize import quantize_weight

LINEARS = ("net.0", "net.2", "net.4")


@pytest.fixture(scope="module")
def mlp():
    return mlp_task()


ORT = functools.partial(
    compress, target="onnxruntime", settings=MeasureSettings(repeats=20, warmup=2)
)


def _apply(task, policy: dict, tmp_path: Path, **options):
    return ORT(task, Policy.from_dict(policy), out_dir=tmp_path, target_options=options)


def _weight_codes(artifact: Path) -> dict[str, np.ndarray]:
    model = onnx.load(str(artifact))
    return {
        i.name.removesuffix(".weight_quantized"): numpy_helper.to_array(i)
        for i in model.graph.initializer
        if i.name.endswith(".weight_quantized")
    }


def test_vnni_detection_reads_the_cpu_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("model name\t: Some CPU\nflags\t\t: fpu avx2 fma avx512_vnni\n")
    model, flags = cpu_info(str(info))
    assert model == "Some CPU" and has_vnni(flags)
    assert not has_vnni(frozenset({"avx2", "fma", "avx512f"}))
    assert has_vnni(frozenset({"avx_vnni"}))
    auto = get_target("onnxruntime")
    assert auto.reduces_range == (not has_vnni())
    assert get_target("onnxruntime", reduce_range="true").reduces_range
    assert not get_target("onnxruntime", reduce_range=False).reduces_range


def test_a_bad_reduce_range_value_is_named():
    with pytest.raises(AutoCompressError, match="reduce_range 'maybe'"):
        get_target("onnxruntime", reduce_range="maybe")
    with pytest.raises(AutoCompressError, match="linear 'fast'"):
        get_target("onnxruntime", linear="fast")


@pytest.mark.parametrize("reduce_range", ["auto", True, False])
def test_reduce_range_stores_our_7bit_codes(mlp, tmp_path, reduce_range):
    # "auto" resolves from this CPU's flags (full range with VNNI, 7-bit without); either way
    # the stored codes must be the ones that resolution promises
    reduced = get_target("onnxruntime", reduce_range=reduce_range).reduces_range
    if reduce_range == "auto":
        assert reduced == (not has_vnni())
    result = _apply(mlp, {"quant": {"default": 8}}, tmp_path, reduce_range=reduce_range)
    codes = _weight_codes(result.artifact)
    modules = dict(mlp.model.named_modules())
    for path in LINEARS:
        rec = result.metrics["layers"][path]
        assert rec["mode"] == "int-compute" and rec["bits"] == 8
        stored = codes[path] if codes[path].shape == modules[path].weight.shape else codes[path].T
        assert stored.dtype == np.int8
        expected, _ = quantize_weight(modules[path].weight, 7 if reduced else 8)
        assert np.array_equal(stored, expected.numpy()), path
        if reduced:
            assert stored.min() >= -64 and stored.max() <= 63 and rec["weight_range"] == 7
        else:
            assert np.abs(stored).max() == 127 and "weight_range" not in rec
    header = get_target("onnxruntime").read_meta(result.artifact)
    assert header["reduce_range"] is reduced


def test_fine_tuning_trains_against_the_7bit_codes(mlp, tmp_path):
    seen: dict[str, int] = {}

    def on_epoch(epoch: int, model: nn.Module) -> None:
        for path in LINEARS:
            mod = model.get_submodule(path)
            w = mod.weight  # the fake-quantized weight the student trains against
            scale = w.detach().abs().amax(dim=1, keepdim=True)
            seen[path] = int(torch.round(w.detach() / scale * 63).abs().max())
            assert mod.parametrizations.weight[0].bits == 7
            levels = torch.unique(torch.round(w.detach() / scale * 1e4)).numel()
            assert levels <= 127, path

    policy = Policy.from_dict({"quant": {"default": 8}, "finetune": {"epochs": 1}})
    ORT(mlp, policy, out_dir=tmp_path, target_options={"reduce_range": True}, on_epoch=on_epoch)
    assert seen == dict.fromkeys(LINEARS, 63)


def test_weight_only_layers_keep_8bit_codes_under_reduce_range(mlp, tmp_path):
    policy = {"quant": {"default": 8, "scope": {"default": "weight"}}}
    result = _apply(mlp, policy, tmp_path, reduce_range=True)
    for path, stored in _weight_codes(result.artifact).items():
        assert result.metrics["layers"][path]["mode"] == "weight-only"
        assert np.abs(stored).max() == 127 and "weight_range" not in result.metrics["layers"][path]


def test_inspect_says_what_reduce_range_resolves_to(mlp):
    from autocompress.reporting.inspect import describe

    forced = describe(mlp, "default", target="onnxruntime", target_options={"reduce_range": True})
    assert "reduce_range true (option)" in forced and "7-bit codes (|q| <= 63)" in forced
    auto = describe(mlp, "default", target="onnxruntime")
    assert ("(no VNNI)" in auto) == (not has_vnni()) and "vnni " in auto


def test_a_search_config_passes_its_target_options_to_every_trial(tmp_path):
    from autocompress.api import run_search
    from autocompress.study.config import SearchConfig

    cfg = SearchConfig.from_dict(
        {
            **QUICK_SEARCH,
            "name": "mlp-ort-options",
            "task": str(Path(__file__).resolve().parents[1] / "_support" / "tasks.py") + ":mlp",
            "trials": 1,
            "starts": ["int8"],
            "backend": "local",
            "epochs": 0,
            "tracking": False,
            "target": "onnxruntime",
            "target_options": {"reduce_range": True, "linear": "dynamic"},
            "out": str(tmp_path / "run"),
        }
    )
    assert cfg.to_dict()["target_options"] == {"reduce_range": True, "linear": "dynamic"}
    assert "target_options" not in SearchConfig(name="x", task="t").to_dict()
    (trial,) = run_search(cfg).trials
    assert trial["state"] == "complete", trial["error"]
    for path in LINEARS:
        rec = trial["metrics"]["layers"][path]
        assert rec["weight_range"] == 7 and rec["op"] == "DynamicQuantizeMatMul"


def test_apply_takes_target_options(tmp_path):
    import json

    from typer.testing import CliRunner

    from autocompress.cli import app

    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"quant": {"default": 8}}))
    task = str(Path(__file__).resolve().parents[1] / "_support" / "tasks.py") + ":mlp"
    args = ["apply", "--task", task, "--policy", str(policy), "--target", "onnxruntime"]
    args += ["--repeats", "20", "--target-option", "reduce_range=false"]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    codes = _weight_codes(tmp_path / "out" / "model.onnx")
    assert {int(np.abs(c).max()) for c in codes.values()} == {127}


def test_dynamic_linear_runs_our_codes_in_dynamicquantizematmul(mlp, tmp_path):
    result = _apply(mlp, {"quant": {"default": 8}}, tmp_path, linear="dynamic")
    graph = optimized_graph(result.artifact.read_bytes()).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    users = {name: n for n in graph.node for name in n.input}
    assert "QuantizeLinear" not in {n.op_type for n in graph.node}  # nothing calibrated
    modules = dict(mlp.model.named_modules())
    reduced = get_target("onnxruntime").reduces_range
    for path in LINEARS:
        rec = result.metrics["layers"][path]
        assert rec["mode"] == "int-compute" and rec["activations"] == "dynamic"
        assert rec["scope_achieved"] == "weight+activation"
        node = users[f"{path}.weight_quantized"]
        assert node.op_type == rec["op"] == "DynamicQuantizeMatMul"
        codes, scale = quantize_weight(modules[path].weight, 7 if reduced else 8)
        assert np.array_equal(inits[node.input[1]], codes.numpy().T)
        assert np.array_equal(inits[node.input[2]], scale.numpy())
    with torch.inference_mode():
        x = torch.cat([x for x, _ in mlp.val_loader])
        expected = mlp.model(x)
    got = result.model(x)
    assert torch.allclose(got, expected, atol=0.15 * float(expected.abs().max()))
    assert abs(result.metrics["accuracy"] - result.metrics["teacher"]["accuracy"]) <= 0.03


def test_dynamic_linear_on_a_transformer_encoder(tmp_path):
    from _support.models import encoder_task

    task = encoder_task(epochs=1)
    result = _apply(task, {"quant": {"default": 8}}, tmp_path, linear="dynamic")
    dyn = [p for p, r in result.metrics["layers"].items() if r.get("op") == "DynamicQuantizeMatMul"]
    linears = [p for p, m in task.model.named_modules() if isinstance(m, nn.Linear)]
    ints = [p for p in linears if result.metrics["layers"][p]["mode"] == "int-compute"]
    assert ints and sorted(dyn) == sorted(ints)
    assert abs(result.metrics["accuracy"] - result.metrics["teacher"]["accuracy"]) <= 0.05


def _one_linear_task():
    from autocompress import Task

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(96, 16)).eval()
    x = torch.randn(64, 96)
    x[:, 3] *= 30  # an outlier column: int8 activation rounding shows
    y = model(x).argmax(dim=1)
    batches = [(x[:32], y[:32]), (x[32:], y[32:])]
    return Task(model=model, train_loader=batches, val_loader=batches, example_inputs=(x[:1],))


@pytest.mark.parametrize("bits", [4, 2])
def test_matmulnbits_record_says_what_ort_computes(tmp_path, bits):
    task = _one_linear_task()
    result = _apply(task, {"quant": {"default": bits}}, tmp_path)
    rec = result.metrics["layers"]["0"]
    assert rec["op"] == "MatMulNBits"
    x = torch.cat([b for b, _ in task.val_loader]).numpy().astype(np.float64)
    layer = task.model[0]
    codes, scale = quantize_weight(layer.weight, bits)
    w = codes.numpy().astype(np.float64) * scale.numpy()[:, None].astype(np.float64)
    bias = layer.bias.detach().numpy().astype(np.float64)
    blocked = x.reshape(len(x), -1, 32)
    s_a = np.abs(blocked).max(axis=-1, keepdims=True) / 127
    int8_acts = (np.round(blocked / s_a) * s_a).reshape(x.shape) @ w.T + bias
    float_acts = x @ w.T + bias
    got = result.model(torch.from_numpy(x.astype(np.float32))).numpy()
    int8_err, float_err = np.abs(got - int8_acts).max(), np.abs(got - float_acts).max()
    assert min(int8_err, float_err) < 1e-3 < max(int8_err, float_err)  # one of them it is
    assert (rec["mode"] == "int-compute") == (int8_err < float_err)


def test_weight_only_weights_are_dequantized_once_at_load(mlp, tmp_path):
    policy = {"quant": {"default": 8, "scope": {"default": "weight"}}}
    result = _apply(mlp, policy, tmp_path / "wo")
    loaded = optimized_graph(result.artifact.read_bytes(), as_loaded=True).graph
    assert "DequantizeLinear" not in {n.op_type for n in loaded.node}
    for path in LINEARS:
        assert result.metrics["layers"][path]["dequantize"].startswith("once at load")
    x = torch.cat([b for b, _ in mlp.val_loader])
    h = x.double()
    for i, path in enumerate(LINEARS):  # the float model on our dequantized 8-bit weights
        layer = mlp.model.get_submodule(path)
        codes, scale = quantize_weight(layer.weight, 8)
        h = h @ (codes.double() * scale.double()[:, None]).T + layer.bias.double()
        h = torch.relu(h) if i < 2 else h
    assert torch.allclose(result.model(x).double(), h, atol=1e-4)
    mixed = {"quant": {"default": 8, "scope": {"layers": {"net.4": "weight"}}}}
    rec = _apply(mlp, mixed, tmp_path / "mixed").metrics["layers"]
    assert rec["net.4"]["dequantize"] == "per call" and rec["net.0"]["mode"] == "int-compute"
