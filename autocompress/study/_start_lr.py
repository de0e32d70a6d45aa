"""The measured start's learning-rate pass (step 1 of ``study._start``, after the bit-widths).

Where the space fixes ``finetune.lr`` (the presets: 1e-3), the unpruned student at the most
aggressive kept bit-width is fine-tuned as a trial is, at that rate and at a tenth of it, two
seeds each, deployed and measured; the tenth is chosen when its mean accuracy is higher by
more than ``LR_TIE``, and every trial and polish then uses the chosen rate.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from autocompress.pipeline._compress import compress
from autocompress.pipeline.options import CompressOptions
from autocompress.study.space import ResolvedSpace
from autocompress.task import Task

LR_FACTORS = (1.0, 0.1)  # the space's learning rate and a tenth of it
LR_SEEDS = (0, 1)  # one fine-tune per seed: at a rate too high for the model, runs scatter
LR_TIE = 0.002  # a smaller rate is chosen only when its mean accuracy is higher by more


def choose_lr(
    runs: Sequence[Mapping[str, Any]], space_lr: float
) -> tuple[float, dict[float, float]]:
    """The rate to fine-tune with, and each rate's mean accuracy over its seeds: the largest
    rate within ``LR_TIE`` of the best mean. A rate with a failed run is not chosen; with
    none left, the space's."""
    rates = sorted({float(r["lr"]) for r in runs}, reverse=True)
    means = {}
    for lr in rates:
        mine = [r for r in runs if float(r["lr"]) == lr]
        if mine and all("accuracy" in r for r in mine):
            means[lr] = sum(float(r["accuracy"]) for r in mine) / len(mine)
    if not means:
        return space_lr, means
    best = max(means.values())
    return max(lr for lr, a in means.items() if a >= best - LR_TIE), means


def measure_lr(
    task: Task,
    space: ResolvedSpace,
    name: str,
    *,
    epochs: int | None,
    teacher: Mapping[str, Any],
    options: CompressOptions,
    quiet: bool = True,
) -> dict[str, Any] | None:
    """The space's fixed fine-tuning rate against a tenth of it, on the start policy ``name``
    (``int4``: the unpruned student at 4 bits) fine-tuned as a trial is (``epochs``; seeds
    ``LR_SEEDS``), deployed and measured. None where the space searches the rate or trials do
    not train."""
    lr0 = space.fixed.get("finetune.lr")
    if lr0 is None or "finetune.lr" in space.param_names:
        return None
    base = space.policy_from_params(space.params_for_policy(name))
    tune = base.finetune if epochs is None else dataclasses.replace(base.finetune, epochs=epochs)
    if not tune.epochs:
        return None
    # only the accuracy is read: a short unpaired timing, not the trials' paired one
    quick = dataclasses.replace(options.settings, warmup=1, repeats=20, paired=False)
    candidates = [float(lr0) * f for f in LR_FACTORS]
    runs: list[dict[str, Any]] = []
    began = time.perf_counter()
    for i, lr in enumerate(candidates):
        for seed in LR_SEEDS:
            if not quiet:
                print(
                    f"\rstart: learning rate {i + 1}/{len(candidates)} ({lr:g}, seed {seed}) "
                    f"on {name}  ",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
            policy = dataclasses.replace(base, finetune=dataclasses.replace(tune, lr=lr))
            try:
                m = compress(
                    task,
                    policy,
                    options=options.replace(seed=seed, settings=quick),
                    teacher=teacher,
                )
                runs.append({"lr": lr, "seed": seed, "accuracy": float(m.metrics["accuracy"])})
            except Exception as exc:  # a rate whose fine-tune fails is not chosen
                runs.append({"lr": lr, "seed": seed, "error": f"{type(exc).__name__}: {exc}"})
    chosen, means = choose_lr(runs, float(lr0))
    return {
        "student": name,
        "epochs": tune.epochs,
        "runs": runs,
        "mean_accuracy": {f"{lr:g}": round(a, 6) for lr, a in means.items()},
        "space_lr": float(lr0),
        "chosen": chosen,
        "seconds": round(time.perf_counter() - began, 2),
    }


__all__ = ["LR_FACTORS", "LR_SEEDS", "LR_TIE", "choose_lr", "measure_lr"]
