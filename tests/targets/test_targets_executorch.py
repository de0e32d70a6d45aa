"""The ``executorch`` target on real ``.pte`` programs lowered to XNNPACK, run by ExecuTorch."""

from __future__ import annotations

import functools

import pytest
import torch
from _support import lowered, models
from conftest import ENV

from autocompress import Policy
from autocompress.pipeline._compress import (
    MeasureSettings,
    compress,
    measure_teacher,
)
from autocompress.targets import _et_lower
from autocompress.techniques.fold import fold_batchnorm, foldable_pairs
from autocompress.techniques.quantize import quantize_weight

_apply = functools.partial(lowered.apply_policy, target="executorch")


@pytest.fixture(scope="module")
def int8(cnn, tmp_path_factory):
    return _apply(cnn, {"quant": {"default": 8}}, tmp_path_factory.mktemp("et-int8"))


def test_int8_cnn_runs_xnnpack_int8_kernels_and_says_so(cnn, int8):
    layers = int8.metrics["layers"]
    compute = [p for p, m in cnn.model.named_modules() if isinstance(m, lowered.COMPUTE)]
    assert {layers[p]["mode"] for p in compute} == {"int-compute"}
    assert {layers[p]["runs"] for p in compute} == {"XNNPACK"}
    assert {layers[p]["scope_achieved"] for p in compute} == {"weight+activation"}
    # read from the lowered program: the convs feed the next int8 layer (qs8, fixed qparams),
    # the classifier's logits feed none (qd8, input quantized per call)
    kinds = {p: layers[p]["activations"] for p in compute}
    linears = {p for p, m in cnn.model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linears and kinds == {p: "dynamic" if p in linears else "static" for p in compute}
    assert all("qd8" in layers[p]["kernel"] for p in linears)
    graph = int8.metrics["graph"]
    assert graph["delegated_ops"]["aten.convolution"] == len(compute) - 1
    assert graph["delegated_ops"]["quantized_decomposed.dequantize_per_channel"] == len(compute)
    # the spatial mean has no XNNPACK pattern here: a portable kernel, and the record says so
    assert graph["portable_ops"] == {"aten.mean.dim": 1}
    assert int8.artifact.name == "model.pte"
    assert int8.metrics["size_bytes"] == int8.artifact.stat().st_size
    assert int8.metrics["compression"] > 2  # int8 weights in the program, not fp32


def test_the_quantized_graph_carries_our_codes_and_scales(cnn):
    """Our per-channel codes survive the XNNPACK quantizer (pinned observers), and a layer whose
    codes were changed behind our back would be an error, not a silent re-calibration."""
    folded = fold_batchnorm(cnn.model, foldable_pairs(cnn.model))
    paths = [p for p, m in folded.named_modules() if isinstance(m, lowered.COMPUTE)]
    codes = _et_lower.set_codes_(folded, paths)
    batches = [b for b, _ in cnn.train_loader[:2]]
    conv = next(p for p in paths if isinstance(folded.get_submodule(p), torch.nn.Conv2d))
    graph, pinned = _et_lower.quantize(
        folded, cnn.example_inputs, codes=codes, activations={conv: (0.05, 3)}, batches=batches
    )
    assert set(pinned) == set(paths)
    assert pinned[conv]["input_qparams"] == [0.05, 3 - 128]  # uint8 grid shifted to int8
    # the convolutions feed the next int8 layer (static kernels); the classifier's logits go
    # to no int8 layer: XNNPACK's qd8 kernel, input quantized per call, float output
    assert {p for p, v in pinned.items() if v.get("activations") == "dynamic"} == {"fc"}
    stored = [
        getattr(graph, n.args[0].target)
        for n in graph.graph.nodes
        if "dequantize_per_channel" in str(n.target)
    ]
    ours = [quantize_weight(folded.get_submodule(p).weight, 8)[0] for p in paths]
    assert len(stored) == len(ours)
    assert all(any(torch.equal(s, o) for s in stored) for o in ours)


_FRESH = """
import json, sys
from pathlib import Path
import torch
from executorch.exir._serialize._program import deserialize_pte_binary
from autocompress.pipeline._compress import load_artifact
model = load_artifact(Path(sys.argv[1]), torch.nn.Identity())  # the .pte needs no skeleton
x = torch.load(sys.argv[2])
program = deserialize_pte_binary(Path(sys.argv[1]).read_bytes())
program = getattr(program, "program", program)
plan = next(p for p in program.execution_plan if p.name == "forward")
print(json.dumps({
    "out": model(x).tolist(),
    "delegates": [d.id for d in plan.delegates],
    "operators": sorted({o.name for o in plan.operators}),
}))
"""


def test_reloaded_in_a_fresh_process_records_match_the_program(cnn, int8, tmp_path):
    x = torch.cat([b[0] for b in cnn.val_loader])[:8]
    fresh = lowered.run_fresh(tmp_path, _FRESH, int8.artifact, x, ENV)
    assert torch.allclose(torch.tensor(fresh["out"]), int8.model(x), atol=1e-5)
    graph = int8.metrics["graph"]
    # the serialized program: one XNNPACK blob per partition, portable kernels for the rest
    assert fresh["delegates"] == ["XnnpackBackend"] * graph["partitions"]
    portable = {"::".join(op.split(".")[:2]) for op in graph["portable_ops"]}  # aten::mean
    assert fresh["operators"] == sorted(portable)
    assert int8.metrics["accuracy"] == pytest.approx(cnn.evaluate(int8.model))


def test_fp32_teacher_is_fp32_on_xnnpack(cnn, tmp_path):
    result = _apply(cnn, {"quant": {"default": 32}}, tmp_path)
    assert {r["mode"] for r in result.metrics["layers"].values()} == {"float"}
    assert {r["runs"] for r in result.metrics["layers"].values()} == {"XNNPACK"}
    ops = result.metrics["graph"]["delegated_ops"]
    assert not any("quantize" in op for op in ops)
    x = cnn.example_inputs[0]
    assert torch.allclose(result.model(x), cnn.model(x), atol=1e-4)


def test_mixed_bits_leave_32_bit_layers_in_fp32(cnn, tmp_path):
    policy = {"quant": {"default": 8, "layers": {"fc": 32, "stem": 32}}}
    layers = _apply(cnn, policy, tmp_path).metrics["layers"]
    assert layers["fc"]["mode"] == layers["stem"]["mode"] == "float"
    assert layers["layer1.conv1"]["mode"] == "int-compute"


# resnext, densenet, unet and encoder also lower and run (checked once); left out to keep the
# file fast: one lowering costs seconds
FAMILIES = [
    "resnet_task",
    "mobilenet_task",  # SE blocks
    "grouped_concat_task",
    "two_heads_task",
    "audio_task",
    "bert_task",
    "mha_task",
    "vit_task",
    "gpt2_task",
]


@pytest.mark.parametrize("family", FAMILIES)
def test_every_test_model_runs_on_executorch_or_says_why(family, tmp_path):
    task = getattr(models, family)(epochs=0)
    # one lowering per model: the fp32 teacher's .pte (baseline, paired reference) is lowered
    # and timed in the tests above; here its figures would only fill the speedup
    fast = MeasureSettings(repeats=20, warmup=1, paired=False)
    policy = Policy.from_dict({"quant": {"default": 8}, "finetune": {"epochs": 0}})
    baseline = measure_teacher(task, target="torch", settings=fast)
    result = compress(
        task, policy, target="executorch", out_dir=tmp_path, settings=fast, teacher=baseline
    )
    modules = dict(task.model.named_modules())
    for path, rec in result.metrics["layers"].items():
        assert rec.get("op") and rec.get("runs"), (path, rec)
        if rec["bits"] == 8 and isinstance(modules.get(path), lowered.COMPUTE):
            assert rec["mode"] == "int-compute" or rec.get("fallback"), (path, rec)
    assert result.metrics["accuracy"] == pytest.approx(task.evaluate(result.model))


def test_cli_apply_on_a_tiny_cnn(tmp_path):
    metrics = lowered.cli_applied(tmp_path, "executorch", "model.pte", ENV)
    assert {r["mode"] for r in metrics["layers"].values()} == {"int-compute"}


def test_tiny_local_search_on_executorch(tmp_path):
    # the default space offers 4 and 16 bits: refused on executorch
    done = lowered.tiny_search(tmp_path, "executorch", "int8", "model.pte")
    names = lowered.export_complete_trial(tmp_path, "executorch", done)
    assert names == ["metrics.json", "model.pte", "policy.json"]


class _MaskedAttention(torch.nn.Module):
    """One attention block the way Hugging Face writes it: the padding mask becomes an additive
    ``finfo.min`` bias on the scores, and a post-LayerNorm residual stream with an outlier
    channel (BERT's residual streams have a few)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.q, self.k, self.v = (torch.nn.Linear(16, 16) for _ in range(3))
        with torch.no_grad():  # sharp attention: the scores span several units
            self.q.weight.mul_(4.0)
        self.out = torch.nn.Linear(16, 16)
        self.norm = torch.nn.LayerNorm(16)
        self.head = torch.nn.Linear(16, 4)
        self.register_buffer("outlier", torch.tensor([8.0] + [0.0] * 15))

    def forward(self, x, mask):  # (B, T, 16), (B, T) ints
        bias = (1.0 - mask[:, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        scores = self.q(x) @ self.k(x).transpose(1, 2) / 4.0 + bias
        h = self.norm(x + self.outlier + self.out(scores.softmax(-1) @ self.v(x)))
        return self.head(h[:, 0])  # the first token's output: its attention pattern shows


def test_arithmetic_that_feeds_no_int8_layer_stays_fp32():
    """Only ops whose int8 output feeds an 8-bit layer are quantized: an int8 grid over the
    mask's finfo.min and the scores, or over a residual stream with an outlier before a
    LayerNorm, wrecks the output (MiniLM on XNNPACK: WordSim-353 -0.05 against 0.72 on ONNX
    Runtime's int8 artifact before this rule)."""
    model = _MaskedAttention().eval()
    x = torch.randn(8, 6, 16)
    mask = torch.ones(8, 6, dtype=torch.long)
    mask[:, 4:] = 0  # padded tokens
    paths = ["q", "k", "v", "out", "head"]
    codes = _et_lower.set_codes_(model, paths)
    graph, pinned = _et_lower.quantize(
        model, (x[:1], mask[:1]), codes=codes, activations={}, batches=[(x, mask)]
    )
    assert set(pinned) == set(paths)
    # every Linear here feeds a float op (matmul, softmax, LayerNorm, the output): qd8 kernels,
    # no int8 output grid after any of them
    assert {p for p, v in pinned.items() if v.get("activations") == "dynamic"} == set(paths)
    linears = [n for n in graph.graph.nodes if str(n.target).startswith("aten.linear")]
    assert len(linears) == len(paths)
    assert not any("quantize_per_tensor" in str(u.target) for n in linears for u in n.users)
    with torch.no_grad():
        want, got = model(x, mask), graph(x, mask)
    # int8 Linears alone move the logits by ~1 % of their scale; with the mask add and the
    # residual add quantized too, by ~9 % (measured on this model)
    assert (got - want).abs().max() < 0.03 * want.abs().max()
    quantized = {
        n.args[0].name
        for n in graph.graph.nodes
        if "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)
    }
    adds = [n.name for n in graph.graph.nodes if str(n.target).startswith("aten.add")]
    assert adds and not quantized & set(adds)


class _Sliced(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.b(self.a(x)[:, :8])


def test_a_linear_whose_int8_output_a_slice_shares_stays_static():
    """The quantizer gives a slice after a Linear the Linear's output grid: that Linear keeps
    its int8 output (static kernel) rather than losing the grid the slice refers to."""
    model = _Sliced().eval()
    codes = _et_lower.set_codes_(model, ["a", "b"])
    x = torch.randn(8, 16)
    graph, pinned = _et_lower.quantize(model, (x[:1],), codes=codes, activations={}, batches=[(x,)])
    assert set(pinned) == {"a", "b"}
    assert pinned["b"].get("activations") == "dynamic" and "activations" not in pinned["a"]
    with torch.no_grad():
        assert (graph(x) - model(x)).abs().max() < 0.05 * model(x).abs().max()


def test_residual_adds_that_feed_int8_convs_stay_int8(cnn):
    """The CNN's residual adds feed the next int8 convolution: the quantizer keeps them int8."""
    folded = fold_batchnorm(cnn.model, foldable_pairs(cnn.model))
    paths = [p for p, m in folded.named_modules() if isinstance(m, lowered.COMPUTE)]
    codes = _et_lower.set_codes_(folded, paths)
    graph, _ = _et_lower.quantize(
        folded, cnn.example_inputs, codes=codes, activations={}, batches=[cnn.train_loader[0][0]]
    )
    quantized = {
        n.args[0].name
        for n in graph.graph.nodes
        if "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)
    }
    adds = [n for n in graph.graph.nodes if str(n.target).startswith("aten.add")]
    # an add's int8 output: quantized itself, or after the ReLU it is fused with
    outs = [n.name if not n.users or len(n.users) > 1 else next(iter(n.users)).name for n in adds]
    assert adds and all(
        n.name in quantized or o in quantized for n, o in zip(adds, outs, strict=True)
    )


def test_8bit_embedding_tables_are_int8_codes_in_the_program(tmp_path):
    """An 8-bit table is stored as int8 codes and per-row scales, the looked-up rows gathered
    and dequantized (as on onnxruntime): weight-only, its bytes recorded, the program smaller
    by about three quarters of the table, and the recorded accuracy the program's own."""
    task = models.bert_task(epochs=0)
    table = "bert.embeddings.word_embeddings"
    quant = {"default": 8, "layers": {table: 32}}
    runs = {
        b: _apply(task, {"quant": {**quant, "layers": {table: b}}, "finetune": {"epochs": 0}},
                  tmp_path / str(b))
        for b in (8, 32)
    }  # fmt: skip
    rec = runs[8].metrics["layers"][table]
    vocab, dim = task.model.get_submodule(table).weight.shape
    assert rec["mode"] == "weight-only" and rec["bytes"] == vocab * dim + 4 * vocab
    assert "fallback" not in rec
    saved = runs[32].metrics["size_bytes"] - runs[8].metrics["size_bytes"]
    assert saved >= 0.7 * 3 * vocab * dim
    assert runs[8].metrics["accuracy"] == pytest.approx(task.evaluate(runs[8].model))
