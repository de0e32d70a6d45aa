from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _support.models import cnn_task, encoder_task, mlp_task

from autocompress import Policy, compress, load_artifact
from autocompress.measure.timing import measure_paired
from autocompress.pipeline._compress import MeasureSettings
from autocompress.techniques.distill import TeacherCache, kd_loss
from autocompress.techniques.quantize import pack_codes, quantize_weight, unpack_codes

PRUNE_INT8 = {
    "distill": {"alpha": 0.5, "temperature": 4.0},
    "prune": {"default": 0.5},
    "quant": {"default": 8},
    "finetune": {"lambda": 1e-4, "epochs": 1, "lr": 1e-3},
}


@pytest.fixture(scope="module")
def cnn():
    return cnn_task(width=32)


def test_identity_policy_reproduces_the_teacher_exactly(cnn, tmp_path):
    result = compress(cnn, Policy.identity(), out_dir=tmp_path)
    m = result.metrics
    assert m["accuracy"] == m["teacher"]["accuracy"] == cnn.evaluate(cnn.model)
    assert m["params"] == m["teacher"]["params"]
    # BatchNorm is folded into the convs of the artifact: same function, one op fewer
    assert result.artifact.exists() and not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in result.model.modules()
    )
    for x, _ in cnn.val_loader:
        assert torch.allclose(result.model(x), cnn.model(x), atol=1e-5)


def test_prune_half_and_int8_shrinks_the_resnet(cnn, tmp_path):
    result = compress(cnn, Policy.from_dict(PRUNE_INT8), out_dir=tmp_path)
    m = result.metrics
    assert m["teacher"]["params"] / m["params"] >= 3.0
    assert m["teacher"]["macs"] / m["macs"] >= 3.0
    assert m["compression"] >= 6.0
    assert m["size_bytes"] == (tmp_path / "model.pt").stat().st_size
    assert m["speedup"] == pytest.approx(m["teacher"]["latency_ms"] / m["latency_ms"])
    assert m["layers"]["layer1.conv1"] == {
        "prune_requested": 0.5,
        "prune_group": "layer1.conv1",
        "prune_group_ratio": 0.5,
        "prune": 0.5,
        "channels_kept": 16,
        "channels_original": 32,
        "bits": 8,
        "mode": "weight-only",
        "scope": "weight",
        "scope_achieved": "weight",
    }
    assert m["layers"]["fc"]["prune"] == 0.0 and m["layers"]["fc"]["mode"] == "int-compute"
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["size_bytes"] == m["size_bytes"]
    assert Policy.from_json((tmp_path / "policy.json").read_text()) == Policy.from_dict(PRUNE_INT8)
    # the deployable model is a real int8 Linear
    assert isinstance(result.model.fc, torch.ao.nn.quantized.dynamic.Linear)
    assert 0.0 <= m["accuracy"] <= 1.0


def test_artifact_reloads_in_a_fresh_process_with_same_outputs(cnn, tmp_path):
    result = compress(cnn, Policy.from_dict(PRUNE_INT8), out_dir=tmp_path)
    x = cnn.example_inputs[0]
    torch.save(x, tmp_path / "x.pt")
    torch.save(result.model(x).detach(), tmp_path / "y.pt")
    torch.save(cnn.model.state_dict(), tmp_path / "teacher.pt")
    script = f"""
import torch
from _support.models import ResNetish
from autocompress import load_artifact
skeleton = ResNetish(32)
skeleton.load_state_dict(torch.load(r"{tmp_path}/teacher.pt", weights_only=True))
model = load_artifact(r"{tmp_path}/model.pt", skeleton)
x = torch.load(r"{tmp_path}/x.pt", weights_only=True)
y = torch.load(r"{tmp_path}/y.pt", weights_only=True)
assert torch.allclose(model(x), y, atol=1e-5), (model(x) - y).abs().max()
print("ok", sum(p.numel() for p in model.parameters()))
"""
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_artifact_is_safe_to_load(cnn, tmp_path):
    compress(cnn, Policy.from_dict(PRUNE_INT8), out_dir=tmp_path)
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(blob) == {"format", "meta", "tensors"}
    assert all(isinstance(t, torch.Tensor) for t in blob["tensors"].values())


@pytest.mark.parametrize("bits", [2, 3, 4, 16])
def test_low_bits_are_stored_packed(cnn, tmp_path, bits):
    policy = Policy.from_dict({"quant": {"default": bits}})
    result = compress(cnn, policy, out_dir=tmp_path)
    m = result.metrics
    assert {rec["mode"] for rec in m["layers"].values()} == {"weight-only"}
    assert m["compression"] > 32 / bits * 0.5
    reloaded = load_artifact(tmp_path / "model.pt", cnn.model)
    x = cnn.example_inputs
    assert torch.allclose(reloaded(*x), result.model(*x))


def test_pack_round_trip():
    w = torch.randn(7, 5, 3)
    for bits in (2, 3, 4):
        codes, _ = quantize_weight(w, bits)
        assert torch.equal(unpack_codes(pack_codes(codes, bits), bits, tuple(codes.shape)), codes)
        assert pack_codes(codes, bits).numel() == -(-codes.numel() * bits // 8)


def test_mlp_end_to_end(tmp_path):
    task = mlp_task()
    result = compress(task, Policy.from_dict(PRUNE_INT8), out_dir=tmp_path)
    m = result.metrics
    assert m["params"] < m["teacher"]["params"]
    assert all(rec["mode"] == "int-compute" for rec in m["layers"].values())
    assert m["compression"] > 3


def test_transformer_end_to_end_prunes_heads_and_ffn(tmp_path):
    task = encoder_task()
    policy = Policy.from_dict(
        {
            "prune": {"layers": {"layers.*.attn.q": 0.5, "layers.*.fc1": 0.5}},
            "quant": {"default": 8},
            "distill": {"alpha": 0.5},
            "finetune": {"epochs": 1},
        }
    )
    result = compress(task, policy, out_dir=tmp_path)
    attn = result.model.layers[0].attn
    assert attn.num_heads == 2
    assert result.model.layers[0].fc1.weight().shape[0] == 32  # int8 Linear: (out, in)
    reloaded = load_artifact(tmp_path / "model.pt", task.model)
    assert reloaded.layers[1].attn.num_heads == 2
    x = task.example_inputs
    assert torch.allclose(reloaded(*x), result.model(*x))


def test_finetuning_is_deterministic(cnn, tmp_path):
    a = compress(cnn, Policy.from_dict(PRUNE_INT8), out_dir=tmp_path / "a", seed=3)
    b = compress(cnn, Policy.from_dict(PRUNE_INT8), out_dir=tmp_path / "b", seed=3)
    x = cnn.example_inputs
    assert torch.equal(a.model(*x), b.model(*x))
    assert a.metrics["accuracy"] == b.metrics["accuracy"]


def test_teacher_outputs_are_computed_once_and_reused(cnn, tmp_path):
    cache = TeacherCache(cnn)
    policy = Policy.from_dict({**PRUNE_INT8, "finetune": {"epochs": 2}})
    compress(cnn, policy, out_dir=tmp_path / "a", teacher_cache=cache)
    n_batches = len(cnn.train_loader)
    assert cache.computed_batches == n_batches
    compress(cnn, policy, out_dir=tmp_path / "b", teacher_cache=cache)
    assert cache.computed_batches == n_batches
    assert cache.hits == 3 * n_batches


def test_kd_loss_matches_the_formula():
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    temp = 3.0
    p_t = torch.softmax(t / temp, -1)
    manual = (p_t * (p_t.log() - torch.log_softmax(s / temp, -1))).sum() / 4 * temp**2
    assert torch.allclose(kd_loss(s, t, temp), manual, atol=1e-6)


class _Grouped(torch.nn.Module):
    """A grouped conv inside a residual add."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.c1, self.b1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.g, self.b2 = nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16)
        self.c3, self.fc = nn.Conv2d(16, 16, 1), nn.Linear(16, 10)

    def forward(self, x):
        x = torch.relu(self.b1(self.c1(x)))
        x = x + torch.relu(self.b2(self.g(x)))
        return self.fc(self.c3(x).mean(dim=(2, 3)))


def test_grouped_conv_pruning_stays_consistent(tmp_path):
    from autocompress import Task

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)
    torch.manual_seed(0)
    task = Task(
        model=_Grouped().eval(), train_loader=[(x, y)], val_loader=[(x, y)], example_inputs=(x[:1],)
    )
    result = compress(task, Policy.from_dict({"prune": {"default": 0.5}}), out_dir=tmp_path)
    grouped = result.model.g
    assert (
        grouped.groups == 4 and grouped.out_channels == 8 and grouped.weight.shape == (8, 2, 3, 3)
    )
    reloaded = load_artifact(tmp_path / "model.pt", task.model)
    assert torch.allclose(reloaded(x), result.model(x), atol=1e-6)


def test_multihead_attention_at_8_bits_runs_int8_once_unpacked(tmp_path):
    """The packed nn.MultiheadAttention kept out_proj weight-only (its forward reads the weight,
    and the layer's fused fast path read linear1's); unpacked, every projection is a Linear."""
    from autocompress import Task

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 5, 16, generator=g), torch.randint(0, 3, (32,), generator=g)
    torch.manual_seed(0)

    class Encoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True, dropout=0.0)
            self.head = torch.nn.Linear(16, 3)

        def forward(self, x):
            return self.head(self.layer(x).mean(dim=1))

    task = Task(
        model=Encoder().eval(), train_loader=[(x, y)], val_loader=[(x, y)], example_inputs=(x[:1],)
    )
    result = compress(task, Policy.from_dict({"quant": {"default": 8}}), out_dir=tmp_path)
    layers = result.metrics["layers"]
    for path in ("q", "k", "v", "out_proj"):
        assert layers[f"layer.self_attn.{path}"]["mode"] == "int-compute", path
    assert layers["layer.linear1"]["mode"] == "int-compute"  # no fused fast path any more
    assert layers["head"]["mode"] == "int-compute"
    assert abs(result.metrics["accuracy"] - result.metrics["teacher"]["accuracy"]) <= 0.1


@pytest.mark.parametrize("bits", [3, 8])
def test_artifact_computes_what_the_quantizer_says(cnn, tmp_path, bits):
    """Against an independent reference: the teacher with q(w) = round(w/s)·s put in by hand."""
    import copy

    from autocompress.techniques.quantize import fake_quant

    result = compress(cnn, Policy.from_dict({"quant": {"default": bits}}), out_dir=tmp_path)
    reference = copy.deepcopy(cnn.model)
    with torch.no_grad():
        for mod in reference.modules():
            if isinstance(mod, torch.nn.Conv2d | torch.nn.Linear):
                mod.weight.copy_(fake_quant(mod.weight, bits))
    for x, _ in cnn.val_loader:
        expected = reference(x)
        got = result.model(x)
        # int8 Linear also quantizes its activations on the fly: a looser bound there
        assert torch.allclose(got, expected, atol=1e-4 if bits != 8 else 0.1), (
            (got - expected).abs().max()
        )


def test_paired_timing_compares_with_the_teacher_timed_beside_the_candidate(cnn, tmp_path):
    baseline = {
        "accuracy": 1.0,
        "size_bytes": 1,
        "latency_ms": 1e6,
        "latency_p90_ms": 1e6,
        "params": 1,
        "macs": 1,
    }  # a stale, absurd teacher timing: paired replaces it
    paired = compress(
        cnn, Policy.from_dict(PRUNE_INT8), out_dir=tmp_path / "p", teacher=baseline
    ).metrics
    teacher = paired["teacher_paired"]
    assert 0 < teacher["latency_ms"] < 1e3 and teacher["latency_p90_ms"] >= teacher["latency_ms"]
    assert paired["teacher"]["latency_ms"] == teacher["latency_ms"]
    assert paired["teacher"]["size_bytes"] == 1  # only the timings come from the pairing
    assert paired["speedup"] == pytest.approx(teacher["latency_ms"] / paired["latency_ms"])
    alone = compress(
        cnn,
        Policy.from_dict(PRUNE_INT8),
        out_dir=tmp_path / "a",
        teacher=baseline,
        settings=MeasureSettings(paired=False),
    ).metrics
    assert "teacher_paired" not in alone and alone["teacher"]["latency_ms"] == 1e6


def test_measure_paired_times_both_models_interleaved():
    small = torch.nn.Linear(8, 8)
    big = torch.nn.Sequential(
        torch.nn.Linear(8, 512), *[torch.nn.Linear(512, 512) for _ in range(16)]
    )
    a, b = measure_paired(small, big, (torch.randn(1, 8),), repeats=20)
    assert a.repeats == b.repeats == 20
    assert b.median_ms > a.median_ms


class _Evicted(torch.nn.Module):
    """Slow (5 ms) on the first call after another model ran: a small model whose weights the
    larger one pushed out of cache."""

    last: list = [None]

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        if _Evicted.last[0] is not self:
            time.sleep(0.005)
        _Evicted.last[0] = self
        return self.lin(x)


def test_measure_paired_times_each_model_warm():
    """Interleaving call by call would time every call of both cold (5 ms here): each timed
    call follows an untimed call of the same model."""
    a, b = measure_paired(_Evicted(), _Evicted(), (torch.randn(1, 8),), repeats=20)
    assert a.median_ms < 2.5 and b.median_ms < 2.5
    assert a.repeats == b.repeats == 20


class _Hiccup(torch.nn.Module):
    """Every fourth forward stalls 20 ms: a timing with p90 far over its median."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls % 4 == 0:
            time.sleep(0.02)
        return self.lin(x)


def test_a_disturbed_timing_is_retaken_and_recorded(tmp_path):
    from types import SimpleNamespace

    from autocompress.targets import RETAKES, measure_runtime

    task = SimpleNamespace(example_inputs=(torch.randn(1, 8),))
    settings = MeasureSettings(repeats=20, warmup=1)
    f = tmp_path / "a.bin"
    f.write_bytes(b"12345")
    steady = measure_runtime(task, torch.nn.Linear(8, 8), [f], settings)
    assert steady["size_bytes"] == 5
    # a steady model is retaken only when the machine disturbed it (never more than RETAKES)
    assert 1 <= steady.get("latency_retakes", 1) <= RETAKES
    hiccup = measure_runtime(task, _Hiccup(), [f], settings)
    assert hiccup["latency_retakes"] == RETAKES
    assert hiccup["latency_p90_ms"] > 2 * hiccup["latency_ms"]  # still disturbed: kept, said so
