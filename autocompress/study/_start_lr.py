"""The measured start's learning-rate pass (step 1 of ``study._start``, after the bit-widths).

Where the space fixes ``finetune.lr`` (the presets: 1e-3), two students at the most aggressive
kept bit-width (``_start.lr_students``: unpruned, and pruned at the bisection's first ratio)
are fine-tuned as a trial is, at that rate and at a tenth of it, one seed each (seed 0 and 1),
deployed and measured; the tenth is chosen when its mean accuracy over both is higher by more
than ``LR_TIE``, and every trial and polish then uses the chosen rate.

Why both: the right rate depends on how much a student has to recover. An unpruned student
barely moves in a short fine-tune and rewards the smaller rate; a pruned one needs the larger.
Measured (AVX-512 VNNI Xeon, trial epochs, mean of 2 seeds): the digits CNN ``int4`` 1e-3
0.9861 / 1e-4 0.9917 but ``prune40-int4`` 0.9833 / 0.9361 (with the rate the unpruned student
chose, every trial pruned 20 % at depth 1 fell more than 5 points); all-MiniLM-L6-v2 ``int4``
0.6952 / 0.7392 and ``prune40-int4`` 0.6782 / 0.6733 (and 16-epoch polishes at 1e-3 lost 5 to
20 points there). Measuring only one kind of student picks the wrong rate for one of them.
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
LR_TIE = 0.002  # a smaller rate is chosen only when its mean accuracy is higher by more


def choose_lr(
    runs: Sequence[Mapping[str, Any]], space_lr: float
) -> tuple[float, dict[float, float]]:
    """The rate to fine-tune with, and each rate's mean accuracy: the largest rate within
    ``LR_TIE`` of the best mean over the students (``student``, else ``seed``). A student that
    failed at every rate is left out (its failure is not the rate's); a rate that failed for
    any other student is not chosen; with no rate left, the space's."""
    rates = sorted({float(r["lr"]) for r in runs}, reverse=True)
    measured: dict[Any, dict[float, float]] = {}
    for r in runs:
        got = measured.setdefault(r.get("student", r.get("seed")), {})
        if "accuracy" in r:
            got[float(r["lr"])] = float(r["accuracy"])
    students = [m for m in measured.values() if m]
    kept = [lr for lr in rates if students and all(lr in m for m in students)]
    if not kept:
        return space_lr, {}
    means = {lr: sum(m[lr] for m in students) / len(students) for lr in kept}
    best = max(means.values())
    return max(lr for lr, a in means.items() if a >= best - LR_TIE), means


def measure_lr(
    task: Task,
    space: ResolvedSpace,
    students: Sequence[str],
    *,
    epochs: int | None,
    teacher: Mapping[str, Any],
    options: CompressOptions,
    quiet: bool = True,
) -> dict[str, Any] | None:
    """The space's fixed fine-tuning rate against a tenth of it, on each start policy in
    ``students`` (``int4``, ``prune40-int4``; the i-th with seed i) fine-tuned as a trial is
    (``epochs``), deployed and measured. None where the space searches the rate or trials do
    not train."""
    lr0 = space.fixed.get("finetune.lr")
    if lr0 is None or "finetune.lr" in space.param_names:
        return None
    bases = [space.policy_from_params(space.params_for_policy(name)) for name in students]
    tunes = [
        b.finetune if epochs is None else dataclasses.replace(b.finetune, epochs=epochs)
        for b in bases
    ]
    if not any(t.epochs for t in tunes):
        return None
    # only the accuracy is read: a short unpaired timing, not the trials' paired one
    quick = dataclasses.replace(options.settings, warmup=1, repeats=20, paired=False)
    candidates = [float(lr0) * f for f in LR_FACTORS]
    runs: list[dict[str, Any]] = []
    began = time.perf_counter()
    steps = [(lr, seed) for lr in candidates for seed in range(len(students))]
    for i, (lr, seed) in enumerate(steps):
        name, base, tune = students[seed], bases[seed], tunes[seed]
        if not quiet:
            print(
                f"\rstart: learning rate {i + 1}/{len(steps)} ({lr:g} on {name})  ",
                end="",
                file=sys.stderr,
                flush=True,
            )
        policy = dataclasses.replace(base, finetune=dataclasses.replace(tune, lr=lr))
        run: dict[str, Any] = {"lr": lr, "student": name, "seed": seed}
        try:
            m = compress(
                task, policy, options=options.replace(seed=seed, settings=quick), teacher=teacher
            )
            run["accuracy"] = float(m.metrics["accuracy"])
        except Exception as exc:  # a rate whose fine-tune fails is not chosen
            run["error"] = f"{type(exc).__name__}: {exc}"
        runs.append(run)
    chosen, means = choose_lr(runs, float(lr0))
    return {
        "students": list(students),
        "epochs": max(t.epochs for t in tunes),
        "runs": runs,
        "mean_accuracy": {f"{lr:g}": round(a, 6) for lr, a in means.items()},
        "space_lr": float(lr0),
        "chosen": chosen,
        "seconds": round(time.perf_counter() - began, 2),
    }


__all__ = ["LR_FACTORS", "LR_TIE", "choose_lr", "measure_lr"]
