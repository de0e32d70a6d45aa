"""The target registry: every target speaks the protocol; the pipeline finds targets by name."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from _support.models import cnn_task
from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.policy import SUPPORTED_BITS
from autocompress.reporting.inspect import describe
from autocompress.targets import (
    HOOKS,
    MODES,
    TARGETS,
    TargetBase,
    export_formats,
    get_target,
    register_target,
    target_of,
)
from autocompress.targets.pytorch import TorchTarget


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_declares_modes_for_its_bits(name):
    target = get_target(name)
    assert target.name == name and target.artifact_name.startswith("model.")
    for module in (nn.Linear(4, 4), nn.Conv2d(4, 4, 3)):
        for bits in target.bits:
            assert target.mode(module, bits, None) in MODES
        assert target.mode(module, 32, None) == "float"
    assert target_of(Path(target.artifact_name)) is target


def test_onnxruntime_modes_by_layer_type():
    target = get_target("onnxruntime")
    conv, linear = nn.Conv2d(4, 4, 3), nn.Linear(4, 4)
    assert target.mode(conv, 8) == "int-compute" and target.mode(conv, 4) == "weight-only"
    assert target.mode(linear, 8) == "int-compute" and target.mode(linear, 4) == "int-compute"
    # 2-bit MatMulNBits: int8 compute where this CPU's MLAS has the kernel (probed)
    from autocompress.targets._matmul import nbits_int8

    two = "int-compute" if nbits_int8(2, 4) else "weight-only"
    assert target.mode(linear, 2) == two and target.mode(linear, 16) == "weight-only"


def test_unknown_target_is_one_clear_error():
    with pytest.raises(AutoCompressError, match="unknown target 'tflite'.*onnxruntime"):
        get_target("tflite")


def test_inspect_shows_each_offered_bit_width_with_its_mode():
    task = cnn_task(epochs=0)
    text = describe(task, "default", target="onnxruntime", width=250)
    assert "mode on onnxruntime" in text
    assert "8: int-compute" in text and "weight-only" in text
    torch_text = describe(task, "default", target="torch", width=250)
    assert "mode on torch" in torch_text
    ov_text = describe(task, "default", target="openvino", width=250)
    assert "mode on openvino" in ov_text and "{4, 8, 16, 32}" in ov_text
    et_text = describe(task, "int8", target="executorch", width=250)  # default offers 4, 16
    assert "mode on executorch" in et_text and "{8, 32}" in et_text


# targets that run fewer bit-widths than a policy may ask for (onnxruntime and torch run all)
PARTIAL = sorted(n for n in TARGETS if set(SUPPORTED_BITS) - set(TARGETS[n].bits))


def test_a_target_runs_fewer_bit_widths_than_policies_offer():
    assert "openvino" in PARTIAL and "executorch" in PARTIAL


@pytest.mark.parametrize("name", PARTIAL)
def test_every_target_rejects_bits_it_cannot_run_in_one_line(name, tmp_path):
    from autocompress import Policy
    from autocompress.pipeline._compress import compress

    target = get_target(name)
    bad = min(set(SUPPORTED_BITS) - set(target.bits))
    with pytest.raises(AutoCompressError, match=f"{bad} bits cannot be honoured.*{name}") as e:
        compress(cnn_task(epochs=0), Policy.from_dict({"quant": {"default": bad}}), target=name)
    assert "\n" not in str(e.value)


_RELOAD = """
import sys
import torch
from autocompress.pipeline._compress import load_artifact
model = load_artifact(sys.argv[1])
torch.save(model(torch.load(sys.argv[2])), sys.argv[3])
"""


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_target_saves_and_reloads_in_a_fresh_process(name, tmp_path):
    import subprocess
    import sys

    import torch
    from conftest import ENV, MLP_TASK

    from autocompress import Policy
    from autocompress.pipeline._compress import MeasureSettings, compress
    from autocompress.task import load_task

    task = load_task(MLP_TASK)  # a task with a spec: the fresh process rebuilds it from there
    policy = Policy.from_dict({"quant": {"default": 8}, "finetune": {"epochs": 0}})
    settings = MeasureSettings(repeats=20, warmup=2)
    result = compress(task, policy, target=name, out_dir=tmp_path / "a", settings=settings)
    x = torch.cat([b[0] for b in task.val_loader])[:16]
    torch.save(x, tmp_path / "x.pt")
    (tmp_path / "reload.py").write_text(_RELOAD)
    args = [str(result.artifact), str(tmp_path / "x.pt"), str(tmp_path / "y.pt")]
    run = subprocess.run(
        [sys.executable, str(tmp_path / "reload.py"), *args],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert torch.allclose(torch.load(tmp_path / "y.pt"), result.model(x), atol=1e-5)


# -- the hooks every target declares, and a target registered from a test --------------------


@dataclass(frozen=True)
class ToyTorchTarget(TorchTarget):
    """The torch target under another name: a target registered from outside the package."""

    name: str = "toy_torch"


@contextmanager
def toy_target():
    register_target(ToyTorchTarget())
    try:
        yield TARGETS["toy_torch"]
    finally:
        TARGETS.pop("toy_torch")


@pytest.mark.parametrize("name", [*sorted(TARGETS), "toy_torch"])
def test_every_target_declares_its_hooks(name, tmp_path):
    with toy_target():
        target = TARGETS[name]
        assert isinstance(target, TargetBase)
        for hook in HOOKS:  # declared, with a default where the target has nothing to say
            assert hasattr(type(target), hook), hook
        if name in ("openvino", "executorch"):
            try:
                target.require()
            except AutoCompressError:
                pytest.skip(f"{name}'s runtime is not installed")
        target.require()
        assert all(isinstance(line, str) for line in target.describe())
        assert target.native_format in export_formats()
        assert set(target.export_conversions) <= set(export_formats())
        if isinstance(target, TorchTarget):  # eager PyTorch: no runtime graph to record
            assert target.graph_record(tmp_path / target.artifact_name) is None
        else:
            assert type(target).graph_record is not TargetBase.graph_record


def test_a_target_registered_from_a_test_compresses(tmp_path):
    from autocompress import Policy
    from autocompress.pipeline._compress import MeasureSettings, compress, load_artifact

    task = cnn_task(epochs=0)
    policy = Policy.from_dict({"quant": {"default": 8}, "finetune": {"epochs": 0}})
    settings = MeasureSettings(repeats=20, warmup=2)
    with toy_target():
        result = compress(task, policy, target="toy_torch", out_dir=tmp_path, settings=settings)
        assert result.metrics["target"] == "toy_torch" and 0 <= result.metrics["accuracy"] <= 1
        assert "graph" not in result.metrics  # the inherited hook records none
        assert get_target("toy_torch").read_meta(result.artifact)["target"] == "toy_torch"
        assert load_artifact(result.artifact, task.model) is not None
    with pytest.raises(AutoCompressError, match="TargetBase"):
        register_target(object())  # type: ignore[arg-type]
