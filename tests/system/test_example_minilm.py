"""The MiniLM example on a tiny subset: the metric is a true Spearman on the teacher's real
sentence embeddings, the wrapper exports to ONNX, and one compress runs end to end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from autocompress import Policy, compress
from autocompress.pipeline._compress import MeasureSettings
from autocompress.targets.onnx import OrtModule, export_onnx

ROOT = Path(__file__).resolve().parents[2]
WORD_PAIRS = 40


def _example():
    spec = importlib.util.spec_from_file_location(
        "minilm_example_task", ROOT / "examples" / "minilm" / "task.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return _example()


@pytest.fixture(scope="module")
def task(example):
    return example.build_task(sentences=32, word_pairs_limit=WORD_PAIRS)


def test_teacher_metric_is_spearman_of_sentence_transformers_embeddings(example, task):
    from sentence_transformers import SentenceTransformer

    data = Path(str(example.DATA))
    rows = [
        line.split("\t")
        for line in (data / "wordsim353.tsv").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ][:WORD_PAIRS]
    st = SentenceTransformer(example.model_path(), device="cpu", local_files_only=True)
    left = st.encode([r[0].lower() for r in rows], convert_to_numpy=True, normalize_embeddings=True)
    right = st.encode(
        [r[1].lower() for r in rows], convert_to_numpy=True, normalize_embeddings=True
    )
    expected = spearmanr((left * right).sum(axis=1), [float(r[2]) for r in rows]).statistic

    assert task.evaluate(task.model) == pytest.approx(expected, abs=1e-5)
    assert task.example_inputs[0].shape == (1, example.SEQ_LEN)
    assert len(task.train_loader) == 1 and task.distill_kind == "embedding"


def test_spearman_handles_ties_like_scipy(example):
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 5, 50), rng.normal(size=50)
    assert example.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_encoder_exports_to_onnx_with_the_same_embedding(task, tmp_path):
    path = export_onnx(task.model, task.example_inputs, tmp_path / "teacher.onnx")
    (ids, mask), _ = task.train_loader[0]
    with torch.no_grad():
        expected = task.model(ids[:4], mask[:4])
    got = OrtModule(path, threads=1)(ids[:4], mask[:4])
    assert torch.allclose(got, expected, atol=1e-4)


def test_compress_prunes_ffn_neurons_and_quantizes(task, tmp_path):
    policy = Policy.from_dict(
        {
            "prune": {"layers": {"bert.encoder.layer.*.intermediate.dense": 0.25}},
            "quant": {"default": 8},
            "distill": {"alpha": 0.5},
            "finetune": {"epochs": 1, "lr": 2e-5},
        }
    )
    result = compress(task, policy, out_dir=tmp_path, settings=MeasureSettings(repeats=20))
    ffn = result.model.bert.encoder.layer[0].intermediate.dense
    assert ffn.out_features == 1152  # 1536 neurons, a quarter removed
    assert result.metrics["layers"]["bert.encoder.layer.0.intermediate.dense"]["bits"] == 8
    assert result.metrics["size_bytes"] == (tmp_path / "model.pt").stat().st_size
    assert result.metrics["size_bytes"] < result.metrics["teacher"]["size_bytes"]
    teacher = result.metrics["teacher"]["accuracy"]
    assert result.metrics["accuracy"] > teacher - 0.1  # 40 WordSim pairs: a loose band


def test_hf_bert_space_resolves_ffn_and_bits_per_layer(task):
    from autocompress.study.space import SearchSpace, load_space

    space = load_space("hf-bert")
    assert SearchSpace.from_dict(space.to_dict()) == space
    resolved = space.resolve(task.model, task.example_inputs)
    names = set(resolved.param_names)
    ffn = {f"prune.bert.encoder.layer.{i}.intermediate.dense" for i in range(6)}
    assert ffn <= names
    assert "bits.bert.encoder.layer.0.attention.output" in names
    assert "bits.bert.encoder.layer.5.output" in names
    policy = resolved.policy_from_params({n: resolved.param(n).nearest(0) for n in names})
    linears = {k: v for k, v in policy.quant_layers.items() if "embeddings" not in k}
    assert set(linears.values()) == {8}  # every Linear offered int8
    assert len(linears) == 36 and set(policy.prune_layers.values()) == {0.0}
    tables = {k: v for k, v in policy.quant_layers.items() if "embeddings" in k}
    assert tables == {  # the word and position tables offered int8; token types stay float
        "bert.embeddings.word_embeddings": 8,
        "bert.embeddings.position_embeddings": 8,
        "bert.embeddings.token_type_embeddings": 32,
    }
