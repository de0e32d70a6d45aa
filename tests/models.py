"""Tiny real models and generated data for the tests."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from autocompress import Task


class Block(nn.Module):
    def __init__(self, c: int, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class ResNetish(nn.Module):
    """Residual adds, a depthwise conv, a concatenation, norms."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.layer1 = Block(width)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pw = nn.Conv2d(width, width, 1)
        self.merge = nn.Conv2d(2 * width, 2 * width, 1, bias=False)
        self.layer2 = Block(2 * width)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.layer1(x)
        x = self.merge(torch.cat([x, self.pw(F.relu(self.dw(x)))], dim=1))
        x = self.layer2(x)
        return self.fc(x.mean(dim=(2, 3)))


class MLP(nn.Module):
    def __init__(self, d_in: int = 64, hidden: int = 64, classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.net(x)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):  # (B, T, D)
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

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class TinyEncoder(nn.Module):
    """Returns an embedding per sequence; a classifier head sits on top for the labels."""

    def __init__(self, d_in: int = 8, dim: int = 32, heads: int = 4, ffn: int = 64) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, dim)
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, ffn) for _ in range(2)])
        self.head = nn.Linear(dim, 4)

    def forward(self, x):  # (B, T, d_in)
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x.mean(dim=1))


def _batches(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _train(model: nn.Module, batches, epochs: int, lr: float = 3e-3) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for x, y in batches:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model.eval()


def _classification(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, name: str
) -> Task:
    n = int(0.8 * len(x))
    train = _batches(x[:n], y[:n], 32)
    val = _batches(x[n:], y[n:], 64)
    _train(model, train, epochs)
    return Task(model=model, train_loader=train, val_loader=val, example_inputs=(x[:1],), name=name)


def cnn_task(seed: int = 0, width: int = 16, n: int = 512, epochs: int = 3) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    y = (x[:, 0, :6].mean(dim=(1, 2)) > 0).long() * 5 + (x[:, 0, :, :6].mean(dim=(1, 2)) > 0).long()
    torch.manual_seed(seed)
    return _classification(ResNetish(width), x, y, epochs, "cnn")


def mlp_task(seed: int = 0, n: int = 512, epochs: int = 5) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    w = torch.randn(64, 10, generator=g)
    y = (x @ w).argmax(dim=1)
    torch.manual_seed(seed)
    return _classification(MLP(), x, y, epochs, "mlp")


def encoder_task(seed: int = 0, n: int = 256, epochs: int = 4) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, 8, generator=g)
    y = x.sum(dim=1)[:, :4].argmax(dim=1)
    torch.manual_seed(seed)
    return _classification(TinyEncoder(), x, y, epochs, "encoder")


class GroupedConcatCNN(nn.Module):
    """A model we did not write: residual adds, a depthwise-separable block, and a block that
    concatenates a grouped 3x3 conv (groups=4) with a 1x1 conv (the issue's crash)."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        )
        self.res = Block(width)
        self.dw = nn.Conv2d(width, width, 3, padding=1, groups=width, bias=False)
        self.dw_bn = nn.BatchNorm2d(width)
        self.pw = nn.Conv2d(width, 2 * width, 1, bias=False)
        self.grouped = nn.Conv2d(2 * width, 2 * width, 3, padding=1, groups=4, bias=False)
        self.point = nn.Conv2d(2 * width, width, 1, bias=False)
        self.cat_bn = nn.BatchNorm2d(3 * width)
        self.res2 = Block(3 * width, groups=4)
        self.fc = nn.Linear(3 * width, classes)

    def forward(self, x):
        x = self.res(F.relu(self.stem(x)))
        x = F.relu(self.pw(F.relu(self.dw_bn(self.dw(x)))))
        x = F.relu(self.cat_bn(torch.cat([self.grouped(x), self.point(x)], dim=1)))
        x = self.res2(x)
        return self.fc(x.mean(dim=(2, 3)))


def _image_task(
    model: nn.Module, seed: int, n: int, epochs: int, name: str, size: int = 12
) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    half = size // 2
    y = (x[:, 0, :half].mean(dim=(1, 2)) > 0).long() * 5 + (
        x[:, 0, :, :half].mean(dim=(1, 2)) > 0
    ).long()
    return _classification(model, x, y, epochs, name)


def grouped_concat_task(seed: int = 0, width: int = 16, n: int = 128, epochs: int = 1) -> Task:
    torch.manual_seed(seed)
    return _image_task(GroupedConcatCNN(width), seed, n, epochs, "grouped-concat")
