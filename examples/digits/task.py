"""Digits (scikit-learn's 8×8 handwritten digits) with a ResNet-style CNN teacher.

The teacher is trained here, deterministically, on first use (well under a minute on two
cores) and cached next to this file in ``.cache/``. Images are upsampled to 16×16 so the
network does real work: its latency at batch 1 on one thread is about a millisecond or more.

    autocompress inspect --task examples/digits/task.py:build_task --space grouped
    autocompress search examples/digits/search.yaml
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F

from autocompress import Task

CACHE = Path(__file__).parent / ".cache"
SEED = 0
EPOCHS = 6
BATCH = 64


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class DigitsResNet(nn.Module):
    """Three stages of two residual blocks (32, 64, 128 channels) on 16×16 inputs."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages = []
        c_in = widths[0]
        for i, w in enumerate(widths):
            stages.append(
                nn.Sequential(BasicBlock(c_in, w, stride=1 if i == 0 else 2), BasicBlock(w, w))
            )
            c_in = w
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(c_in, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 16, 16)
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


def load_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_train, y_train, x_val, y_val): 80/20 split fixed by a seeded permutation."""
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False)
    x = (x - 0.5) / 0.5
    y = torch.tensor(y, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED))
    x, y = x[perm], y[perm]
    n_train = int(0.8 * len(x))
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _batches(x: torch.Tensor, y: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def train_teacher(train: list[tuple[torch.Tensor, torch.Tensor]]) -> DigitsResNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = DigitsResNet()
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=3e-3, total_steps=EPOCHS * len(train)
        )
        order = torch.Generator().manual_seed(SEED)
        for _ in range(EPOCHS):
            model.train()
            for i in torch.randperm(len(train), generator=order).tolist():
                xb, yb = train[i]
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
                sched.step()
    return model.eval()


def _cache_key() -> str:
    src = Path(__file__).read_bytes() + torch.__version__.encode()
    return hashlib.sha256(src).hexdigest()[:12]


def build_task() -> Task:
    x_train, y_train, x_val, y_val = load_data()
    train, val = _batches(x_train, y_train), _batches(x_val, y_val)
    path = CACHE / f"teacher-{_cache_key()}.pt"
    model = DigitsResNet()
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        model.eval()
    else:
        model = train_teacher(train)
        CACHE.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(model.state_dict(), tmp)
        tmp.replace(path)
    return Task(
        model=model,
        train_loader=train,
        val_loader=val,
        example_inputs=(x_val[:1],),
        name="digits-cnn",
    )
