from __future__ import annotations

import torch
from _support.models import TinyEncoder, cnn_task
from torch import nn
from torch.nn import functional as F

from autocompress import Policy, Task, compress


class EmbeddingEncoder(nn.Module):
    """An encoder returning (embedding, attention-free pooled tokens): no logits at all."""

    def __init__(self) -> None:
        super().__init__()
        self.body = TinyEncoder(d_in=8, dim=32, heads=4, ffn=64)

    def forward(self, x):
        h = self.body.embed(x)
        for layer in self.body.layers:
            h = layer(h)
        emb = F.normalize(self.body.head(h.mean(dim=1)), dim=-1)
        return emb, h


def _embedding_task() -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(192, 6, 8, generator=g)
    torch.manual_seed(0)
    teacher = EmbeddingEncoder().eval()
    with torch.no_grad():
        targets = teacher(x)[0]  # the job: reproduce these embeddings
    batches = [(x[i : i + 32], targets[i : i + 32]) for i in range(0, 192, 32)]

    def metric(model, loader) -> float:
        with torch.no_grad():
            sims = [F.cosine_similarity(model(xb)[0], yb).mean() for xb, yb in loader]
        return float(torch.stack(sims).mean())

    return Task(
        model=teacher,
        train_loader=batches[:4],
        val_loader=batches[4:],
        example_inputs=(x[:1],),
        metric=metric,
        loss=lambda out, y: (1 - F.cosine_similarity(out, y)).mean(),
        output_fn=lambda out: out[0],
        distill_kind="embedding",
        feature_loss="cosine",
    )


def test_encoder_returning_embeddings_compresses(tmp_path):
    task = _embedding_task()
    policy = Policy.from_dict(
        {
            "distill": {"alpha": 0.3},
            "prune": {"layers": {"body.layers.*.fc1": 0.5, "body.layers.*.attn.q": 0.5}},
            "quant": {"default": 8},
            "finetune": {"epochs": 1},
        }
    )
    result = compress(task, policy, out_dir=tmp_path)
    m = result.metrics
    assert m["teacher"]["accuracy"] > 0.999  # the teacher reproduces its own embeddings
    assert 0.0 < m["accuracy"] <= 1.0
    assert m["params"] < m["teacher"]["params"]


def test_feature_matching_on_named_layers_trains_a_projection(tmp_path):
    task = cnn_task(epochs=1)
    task.feature_layers = ("layer1",)
    task.feature_weight = 0.5
    policy = Policy.from_dict(
        {"distill": {"alpha": 0.5}, "prune": {"default": 0.5}, "finetune": {"epochs": 1}}
    )
    result = compress(task, policy, out_dir=tmp_path)
    # the pruned student's layer1 is narrower than the teacher's, and it still trains
    assert result.model.layer1.conv1.out_channels < task.model.layer1.conv1.out_channels
    assert result.metrics["accuracy"] > 0
