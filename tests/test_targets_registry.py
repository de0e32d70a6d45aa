"""The target registry: every target speaks the protocol; the pipeline finds targets by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from models import cnn_task
from torch import nn

from autocompress.errors import AutoCompressError
from autocompress.inspect import describe
from autocompress.targets import MODES, TARGETS, get_target, target_of


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
