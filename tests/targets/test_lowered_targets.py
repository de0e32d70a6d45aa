"""What every target behind an extra (``openvino``, ``executorch``) promises alike: bit-widths
its runtime cannot run are one-line errors, and a missing extra is one line naming it (in
Python and at the CLI, exit 2), the other targets unaffected."""

from __future__ import annotations

import pytest
from _support import lowered
from conftest import ENV

from autocompress.errors import AutoCompressError

REFUSED_BITS = {"openvino": (2, 3), "executorch": (4, 16)}


@pytest.mark.parametrize(
    ("target", "bits"), [(t, b) for t, bits in REFUSED_BITS.items() for b in bits]
)
def test_bits_the_runtime_cannot_run_are_one_line_errors(cnn, tmp_path, target, bits):
    pytest.importorskip(target)
    with pytest.raises(AutoCompressError, match=f"{bits} bits cannot be honoured.*{target}") as e:
        lowered.apply_policy(cnn, {"quant": {"default": bits}}, tmp_path, target)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("target", REFUSED_BITS)
def test_missing_extra_is_one_line_naming_it(monkeypatch, target):
    lowered.assert_missing_extra_is_one_line(monkeypatch, target)


@pytest.mark.parametrize("target", REFUSED_BITS)
def test_cli_without_the_extra_exits_2_naming_it(tmp_path, target):
    lowered.assert_cli_without_extra_exits_2(tmp_path, target, ENV)
