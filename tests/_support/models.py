"""Tiny real models and generated data for the tests."""

from __future__ import annotations

from typing import Any

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


def fit(
    model: nn.Module,
    batches,
    epochs: int,
    lr: float = 3e-3,
    *,
    loss=F.cross_entropy,
    optimizer=torch.optim.Adam,
    output_fn=None,
) -> nn.Module:
    """Train a teacher: ``epochs`` passes of ``optimizer`` on ``loss``; returned in eval mode.
    The benchmarks train theirs with it too (their published numbers depend on this loop)."""
    output_fn = output_fn or (lambda out: out)
    opt = optimizer(model.parameters(), lr=lr)
    for _ in range(epochs):
        model.train()
        for x, y in batches:
            opt.zero_grad()
            loss(output_fn(model(x)), y).backward()
            opt.step()
    return model.eval()


def _classification(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, name: str, **task: Any
) -> Task:
    n = int(0.8 * len(x))
    train = _batches(x[:n], y[:n], 32)
    val = _batches(x[n:], y[n:], 64)
    fit(
        model,
        train,
        epochs,
        output_fn=task.get("output_fn"),
        loss=task.get("loss", F.cross_entropy),
    )
    return Task(
        model=model,
        train_loader=train,
        val_loader=val,
        example_inputs=(x[:1],),
        name=name,
        **task,
    )


def _fit(seed: int, make, data, n: int, epochs: int, name: str, **task: Any) -> Task:
    """The task of ``make()``'s model (built after ``torch.manual_seed(seed)``) trained
    ``epochs`` on ``data(seed, n)``."""
    x, y = data(seed, n)
    torch.manual_seed(seed)
    return _classification(make(), x, y, epochs, name, **task)


def _family(name: str, make, data, n: int = 128, epochs: int = 1, **task: Any):
    """The task builder ``(seed=0, n=n, epochs=epochs) -> Task`` of one model family."""

    def build(seed: int = 0, n: int = n, epochs: int = epochs) -> Task:
        return _fit(seed, make, data, n, epochs, name, **task)

    return build


def _noise(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _images(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """12x12 noise images; ten classes from the signs of the top and the left half's means."""
    x = _noise(seed, n, 1, 12, 12)
    y = (x[:, 0, :6].mean(dim=(1, 2)) > 0).long() * 5 + (x[:, 0, :, :6].mean(dim=(1, 2)) > 0).long()
    return x, y


def _vectors(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """64-d noise; ten classes from a random linear map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 64, generator=g)
    w = torch.randn(64, 10, generator=g)
    return x, (x @ w).argmax(dim=1)


def _sequences(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Six 8-d tokens; four classes from the largest of the first four summed features."""
    x = _noise(seed, n, 6, 8)
    return x, x.sum(dim=1)[:, :4].argmax(dim=1)


def _tokens(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Eight token ids (vocabulary 100); four classes from the first four ids' sum."""
    x = torch.randint(0, 100, (n, 8), generator=torch.Generator().manual_seed(seed))
    return x, (x[:, :4].sum(dim=1) % 4).long()


def _pixel_masks(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 noise images; three classes per pixel (below -0.5, between, above 0.5)."""
    x = _noise(seed, n, 1, 8, 8)
    return x, (x[:, 0] > 0.5).long() + (x[:, 0] > -0.5).long()  # (B, H, W)


def _signals(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """64-sample noise signals; four classes from the signs of each half's mean."""
    x = _noise(seed, n, 1, 64)
    return x, (x[:, 0, :32].mean(dim=1) > 0).long() * 2 + (x[:, 0, 32:].mean(dim=1) > 0).long()


def _patches(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 noise images; four classes from the signs of the top-left and bottom-right sums."""
    x = _noise(seed, n, 1, 8, 8)
    y = (x[:, 0, :4, :4].sum(dim=(1, 2)) > 0).long() * 2 + (x[:, 0, 4:, 4:].sum(dim=(1, 2)) > 0)
    return x, y.long()


def _quadrants(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images, the class's quadrant brighter."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 12, 12, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    for q in range(4):
        r, c = divmod(q, 2)
        x[y == q, :, 6 * r : 6 * r + 6, 6 * c : 6 * c + 6] += 0.7
    return x, y


def cnn_task(seed: int = 0, width: int = 16, n: int = 512, epochs: int = 3) -> Task:
    return _fit(seed, lambda: ResNetish(width), _images, n, epochs, "cnn")


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


# -- model families the pruner must handle (tiny widths; each with a *_task factory) ----------


class ProjectionBlock(nn.Module):
    """A ResNet basic block whose shortcut is a strided 1x1 projection when shapes change."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ResNet(nn.Module):
    """Two stages with projection shortcuts."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        )
        self.layer1 = nn.Sequential(ProjectionBlock(width, width), ProjectionBlock(width, width))
        self.layer2 = nn.Sequential(
            ProjectionBlock(width, 2 * width, 2), ProjectionBlock(2 * width, 2 * width)
        )
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.layer2(self.layer1(F.relu(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


class ResNeXtBlock(nn.Module):
    """1x1 reduce, grouped 3x3 (cardinality 4), 1x1 expand, projection shortcut."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, cardinality: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.grouped = nn.Conv2d(c_mid, c_mid, 3, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm2d(c_mid)
        self.expand = nn.Conv2d(c_mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn1(self.reduce(x)))
        y = F.relu(self.bn2(self.grouped(y)))
        return F.relu(self.bn3(self.expand(y)) + self.shortcut(x))


class ResNeXt(nn.Module):
    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.block1 = ResNeXtBlock(width, width, 2 * width)
        self.block2 = ResNeXtBlock(2 * width, 2 * width, 2 * width)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = self.block2(self.block1(F.relu(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, reduced: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, reduced, 1)
        self.fc2 = nn.Conv2d(reduced, c, 1)

    def forward(self, x):
        s = x.mean(dim=(2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    """MobileNetV2: 1x1 expand, depthwise 3x3, squeeze-excitation, 1x1 project, residual."""

    def __init__(self, c_in: int, c_out: int, expand: int = 4, stride: int = 1) -> None:
        super().__init__()
        hidden = c_in * expand
        self.expand = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()
        )
        self.dw = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
        )
        self.se = SqueezeExcite(hidden, max(1, hidden // 4))
        self.project = nn.Sequential(nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = self.project(self.se(self.dw(self.expand(x))))
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU6()
        )
        self.blocks = nn.Sequential(
            InvertedResidual(width, width),
            InvertedResidual(width, 2 * width, stride=2),
            InvertedResidual(2 * width, 2 * width),
        )
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(F.relu(self.bn(x)))], dim=1)


class DenseNet(nn.Module):
    """Each layer's output is concatenated onto everything before it."""

    def __init__(self, width: int = 8, growth: int = 4, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.dense = nn.Sequential(*(DenseLayer(width + i * growth, growth) for i in range(3)))
        self.transition = nn.Conv2d(width + 3 * growth, width, 1, bias=False)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.transition(self.dense(self.stem(x)))
        return self.fc(F.relu(x).mean(dim=(2, 3)))


class UNet(nn.Module):
    """Down, up, skip concatenation; the output is a per-pixel class map (the output conv)."""

    def __init__(self, width: int = 8, classes: int = 3) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(1, width, 3, padding=1)
        self.enc2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec = nn.Conv2d(2 * width, width, 3, padding=1)
        self.out = nn.Conv2d(width, classes, 1)

    def forward(self, x):
        e1 = F.relu(self.enc1(x))
        e2 = F.relu(self.enc2(e1))
        d = F.relu(self.dec(torch.cat([self.up(e2), e1], dim=1)))
        return self.out(d)


class TwoHeads(nn.Module):
    """A shared trunk with a main head and an auxiliary head; returns both (a tuple)."""

    def __init__(self, width: int = 8, classes: int = 10) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, padding=1)
        )
        self.head = nn.Linear(2 * width, classes)
        self.aux = nn.Sequential(nn.Linear(2 * width, width), nn.ReLU(), nn.Linear(width, 2))

    def forward(self, x):
        z = F.relu(self.trunk(x)).mean(dim=(2, 3))
        return self.head(z), self.aux(z)


class AudioCNN(nn.Module):
    """1-D convs over a waveform-like signal (B, 1, T) with a residual add."""

    def __init__(self, width: int = 8, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, width, 9, stride=2, padding=4)
        self.bn1 = nn.BatchNorm1d(width)
        self.conv2 = nn.Conv1d(width, width, 5, padding=2, groups=2)
        self.bn2 = nn.BatchNorm1d(width)
        self.conv3 = nn.Conv1d(width, 2 * width, 3, padding=1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(x + self.bn2(self.conv2(x)))
        return self.fc(F.relu(self.conv3(x)).mean(dim=2))


class MHAEncoder(nn.Module):
    """nn.MultiheadAttention (packed q/k/v) plus an FFN, residual stream, classifier head."""

    def __init__(
        self, d_in: int = 8, dim: int = 16, heads: int = 4, ffn: int = 32, add_bias_kv: bool = False
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(d_in, dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, add_bias_kv=add_bias_kv)
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn)
        self.fc2 = nn.Linear(ffn, dim)
        self.head = nn.Linear(dim, 4)

    def forward(self, x):  # (B, T, d_in)
        x = self.embed(x)
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        return self.head(x.mean(dim=1))


class BertClassifier(nn.Module):
    """A real Hugging Face ``BertModel`` (built locally from a config) with a linear head."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        config = BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=100,
            max_position_embeddings=32,
        )
        self.bert = BertModel(config, add_pooling_layer=False)
        self.head = nn.Linear(32, 4)

    def forward(self, ids):  # (B, T) token ids
        return self.head(self.bert(input_ids=ids).last_hidden_state.mean(dim=1))


def _pixel_accuracy(model: nn.Module, val_loader) -> float:
    with torch.inference_mode():
        hits = [(model(x).argmax(dim=1) == y).float().mean() for x, y in val_loader]
    return float(torch.stack(hits).mean())


class TinyViT(nn.Module):
    """A pre-norm vision transformer on ``nn.TransformerEncoder`` (packed
    ``nn.MultiheadAttention``): patch embedding, class token, positions, classifier."""

    def __init__(self, dim: int = 32, heads: int = 4, layers: int = 2, classes: int = 4) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, dim, kernel_size=2, stride=2)  # 8x8 -> 4x4 patches
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, 17, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):  # (B, 1, 8, 8)
        tokens = self.patch(x).flatten(2).transpose(1, 2)  # (B, 16, dim)
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos
        return self.head(self.norm(self.encoder(tokens)[:, 0]))


class GPT2Classifier(nn.Module):
    """A Hugging Face GPT-2 decoder built from a config (``Conv1D`` projections, packed q/k/v
    in ``c_attn``, causal mask), classifying from the last token's logits; no cache."""

    def __init__(self, dim: int = 32, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        config = GPT2Config(
            vocab_size=100,
            n_positions=16,
            n_embd=dim,
            n_layer=layers,
            n_head=heads,
            bos_token_id=0,
            eos_token_id=0,
        )
        self.lm = GPT2LMHeadModel(config)

    def forward(self, ids):  # (B, T) token ids
        return self.lm(input_ids=ids, use_cache=False).logits[:, -1, :4]


def converted_bn_task(seed: int = 0, n: int = 512, epochs: int = 4) -> Task:
    """A teacher as converted from another framework: trained, then every BatchNorm's
    ``momentum`` set to 0 (its running statistics never move again)."""
    x, y = _quadrants(seed, n)
    torch.manual_seed(seed)
    task = _classification(ResNet(classes=4), x, y, epochs, "converted-bn")
    for m in task.model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    return task


class _TwoConvs(nn.Module):
    """``conv1 -> bn1 -> conv2 -> bn2`` (``width`` channels from one, same padding) and a linear
    ``fc`` from ``features`` to ``classes``: the trunk of the converted models below."""

    def __init__(self, conv, norm, kernel: int, width: int, features: int, classes: int) -> None:
        super().__init__()
        self.conv1 = conv(1, width, kernel, padding=kernel // 2)
        self.bn1 = norm(width)
        self.conv2 = conv(width, width, kernel, padding=kernel // 2)
        self.bn2 = norm(width)
        self.fc = nn.Linear(features, classes)


class SigmoidTagger(_TwoConvs):
    """A converted audio tagger: 1-D convs with BatchNorm, sigmoid multi-label outputs."""

    def __init__(self, width: int = 8, labels: int = 4) -> None:
        super().__init__(nn.Conv1d, nn.BatchNorm1d, 5, width, width * 4, labels)

    def forward(self, x):  # (B, 1, T)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.adaptive_avg_pool1d(F.relu(self.bn2(self.conv2(x))), 4)  # (B, C, 4)
        return torch.sigmoid(self.fc(x.flatten(1)))


def label_accuracy(model: nn.Module, val_loader) -> float:
    """Fraction of (sample, label) pairs on the right side of 0.5."""
    hits = total = 0
    model.eval()
    with torch.inference_mode():
        for x, y in val_loader:
            hits += int(((model(x) > 0.5).float() == y).sum())
            total += y.numel()
    return hits / total


def _multi_hot(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """32-sample noise signals; four float labels, each quarter's mean positive."""
    x = _noise(seed, n, 1, 32)
    return x, (x.reshape(n, 4, 8).mean(dim=2) > 0).float()  # (B, 4) multi-hot


def multilabel_task(seed: int = 0, n: int = 384, epochs: int = 6, **task: Any) -> Task:
    """Four labels per signal (is each quarter's mean positive), float targets, the task's
    own loss (BCE) and metric; distillation BCE against the teacher's probabilities."""
    task.setdefault("distill_loss", "bce")
    own = {"metric": label_accuracy, "loss": F.binary_cross_entropy}
    return _fit(seed, SigmoidTagger, _multi_hot, n, epochs, "multilabel", **own, **task)


class HardCodedWidth(_TwoConvs):
    """The classifier reads a reshape to a hard-coded width: the last conv cannot be pruned."""

    def __init__(self, width: int = 8, classes: int = 4) -> None:
        super().__init__(nn.Conv2d, nn.BatchNorm2d, 3, width, width * 9, classes)
        self.flat = width * 9

    def forward(self, x):  # (B, 1, 12, 12)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.bn2(self.conv2(x))), 3)
        return self.fc(x.reshape(x.shape[0], self.flat))


class TimeMajor(_TwoConvs):
    """Conv features (B, C, F, T) flattened time-major, ``permute(0, 2, 1, 3)``, into the
    classifier: the classifier's columns are not channel-major."""

    def __init__(self, width: int = 8, classes: int = 4) -> None:
        super().__init__(nn.Conv2d, nn.BatchNorm2d, 3, width, width * 36, classes)

    def forward(self, x):  # (B, 1, 12, 12)
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, C, 6, 6)
        return self.fc(x.permute(0, 2, 1, 3).reshape(x.shape[0], -1))


def _first(outputs):
    return outputs[0]


mlp_task = _family("mlp", MLP, _vectors, n=512, epochs=5)
encoder_task = _family("encoder", TinyEncoder, _sequences, n=256, epochs=4)
resnet_task = _family("resnet", ResNet, _images)
resnext_task = _family("resnext", ResNeXt, _images)
mobilenet_task = _family("mobilenet-v2-se", MobileNetV2, _images)
densenet_task = _family("densenet", DenseNet, _images)
unet_task = _family("unet", UNet, _pixel_masks, n=64, metric=_pixel_accuracy)
two_heads_task = _family("two-heads", TwoHeads, _images, output_fn=_first)
audio_task = _family("audio", AudioCNN, _signals)
bert_task = _family("bert", BertClassifier, _tokens, n=64)
vit_task = _family("vit", TinyViT, _patches)
gpt2_task = _family("gpt2", GPT2Classifier, _tokens, n=64)
hard_coded_width_task = _family("hard-coded-width", HardCodedWidth, _quadrants, n=256, epochs=2)
time_major_task = _family("time-major", TimeMajor, _quadrants, n=256, epochs=2)


def grouped_concat_task(seed: int = 0, width: int = 16, n: int = 128, epochs: int = 1) -> Task:
    return _fit(seed, lambda: GroupedConcatCNN(width), _images, n, epochs, "grouped-concat")


def mha_task(seed: int = 0, n: int = 128, epochs: int = 1, add_bias_kv: bool = False) -> Task:
    return _fit(seed, lambda: MHAEncoder(add_bias_kv=add_bias_kv), _sequences, n, epochs, "mha")


def frozen_teacher_task(seed: int = 0, n: int = 128, epochs: int = 1) -> Task:
    """A teacher handed over with ``requires_grad=False`` on every parameter."""
    task = grouped_concat_task(seed, n=n, epochs=epochs)
    task.model.requires_grad_(False)
    return task


FAMILIES = {
    "resnet": resnet_task,
    "resnext": resnext_task,
    "grouped-concat": grouped_concat_task,
    "mobilenet-v2-se": mobilenet_task,
    "densenet": densenet_task,
    "unet": unet_task,
    "two-heads": two_heads_task,
    "frozen-teacher": frozen_teacher_task,
    "bert": bert_task,
    "mha": mha_task,
    "vit": vit_task,
    "gpt2": gpt2_task,
    "audio": audio_task,
    "converted-bn": converted_bn_task,
    "multilabel": multilabel_task,
    "hard-coded-width": hard_coded_width_task,
    "time-major": time_major_task,
}
