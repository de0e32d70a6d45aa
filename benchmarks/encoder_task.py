"""A small transformer encoder on generated sequences: the second model family of
benchmarks/search_efficiency.py (the tests' TinyEncoder, four times wider).

The label of a sequence is the argmax of a fixed random projection of its tokens' mean; the
teacher is trained here in a few seconds, deterministically, on every load.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

import torch
from torch import nn

from autocompress import Task

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # also where Ray loads it
from _support.models import TinyEncoder, fit  # noqa: E402

SEED = 0
CACHE = Path(__file__).parent / ".cache"


def _encoder() -> TinyEncoder:
    """The tests' TinyEncoder four times wider: 16 features in, width 64, 4 heads, FFN 128."""
    return TinyEncoder(d_in=16, dim=64, heads=4, ffn=128)


def _batches(x: torch.Tensor, y: torch.Tensor, size: int) -> list[tuple[torch.Tensor, ...]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def build_task(n: int = 1024, seq: int = 8, epochs: int = 10) -> Task:
    g = torch.Generator().manual_seed(SEED)
    x = torch.randn(n, seq, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    y = (x.mean(dim=1) @ w).argmax(dim=1)
    cut = int(0.8 * n)
    train, val = _batches(x[:cut], y[:cut], 64), _batches(x[cut:], y[cut:], 128)
    key = hashlib.sha256(Path(__file__).read_bytes() + torch.__version__.encode()).hexdigest()
    path = CACHE / f"encoder-{key[:12]}-{n}-{seq}-{epochs}.pt"
    model = _encoder()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        _train(model, train, epochs)
        CACHE.mkdir(exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return Task(
        model=model.eval(),
        train_loader=train,
        val_loader=val,
        example_inputs=(x[:1],),
        name="encoder",
    )


def _train(model: nn.Module, train: list[tuple[torch.Tensor, ...]], epochs: int) -> None:
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        torch.set_num_threads(1)  # two threads on shared cores are erratic (DESIGN)
        model.load_state_dict(_encoder().state_dict())
        fit(model, train, epochs, lr=2e-3, optimizer=torch.optim.AdamW)
    torch.set_num_threads(threads)
