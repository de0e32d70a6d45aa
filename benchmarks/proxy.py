"""How well each recovery proxy ranks policies by the accuracy they reach after a long
fine-tune (issue 20, must-have 3): Spearman's rank correlation per (model, proxy).

For ``--policies`` policies per model (prune ratios spread over 0-0.7, bits from {4, 8, 32},
residual blocks dropped), each proxy of ``autocompress.pipeline.proxy`` gives its estimate
(accuracy of the fake-quant student, nothing converted):

- ``zero-shot``: the structure change with BatchNorm statistics recalibrated, no training;
- ``zero-shot-stale``: the same with the teacher's BatchNorm statistics (what recalibration buys);
- ``distill-<N>``: N optimizer steps of distillation toward the teacher's outputs;

and the **polished accuracy** is the same policy run through ``compress`` with
``--polish-epochs`` epochs of fine-tuning (alpha 0.5, T 4, lr 1e-3 **constant**: main has no
learning-rate schedule yet, lambda 1e-5), measured on the ``torch`` artifact. ``finetune-1ep``,
the reference fidelity, is the fake-quant student's accuracy after the first epoch of that same
run (constant lr and the same seed: the same as a 1-epoch fine-tune of the policy).

    .venv/bin/python benchmarks/proxy.py                     # digits, 20 policies, 8 epochs
    .venv/bin/python benchmarks/proxy.py --model both
    .venv/bin/python benchmarks/proxy.py --quick             # a smoke run (4 policies, 1 epoch)

Writes ``benchmarks/results/proxy.json`` (``--out``) with the machine, the settings, every
policy's estimates and polished accuracy, and the table.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from _common import RESULTS, ROOT, digits_task, int8_machine

from autocompress import Policy
from autocompress.measure.timing import MeasureSettings
from autocompress.pipeline import compress, estimate_recovery, measure_teacher, spearman
from autocompress.pipeline.proxy import proxy_trust
from autocompress.techniques.distill import TeacherCache

POLISH = {"alpha": 0.5, "temperature": 4.0, "lr": 1e-3, "lambda": 1e-5}
BLOCKS = {
    "digits": ["layer1.1", "layer2.1", "layer3.1"],
    "encoder": ["layers.0", "layers.1"],
}
MAX_DROPS = {"digits": 3, "encoder": 1}
FAST = MeasureSettings(threads=1, warmup=1, repeats=20, paired=False)  # latency is not used here


def encoder():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from encoder_task import build_task

    return build_task()


MODELS = {"digits": digits_task, "encoder": encoder}


def make_policies(model: str, n: int, epochs: int, seed: int) -> list[dict[str, Any]]:
    """``n`` policies: prune ratios evenly spread over [0, 0.7], bits cycling {4, 8, 32}, and
    0 to ``MAX_DROPS`` blocks dropped, the three axes shuffled independently."""
    rng = random.Random(seed)
    ratios = [round(0.7 * i / max(1, n - 1), 3) for i in range(n)]
    bits = [(4, 8, 32)[i % 3] for i in range(n)]
    drops = [i % (MAX_DROPS[model] + 1) for i in range(n)]
    for axis in (ratios, bits, drops):
        rng.shuffle(axis)
    out = []
    for ratio, b, k in zip(ratios, bits, drops, strict=True):
        policy = {
            "prune": {"default": ratio},
            "quant": {"default": b},
            "distill": {"alpha": POLISH["alpha"], "temperature": POLISH["temperature"]},
            "finetune": {"epochs": epochs, "lr": POLISH["lr"], "lambda": POLISH["lambda"]},
        }
        if k:
            policy["drop"] = {"blocks": sorted(rng.sample(BLOCKS[model], k))}
        out.append(policy)
    return out


def run_model(model: str, args: argparse.Namespace, save) -> dict[str, Any]:
    """Every policy's estimates and polished accuracy; ``save(result)`` after each policy
    (a long run killed midway keeps what it measured, labelled with its policy count)."""
    task = MODELS[model]()
    cache = TeacherCache(task).fill()
    teacher = measure_teacher(task, target="torch", settings=FAST)
    rows = []
    for i, data in enumerate(make_policies(model, args.policies, args.polish_epochs, args.seed)):
        policy = Policy.from_dict(data)
        row: dict[str, Any] = {"policy": data, "estimates": {}, "seconds": {}}
        for name, kw in _proxies(args.distill_steps):
            est = estimate_recovery(task, policy, teacher_cache=cache, **kw)
            row["estimates"][name] = est.accuracy
            row["seconds"][name] = round(est.seconds, 2)
        epochs: list[float] = []
        t0 = time.perf_counter()
        result = compress(
            task,
            policy,
            target="torch",
            settings=FAST,
            teacher=teacher,
            teacher_cache=cache,
            on_epoch=lambda k, m, e=epochs: e.append(task.evaluate(m)) if k == 0 else None,
        )
        row["seconds"]["polish"] = round(time.perf_counter() - t0, 1)
        row["polished"] = result.metrics["accuracy"]
        row["epoch_accuracy"] = epochs
        row["estimates"]["finetune-1ep"] = epochs[0]
        rows.append(row)
        shown = " ".join(f"{k}={v:.3f}" for k, v in row["estimates"].items())
        print(f"{model} #{i:02d} polished={row['polished']:.3f} {shown}", flush=True)
        save(_summary(task, teacher, rows, args))
    return _summary(task, teacher, rows, args)


def _summary(task, teacher, rows, args) -> dict[str, Any]:
    names = list(rows[0]["estimates"])
    polished = [r["polished"] for r in rows]
    table = {}
    for name in names:
        est = [r["estimates"][name] for r in rows]
        cost = [r["seconds"].get(name) for r in rows]
        table[name] = {
            "spearman": spearman(est, polished),
            "trusted": proxy_trust(zip(est, polished, strict=True)).trusted,
            "mean_seconds": None if None in cost else round(sum(cost) / len(cost), 2),
        }
    return {
        "task": task.name,
        "teacher_accuracy": teacher["accuracy"],
        "policies": len(rows),
        "settings": {
            "policies_asked": args.policies,
            "polish_epochs": args.polish_epochs,
            "polish": {**POLISH, "schedule": "constant lr (no schedule on main yet)"},
            "distill_steps": args.distill_steps,
            "seed": args.seed,
        },
        "table": table,
        "rows": rows,
    }


def _proxies(distill_steps: list[int]) -> list[tuple[str, dict[str, Any]]]:
    out = [
        ("zero-shot", {"estimator": "zero-shot"}),
        ("zero-shot-stale", {"estimator": "zero-shot", "recalibrate": False}),
    ]
    out += [(f"distill-{n}", {"estimator": "distill", "steps": n}) for n in distill_steps]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("digits", "encoder", "both"), default="digits")
    parser.add_argument("--policies", type=int, default=20)
    parser.add_argument("--polish-epochs", type=int, default=8)
    parser.add_argument("--distill-steps", default="10,30", help="comma-separated step counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="4 policies, 1 epoch, 5 steps")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.distill_steps = [int(s) for s in args.distill_steps.split(",") if s]
    if args.quick:
        args.policies, args.polish_epochs, args.distill_steps = 4, 1, [5]
    out = args.out or (RESULTS / ("proxy-quick.json" if args.quick else "proxy.json"))
    models = ["digits", "encoder"] if args.model == "both" else [args.model]
    # other models' results already in the file are kept (one model per run is fine)
    doc = json.loads(out.read_text()) if out.exists() else {"results": {}}
    doc.update(
        machine=int8_machine(),
        notes={
            "estimates_on": "fake-quant student (weights at the target's integer codes, "
            "activation fake-quant where the target runs integer kernels); nothing converted",
            "polished_on": "the torch artifact, after compress() with polish_epochs epochs",
            "finetune-1ep": "fake-quant student after epoch 1 of the polish run",
            "trusted": "proxy_trust: spearman >= 0.8 on >= 6 policies",
        },
    )

    def save(model: str, result: dict[str, Any]) -> None:
        result["seconds"] = round(time.time() - starts[model])
        result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        doc["results"][model] = result
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2))

    starts: dict[str, float] = {}
    for m in models:
        starts[m] = time.time()
        save(m, run_model(m, args, lambda result, m=m: save(m, result)))
    print(f"\n{'model':8} {'proxy':16} {'spearman':>8} {'trusted':>7} {'s/policy':>8}")
    for m in models:
        res = doc["results"][m]
        for name, row in res["table"].items():
            rho = "n/a" if row["spearman"] is None else f"{row['spearman']:.3f}"
            sec = "" if row["mean_seconds"] is None else f"{row['mean_seconds']:.2f}"
            print(f"{m:8} {name:16} {rho:>8} {row['trusted']!s:>7} {sec:>8}")
        print(f"{m:8} {res['policies']} policies, {res['seconds']} s wall")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
