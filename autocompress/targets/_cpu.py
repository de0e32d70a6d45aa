"""What the CPU offers ONNX Runtime's int8 kernels: its model name and whether it has VNNI.

On AVX-512-VNNI / AVX-VNNI (and AMX) CPUs MLAS multiplies uint8 activations by int8 weights
with 32-bit accumulation. Without VNNI (AVX2 only) it uses ``vpmaddubsw``, which adds pairs of
u8·s8 products into int16 and saturates: full-range int8 weights then lose accuracy, 7-bit
weights (|q| <= 63) cannot overflow (``reduce_range``).
"""

from __future__ import annotations

import functools
import platform
from pathlib import Path

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "amx_tile")


@functools.cache
def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, frozenset[str]]:
    """(model name, flags) of the first CPU in ``path``; ("", {}) where it cannot be read."""
    try:
        text = Path(path).read_text()
    except OSError:
        return platform.processor(), frozenset()
    model, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
    return model, flags


def has_vnni(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU (or ``flags``) has a VNNI/AMX int8 dot-product instruction."""
    flags = cpu_info()[1] if flags is None else flags
    return any(f in flags for f in VNNI_FLAGS)


def cpu_record() -> dict[str, object]:
    """The CPU as benchmarks and artifact headers record it."""
    model, flags = cpu_info()
    return {
        "model": model,
        "vnni": has_vnni(flags),
        "avx2": "avx2" in flags,
        "avx512": any(f.startswith("avx512") for f in flags),
    }
