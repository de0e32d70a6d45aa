"""Attention models nobody here wrote, at 50 % pruning + 8 bits: how much smaller on each target.

- a ViT on ``nn.TransformerEncoder`` (6 layers, 8 heads, dim 192, pre-norm; packed
  ``nn.MultiheadAttention``, unpacked by the Task into separate q/k/v Linears), trained one
  epoch on random 8x8 images so that its layers differ;
- a Hugging Face GPT-2 decoder built from a config (4 layers, 4 heads, dim 128; ``Conv1D``
  projections, packed ``c_attn``, tied output projection), one epoch on random tokens.

Each through ``compress`` on ``torch``, ``onnxruntime`` and ``openvino`` (where installed), one
fine-tuning epoch; per row the achieved compression against the teacher on the same target, the
heads and MLP neurons the records say were removed, and the modes of the projections.

    .venv/bin/python benchmarks/attention_models.py   # writes benchmarks/results/attention_models.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _support.models import GPT2Classifier, TinyViT, _classification  # noqa: E402

from autocompress import Policy, compress  # noqa: E402
from autocompress.targets import TARGETS  # noqa: E402
from autocompress.targets.runtimes import cpu_record  # noqa: E402

POLICY = Policy.from_dict(
    {"prune": {"default": 0.5}, "quant": {"default": 8}, "finetune": {"epochs": 1, "lr": 1e-4}}
)


def vit():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, 8, 8, generator=g)
    y = (x[:, 0, :4, :4].sum(dim=(1, 2)) > 0).long()
    torch.manual_seed(0)
    model = TinyViT(dim=192, heads=8, layers=6)
    return _classification(model, x, y, 1, "vit-192"), "encoder.layers.0.self_attn.q", "linear1"


def gpt2():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 100, (256, 8), generator=g)
    y = (x[:, :4].sum(dim=1) % 4).long()
    torch.manual_seed(0)
    model = GPT2Classifier(dim=128, heads=4, layers=4)
    return _classification(model, x, y, 1, "gpt2-128"), "attn.c_attn", "mlp.c_fc"


def row(task, target: str, heads: str, mlp: str) -> dict:
    with tempfile.TemporaryDirectory() as out:
        m = compress(task, POLICY, out_dir=out, target=target).metrics
    layers = m["layers"]
    attn = {p: r for p, r in layers.items() if p.endswith(heads.split(".")[-1]) and "attn" in p}
    ffn = {p: r for p, r in layers.items() if p.endswith(mlp)}
    kept = lambda recs: sum(r["channels_kept"] for r in recs.values())  # noqa: E731
    total = lambda recs: sum(r["channels_original"] for r in recs.values())  # noqa: E731
    return {
        "model": task.name,
        "target": target,
        "compression": round(m["compression"], 2),
        "speedup": round(m["speedup"], 2),
        "accuracy": m["accuracy"],
        "teacher_accuracy": m["baseline"]["accuracy"],
        "size_bytes": m["size_bytes"],
        "teacher_size_bytes": m["baseline"]["size_bytes"],
        "attention_rows_kept": f"{kept(attn)}/{total(attn)}",
        "mlp_neurons_kept": f"{kept(ffn)}/{total(ffn)}",
        "modes": dict(Counter(r["mode"] for r in layers.values())),
        "untied_weights": m.get("untied_weights", []),
    }


def main() -> None:
    torch.set_num_threads(1)
    cpu = cpu_record()
    targets = [t for t in ("torch", "onnxruntime", "openvino") if t in TARGETS]
    rows = []
    for build in (vit, gpt2):
        task, heads, mlp = build()
        for target in targets:
            try:
                r = row(task, target, heads, mlp)
            except Exception as exc:  # a target that refuses the model: say so, never hide it
                r = {"model": task.name, "target": target, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(r)
            print(json.dumps(r), flush=True)
    out = ROOT / "benchmarks" / "results" / "attention_models.json"
    out.write_text(json.dumps({"cpu": cpu["model"], "vnni": cpu["vnni"], "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
