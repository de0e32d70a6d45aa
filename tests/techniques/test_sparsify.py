"""The ``weight`` pruning strategy: unstructured sparsity, fixed masks, the bitmask encoding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _support.models import mlp_task

from autocompress import Policy, compress
from autocompress.errors import PolicyError
from autocompress.pipeline._compress import MeasureSettings, measure_teacher
from autocompress.study.space import load_space
from autocompress.targets._torch import read
from autocompress.techniques.finetune import finetune_
from autocompress.techniques.sparsify import payload_bytes, resolve_sparsity, sparsify_

QUICK = MeasureSettings(warmup=1, repeats=20)
OLD_POLICY = {
    "distill": {"alpha": 0.5, "temperature": 4.0},
    "prune": {"default": 0.3, "layers": {"net.2": 0.5}},
    "quant": {"default": 8, "layers": {"net.4": 32}},
    "finetune": {"lambda": 0.0001, "epochs": 1, "lr": 0.001},
}
SPARSE = {
    "prune": {"sparsity": {"default": 0.8, "layers": {"net.2": 0.6}}},
    "quant": {"default": 8, "layers": {"net.2": 4, "net.4": 32}},
    "finetune": {"epochs": 1},
}


@pytest.fixture(scope="module")
def mlp():
    return mlp_task()


@pytest.fixture(scope="module")
def baseline(mlp):
    return measure_teacher(mlp, settings=QUICK)


def test_old_policies_stay_valid_and_unchanged():
    policy = Policy.from_dict(OLD_POLICY)
    assert policy.to_dict() == OLD_POLICY  # no new keys written for an old policy
    assert policy.sparsity_default == 0.0 and not policy.sparsity_layers
    assert policy.drop_blocks == ()


def test_sparsity_and_drop_round_trip():
    data = {**OLD_POLICY, "prune": {**OLD_POLICY["prune"], "sparsity": {"default": 0.5}}}
    data["drop"] = {"blocks": ["layers.1"]}
    policy = Policy.from_dict(data)
    assert Policy.from_json(policy.to_json()) == policy
    assert policy.to_dict()["prune"]["sparsity"] == {"default": 0.5, "layers": {}}
    assert policy.to_dict()["drop"] == {"blocks": ["layers.1"]}


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"prune": {"sparsity": {"default": 1.0}}}, "prune.sparsity.default"),
        ({"prune": {"sparsity": {"default": "x"}}}, "prune.sparsity.default"),
        ({"prune": {"sparsity": {"layers": {"fc": -0.1}}}}, "prune.sparsity.layers['fc']"),
        ({"prune": {"sparsity": {"ratio": 0.5}}}, "prune.sparsity.ratio"),
        ({"prune": {"sparsity": 0.5}}, "'prune.sparsity'"),
        ({"drop": {"blocks": "layers.1"}}, "drop.blocks"),
        ({"drop": {"blocks": ["a", "a"]}}, "drop.blocks"),
        ({"drop": {"layers": []}}, "drop.layers"),
    ],
)
def test_bad_strategy_fields_name_the_key(data, key):
    with pytest.raises(PolicyError, match=key.replace("[", r"\[").replace("]", r"\]")):
        Policy.from_dict(data)


def test_a_sparsity_glob_matching_no_layer_names_the_key(mlp):
    policy = Policy.from_dict({"prune": {"sparsity": {"layers": {"conv*": 0.5}}}})
    with pytest.raises(PolicyError, match=r"prune\.sparsity\.layers\['conv\*'\]"):
        resolve_sparsity(mlp.model, policy)


def test_magnitude_zeroes_the_smallest_weights(mlp):
    import copy

    model = copy.deepcopy(mlp.model)
    before = model.net[0].weight.detach().abs().clone()
    masks = sparsify_(model, mlp, {"net.0": 0.75}, importance="magnitude")
    w = model.net[0].weight.detach()
    assert int((w == 0).sum()) == round(0.75 * w.numel())
    assert before[~masks["net.0"]].max() <= before[masks["net.0"]].min()


def test_masks_stay_fixed_while_fine_tuning(mlp):
    import copy

    model = copy.deepcopy(mlp.model)
    masks = sparsify_(model, mlp, {"net.0": 0.8, "net.2": 0.5})
    kept_before = model.net[0].weight.detach()[masks["net.0"]].clone()
    policy = Policy.from_dict({"finetune": {"epochs": 1, "lr": 1e-2}})
    finetune_(model, mlp, policy, {"net.0": 8, "net.2": 32, "net.4": 32}, masks=masks)
    for path, mask in masks.items():
        w = model.get_submodule(path).weight.detach()
        assert torch.all(w[~mask] == 0), path
    assert not torch.equal(model.net[0].weight.detach()[masks["net.0"]], kept_before)


def _decode(tensors, base):
    """The test's own reading of the encoding: bitmask + kept values (+ scales)."""
    shape = tuple(int(s) for s in tensors[base + ".shape"])
    n = math.prod(shape)
    mask = np.unpackbits(tensors[base + ".mask"].numpy(), bitorder="little")[:n].astype(bool)
    (key,) = [k for k in tensors if k.startswith(base + ".sparse")]
    bits = int(key.rsplit("sparse", 1)[1])
    return shape, mask, bits, tensors[key]


def test_artifact_stores_sparse_layers_as_bitmask_and_kept_values(mlp, baseline, tmp_path):
    result = compress(
        mlp, Policy.from_dict(SPARSE), out_dir=tmp_path, teacher=baseline, settings=QUICK
    )
    m = result.metrics
    assert m["sparsity"] == "storage-only" and m["size_bytes"] == result.artifact.stat().st_size
    meta, tensors = read(result.artifact)
    total_zero = total = 0
    for path, bits in {"net.0": 8, "net.2": 4, "net.4": 32}.items():
        base = path + ".weight"
        shape, mask, stored_bits, values = _decode(tensors, base)
        kept = int(mask.sum())
        assert stored_bits == bits
        assert values.numel() * values.element_size() + tensors[base + ".mask"].numel() == (
            payload_bytes(math.prod(shape), kept, bits)
        )
        assert tensors[base + ".mask"].numel() == math.ceil(math.prod(shape) / 8)
        codes = torch.zeros(math.prod(shape))
        if bits == 4:  # 4-bit codes: a bit stream, two's complement offset by qmax = 7
            stream = np.unpackbits(values.numpy(), bitorder="little")[: kept * 4].reshape(kept, 4)
            unsigned = np.packbits(stream, axis=1, bitorder="little")[:, 0].astype(np.int64)
            codes[torch.from_numpy(mask)] = torch.from_numpy(unsigned - 7).float()
        else:
            codes[torch.from_numpy(mask)] = values.float()
        expected = codes.reshape(shape)
        if bits < 32:
            expected = expected * tensors[base + ".scale"][:, None]
        layer = result.model.get_submodule(path)
        loaded = layer.weight().dequantize() if callable(layer.weight) else layer.weight
        assert torch.equal(loaded.detach(), expected), path
        rec = m["layers"][path]
        assert rec["sparsity"] == "storage-only" and rec["encoding"] == "bitmask"
        assert rec["sparsity_achieved"] == pytest.approx(1 - kept / math.prod(shape))
        assert rec["sparsity_achieved"] >= rec["sparsity_requested"] - 1e-3
        total_zero += math.prod(shape) - kept
        total += math.prod(shape)
    assert m["sparsity_achieved"] == pytest.approx(total_zero / total)
    assert meta["sparse"] == {"net.0": 0.8, "net.2": 0.6, "net.4": 0.8}
    assert m["layers"]["net.0"]["mode"] == "int-compute"  # dense integer kernel runs it

    dense = compress(
        mlp,
        Policy.from_dict({"quant": SPARSE["quant"], "finetune": {"epochs": 1}}),
        out_dir=tmp_path / "dense",
        teacher=baseline,
        settings=QUICK,
    )
    assert "sparsity" not in dense.metrics
    encoded = sum(
        tensors[k].numel() * tensors[k].element_size() for k in tensors if ".weight." in k
    )
    _, dense_tensors = read(dense.artifact)
    dense_bytes = sum(
        t.numel() * t.element_size() for k, t in dense_tensors.items() if ".weight" in k
    )
    assert encoded < 0.5 * dense_bytes
    assert dense.metrics["size_bytes"] - m["size_bytes"] >= dense_bytes - encoded - 2048


def test_low_sparsity_stays_dense_where_the_bitmask_costs_more(mlp, baseline, tmp_path):
    policy = Policy.from_dict({"prune": {"sparsity": {"default": 0.05}}, "quant": {"default": 8}})
    result = compress(mlp, policy, out_dir=tmp_path, teacher=baseline, settings=QUICK)
    rec = result.metrics["layers"]["net.0"]
    assert rec["encoding"] == "dense" and rec["sparsity_achieved"] >= 0.05 - 1e-3
    _, tensors = read(result.artifact)
    assert "net.0.weight.int8" in tensors and "net.0.weight.mask" not in tensors


def test_unstructured_space_searches_sparsity_per_layer(mlp):
    resolved = load_space("unstructured").resolve(mlp.model, mlp.example_inputs)
    names = resolved.param_names
    assert {"sparsity.net.0", "sparsity.net.2", "sparsity.net.4"} <= set(names)
    assert not any(n.startswith("prune.") for n in names)
    params = {
        p.name: p.nearest(p.low if p.low is not None else p.choices[0]) for p in resolved.params
    }
    params["sparsity.net.2"] = 0.7
    policy = resolved.policy_from_params(params)
    assert policy.sparsity_layers["net.2"] == 0.7
    assert resolve_sparsity(mlp.model, policy) == {"net.2": 0.7}
    base = resolved.params_for_policy("prune30-int8")
    assert all(base[n] == 0.0 for n in names if n.startswith("sparsity."))
    # spaces without a sparsity rule make the same policies as before
    old = load_space("default").resolve(mlp.model, mlp.example_inputs)
    assert "sparsity" not in old.policy_from_params({}).to_dict()["prune"]


def test_inspect_shows_the_sparsity_dimensions(mlp):
    from autocompress.reporting.inspect import describe

    text = describe(mlp, "unstructured", width=200)
    assert "sparsity.net.0 [0, 0.9] step 0.1" in text and "sparsity.net.4" in text
    assert "dimension: 9 (6 layer parameters, 3 global)" in text
    assert "sparsity" not in describe(mlp, "default", width=200)  # no column when unused


def test_onnxruntime_records_its_zeros_as_dense(mlp, tmp_path):
    pytest.importorskip("onnxruntime")
    policy = Policy.from_dict({"prune": {"sparsity": {"default": 0.8}}, "quant": {"default": 8}})
    result = compress(mlp, policy, out_dir=tmp_path, target="onnxruntime", settings=QUICK)
    assert result.metrics["sparsity"] == "dense"  # ORT stores and runs initializers densely
    assert result.metrics["sparsity_achieved"] >= 0.8 - 1e-3


def test_an_all_zero_row_quantizes_to_zero_codes_with_a_usable_scale():
    from autocompress.techniques.quantize import quantize_weight

    w = torch.tensor([[0.0, 0.0, 0.0], [0.5, -1.0, 0.25]])
    codes, scale = quantize_weight(w, 8)
    assert codes[0].tolist() == [0, 0, 0] and scale[0] == pytest.approx(1 / 127)
    assert scale[1] == pytest.approx(1 / 127) and codes[1].tolist() == [64, -127, 32]
