"""A small transformer encoder on generated sequences: the second model family of
benchmarks/search_efficiency.py (a copy of the tests' TinyEncoder, four times wider).

The label of a sequence is the argmax of a fixed random projection of its tokens' mean; the
teacher is trained here in a few seconds, deterministically, on every load.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from autocompress import Task

SEED = 0
CACHE = Path(__file__).parent / ".cache"


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D)
        b, t, _ = x.shape
        shape = (b, t, self.num_heads, self.head_dim)
        q = self.q(x).reshape(shape).transpose(1, 2)
        k = self.k(x).reshape(shape).transpose(1, 2)
        v = self.v(x).reshape(shape).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, Dh)
        return self.proj(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Encoder(nn.Module):
    def __init__(
        self, d_in: int = 16, dim: int = 64, heads: int = 4, ffn: int = 128, classes: int = 4
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, dim)
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(2)])
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_in)
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(dim=1))


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
    model = Encoder()
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
        model.load_state_dict(Encoder().state_dict())
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        for _ in range(epochs):
            model.train()
            for xb, yb in train:
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
    torch.set_num_threads(threads)
