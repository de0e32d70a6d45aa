"""Every model family, pruned at every ratio: it runs, reloads from the artifact, exports to
ONNX, and each layer record matches the artifact's tensor shapes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from _support.models import FAMILIES

from autocompress import MeasureSettings, Policy, compress, load_artifact, measure_teacher
from autocompress.analysis.layers import _tensors
from autocompress.pipeline._compress import resolve_policy
from autocompress.targets import get_target
from autocompress.targets._torch import read, structure_diff
from autocompress.targets.onnx import export_onnx
from autocompress.techniques.prune import prune_, prune_records

RATIOS = [round(0.1 * i, 1) for i in range(10)]
FAST = MeasureSettings(warmup=1, repeats=20)


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def task(request):
    return FAMILIES[request.param](epochs=0)


def rows_in_artifact(path) -> dict[str, int]:
    """Output channels of each weight, read from the artifact's stored tensors."""
    _, tensors = read(path)
    rows = {}
    for key, t in tensors.items():
        base, _, kind = key.rpartition(".")
        if kind == "weight":
            rows[base] = t.shape[0]
        elif kind in ("int8", "fp16") and base.endswith(".weight"):
            rows[base.removesuffix(".weight")] = t.shape[0]
        elif kind == "shape" and base.endswith(".weight"):
            rows[base.removesuffix(".weight")] = int(t[0])
    return rows


def out_rows(rec_path: str, rows: dict[str, int], model) -> int:
    mod = model.get_submodule(rec_path)
    transposed = getattr(mod, "transposed", False)
    return mod.weight.shape[1] * mod.groups if transposed else rows[rec_path]


def check_records(records, artifact, skeleton) -> None:
    rows = rows_in_artifact(artifact)
    loaded = get_target("torch").load(artifact, skeleton)
    for path, rec in records.items():
        if "channels_kept" not in rec:
            continue
        assert out_rows(path, rows, loaded) == rec["channels_kept"], path
        assert rec["prune"] == pytest.approx(
            1 - rec["channels_kept"] / rec["channels_original"], abs=1e-6
        )


def onnx_outputs(path, inputs):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
    return session.run(None, feed)


def export(model, inputs, path):
    """ONNX export (export_onnx turns nn.MultiheadAttention's fused fast path off itself)."""
    return export_onnx(model, inputs, path)


def test_every_ratio_runs_reloads_and_exports(task, tmp_path):
    tgt = get_target("torch")
    x = task.example_inputs
    for ratio in RATIOS:
        resolved = resolve_policy(task, Policy(prune_default=ratio), tgt)
        student = copy.deepcopy(task.model)
        groups = prune_(student, task, resolved.prune, protected=resolved.protected, batches=1)
        student.eval()
        with torch.no_grad():
            expected = _tensors(student(*x))
        artifact = tmp_path / f"model-{ratio}.pt"
        bits = {p: 32 for p in resolved.bits}
        structure = structure_diff(task.model, student)
        tgt.save(student, artifact, bits=bits, structure=structure, meta={"target": "torch"})
        loaded = tgt.load(artifact, task.model)
        with torch.no_grad():
            got = _tensors(loaded(*x))
        for a, b in zip(got, expected, strict=True):
            assert torch.allclose(a, b, atol=1e-4), ratio
        onnx = export(loaded, x, tmp_path / f"model-{ratio}.onnx")
        for a, b in zip(onnx_outputs(onnx, x), expected, strict=True):
            np.testing.assert_allclose(a, b.numpy(), atol=1e-4)
        records = prune_records(task.model, student, resolved.prune, groups)
        check_records(records, artifact, task.model)
        if ratio >= 0.5 and any(g["prune_group_ratio"] > 0 for g in groups.values()):
            assert any(r.get("prune", 0) > 0 for r in records.values()), ratio


def test_compress_writes_records_that_match_the_artifact(task, tmp_path):
    baseline = measure_teacher(task, settings=FAST)
    policy = Policy.from_dict({"prune": {"default": 0.5}, "quant": {"default": 8}})
    result = compress(task, policy, out_dir=tmp_path, settings=FAST, teacher=baseline)
    layers = result.metrics["layers"]
    check_records(layers, tmp_path / "model.pt", task.model)
    tables = {p for p, m in task.model.named_modules() if isinstance(m, torch.nn.Embedding)}
    for path, rec in layers.items():
        if path in tables:  # embedding tables take bits, never a prune ratio
            assert rec["bits"] == 8 and not {"prune_requested", "prune"} & set(rec)
            continue
        assert {"prune_requested", "prune", "channels_kept", "channels_original"} <= set(rec)
    reloaded = load_artifact(tmp_path, task.model)
    with torch.no_grad():
        for a, b in zip(
            _tensors(reloaded(*task.example_inputs)),
            _tensors(result.model(*task.example_inputs)),
            strict=True,
        ):
            assert torch.allclose(a, b, atol=1e-5)
