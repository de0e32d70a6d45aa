"""Where the student trains (``autocompress.device``): device names, placement, precision.

The CPU cases run everywhere; the CUDA cases run where ``torch.cuda.is_available()`` (the skip
reason is on ``.ci/allowed-skips``)."""

from __future__ import annotations

import json
from collections import namedtuple

import pytest
import torch
from _support.models import cnn_task, encoder_task, mlp_task

from autocompress import Policy, compress
from autocompress.api import run_search
from autocompress.device import (
    DeviceLoader,
    Training,
    on_device,
    resolve_device,
    to_device,
)
from autocompress.errors import ConfigError
from autocompress.study.config import SearchConfig
from autocompress.study.session import STUDY_KEYS
from autocompress.techniques.distill import TeacherCache

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(
    not CUDA, reason="needs a CUDA device (torch.cuda.is_available() is False)"
)

POLICY = {
    "prune": {"default": 0.5},
    "quant": {"default": 8},
    "finetune": {"lambda": 0.0, "epochs": 1, "lr": 0.001},
}


def test_device_names_resolve_or_fail_in_one_line():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if CUDA else "cpu")
    with pytest.raises(ConfigError, match=r"device: 'tpu' is not a device"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match=r"device: 'cuda:99'"):
        resolve_device("cuda:99")
    if not CUDA:
        with pytest.raises(ConfigError, match="PyTorch sees no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="finetune.precision: 'fp16' needs a CUDA device"):
        Training.resolve("cpu", precision="fp16")
    with pytest.raises(ConfigError, match="finetune.precision: 'int4' is not one of"):
        Training.resolve("cpu", precision="int4")
    assert Training.resolve("cpu", precision="bf16").record() == {
        "device": "cpu",
        "precision": "bf16",
    }


def test_batches_of_every_shape_move_and_loaders_stay_reiterable():
    pair = namedtuple("pair", "ids mask")
    batch = ({"ids": torch.ones(2), "n": 3}, [torch.zeros(1)], pair(torch.ones(1), None))
    moved = to_device(batch, torch.device("cpu"))
    assert isinstance(moved[2], pair) and moved[0]["n"] == 3 and moved[1][0].shape == (1,)
    loader = DeviceLoader([(torch.ones(2), torch.tensor(1))] * 3, torch.device("cpu"))
    assert len(loader) == 3 and len(list(loader)) == len(list(loader)) == 3
    task = mlp_task(n=64, epochs=0)
    assert on_device(task, torch.device("cpu")) is task  # no copy on the CPU


def test_teacher_cache_ships_cpu_tensors_after_moving():
    task = mlp_task(n=64, epochs=0)
    cache = TeacherCache(task).fill()
    before = [o.clone() for o in cache.outputs]
    device = resolve_device("auto")
    cache.to(device)
    assert all(o.device.type == device.type for o in cache.outputs)
    for index, (inputs, targets) in enumerate(task.train_loader):  # hits, on the device
        out, _ = cache.get(index, inputs, targets)
        assert out.device.type == device.type and torch.equal(out.cpu(), before[index])
    assert cache.computed_batches == len(before)  # served from the cache, not recomputed
    outputs, _, _ = cache.state()  # what goes to another process: CPU tensors, same values
    assert all(o.device.type == "cpu" for o in outputs)
    assert all(torch.equal(a, b) for a, b in zip(outputs, before, strict=True))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compress_records_where_and_how_the_student_trained(tmp_path, precision):
    task = cnn_task(n=128, epochs=1)
    training = Training.resolve("cpu", precision=precision)
    result = compress(task, Policy.from_dict(POLICY), out_dir=tmp_path, training=training)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["trained_on"] == {"device": "cpu", "precision": precision}
    assert 0.0 <= result.metrics["accuracy"] <= 1.0
    assert next(result.model.parameters()).device.type == "cpu"  # deployed on the CPU


def test_default_training_on_a_cpu_machine_is_the_cpu_and_deterministic(tmp_path):
    task = mlp_task(n=128, epochs=1)
    policy = Policy.from_dict(POLICY)
    a = compress(task, policy, out_dir=tmp_path / "a", training="cpu").metrics
    b = compress(task, policy, out_dir=tmp_path / "b").metrics  # training="auto"
    assert a["trained_on"]["device"] == "cpu"
    assert b["trained_on"]["device"] == ("cuda:0" if CUDA else "cpu")
    if not CUDA:  # auto is the CPU here: the same student, bit for bit
        assert a["accuracy"] == b["accuracy"] and a["size_bytes"] == b["size_bytes"]


def test_a_local_search_trains_where_the_config_says(tmp_path):
    cfg = SearchConfig(
        name="dev",
        task="tests/_support/tasks.py:mlp",
        backend="local",
        tracking=False,
        report_every=0,
        trials=2,
        epochs=1,
        scheduler="none",
        starts=("identity", "int8"),
        search_space="default",
        polish=False,
        device="cpu",
        finetune={"precision": "bf16"},
        out=str(tmp_path / "run"),
    )
    assert "device" not in STUDY_KEYS  # a search resumes on another device
    result = run_search(cfg)
    done = [r for r in result.trials if r["state"] == "complete"]
    for r in done:  # a trial without fine-tuning records no precision
        epochs = r["policy"]["finetune"]["epochs"]
        want = {"device": "cpu", "precision": "bf16" if epochs else None}
        assert r["metrics"]["trained_on"] == want, r["metrics"]["trained_on"]
    assert any(r["policy"]["finetune"]["epochs"] for r in done)


@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_trains_and_the_cpu_runtime_measures(tmp_path, precision):
    task = encoder_task(n=64, epochs=1)
    training = Training.resolve("cuda", precision=precision)
    policy = Policy.from_dict(POLICY)
    result = compress(task, policy, out_dir=tmp_path / "cuda", training=training)
    assert result.metrics["trained_on"]["device"].startswith("cuda")
    assert result.metrics["trained_on"]["precision"] == precision
    assert next(result.model.parameters()).device.type == "cpu"
    cpu = compress(task, policy, out_dir=tmp_path / "cpu", training="cpu")
    assert sorted(p.name for p in (tmp_path / "cuda").iterdir()) == sorted(
        p.name for p in (tmp_path / "cpu").iterdir()
    )  # the same artifact format whichever device trained it
    assert cpu.metrics["size_bytes"] == pytest.approx(result.metrics["size_bytes"], rel=0.01)
