"""What the search benchmarks share: paths and which task they run."""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def task_spec(which: str = "auto") -> tuple[str, str]:
    """(task spec, search space): the digits example, or with ``cnn`` the small test CNN."""
    digits = ROOT / "examples" / "digits" / "task.py"
    if which != "cnn" and digits.exists():
        return f"{digits}:build_task", "grouped"
    sys.path.insert(0, str(ROOT / "tests"))  # tests/_support/tasks.py imports its sibling models.py
    return f"{ROOT / 'tests' / '_support' / 'tasks.py'}:cnn", "default"


def parse_search_args(description: str, **defaults: int) -> argparse.Namespace:
    """``--<name> N`` for each default (e.g. trials=8) plus ``--task auto|cnn``; Ray kept on
    127.0.0.1 without a token prompt."""
    parser = argparse.ArgumentParser(description=description)
    for name, value in defaults.items():
        parser.add_argument(f"--{name}", type=int, default=value)
    parser.add_argument(
        "--task", choices=("auto", "cnn"), default="auto", help="cnn: tests/_support/tasks.py:cnn"
    )
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    return parser.parse_args()


def digits_task():
    """The bundled digits example's task (``examples/digits/task.py:build_task``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_task", ROOT / "examples/digits/task.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.build_task()


def latency_stats(ts: list[float]) -> dict[str, float]:
    ts = sorted(ts)
    return {"median_ms": statistics.median(ts), "p90_ms": ts[int(0.9 * (len(ts) - 1))]}


def round_robin(runs: dict, example: Any, rounds: int, warmup: int) -> dict[str, dict]:
    """Per deployed module, the median and p90 ms of its call, in rounds over all modules in a
    random order (seed 0). Each turn makes two calls: the first (``cold``) runs right after
    another model, the second (the latency) is the steady state of a model called repeatedly.
    On AMX CPUs the first int8 call after an fp32 model is much slower (AMX warm-up); a fixed
    order would charge that to whichever model follows the fp32 one."""
    order = random.Random(0)
    names = list(runs)
    times: dict[str, list[float]] = {k: [] for k in runs}
    cold: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(warmup + rounds):
        order.shuffle(names)
        for k in names:
            for out in (cold[k], times[k]):
                t0 = time.perf_counter()
                runs[k](example)
                if r >= warmup:
                    out.append((time.perf_counter() - t0) * 1e3)
    return {
        k: {**latency_stats(times[k]), "cold_median_ms": latency_stats(cold[k])["median_ms"]}
        for k in runs
    }


# -- what the int8 runtime benchmarks share (openvino_int8.py, executorch_int8.py) ---------------
INT8_ROUNDS, INT8_WARMUP = 400, 50  # timed round-robin rounds, untimed rounds first


def run_lowered(doc: str, peer: str, bench: Any, prefix: str) -> tuple[argparse.Namespace, dict]:
    """Parse ``--rounds``, ``--qat-epochs``, ``--no-peer`` (the ``peer`` row), ``--out``; run
    ``bench(task, tmp, rounds, qat_epochs, peer)`` on the digits CNN with one torch thread in a
    temporary directory; return the arguments and the rows."""
    import torch

    args = _lowered_args(doc, peer)
    args.started = time.time()
    torch.set_num_threads(1)  # two threads on shared cores are erratic
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        rows = bench(digits_task(), Path(tmp), args.rounds, args.qat_epochs, not args.no_peer)
    return args, rows


def _lowered_args(doc: str, peer: str, rounds: int = INT8_ROUNDS) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds, help="timed round-robin rounds")
    parser.add_argument("--qat-epochs", type=int, default=2, help="0: no int8-qat row")
    parser.add_argument("--no-peer", action="store_true", help=f"leave out the {peer} row")
    parser.add_argument("--out", type=Path, default=None)
    return parser.parse_args()


def our_rows(
    task: Any, target: str, tmp: Path, qat_epochs: int
) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Ours on ``target`` against the same baseline: ``fp32`` (32 bits), ``int8`` (no pruning,
    no fine-tuning) and, with ``qat_epochs``, ``int8-qat``; name -> (result, first row fields).
    Measured with one thread, 10 warm-up and 30 timed calls."""
    from autocompress import MeasureSettings, Policy, compress, measure_teacher

    settings = MeasureSettings(threads=1, warmup=10, repeats=30)

    baseline = measure_teacher(task, target=target, settings=settings)
    policies = {"fp32": {"quant": {"default": 32}}, "int8": {"quant": {"default": 8}}}
    if qat_epochs:
        policies["int8-qat"] = {
            "quant": {"default": 8},
            "finetune": {"epochs": qat_epochs, "lr": 1e-4},
        }
    out = {}
    for name, policy in policies.items():
        policy = {"finetune": {"epochs": 0}, **policy}
        res = compress(
            task,
            Policy.from_dict(policy),
            target=target,
            out_dir=tmp / name,
            settings=settings,
            baseline=baseline,
        )
        modes = [r["mode"] for r in res.metrics["layers"].values()]
        row = {
            "size_bytes": res.metrics["size_bytes"],
            "int_compute_layers": f"{modes.count('int-compute')}/{len(modes)}",
        }
        out[name] = (res, row)
    return out


def measure_runs(rows: dict[str, dict], runs: dict, task: Any, rounds: int) -> None:
    """Each row gets its run's task metric, then, timed round-robin at batch 1
    (:func:`round_robin`), its latency, cold latency, speedup and compression against fp32."""
    for name, run in runs.items():
        rows[name]["accuracy"] = task.evaluate(run)
    lat = round_robin(runs, task.example_inputs[0][:1], rounds, INT8_WARMUP)
    for name, row in rows.items():
        row.update(latency_ms=lat[name]["median_ms"], latency_p90_ms=lat[name]["p90_ms"])
        row["latency_cold_ms"] = lat[name]["cold_median_ms"]  # right after another model
        row["speedup_vs_fp32"] = lat["fp32"]["median_ms"] / lat[name]["median_ms"]
        row["compression_vs_fp32"] = rows["fp32"]["size_bytes"] / row["size_bytes"]


def int8_machine(**versions: str) -> dict[str, Any]:
    """The CPU record with its int8/bf16 features, the core count and the runtimes' versions."""
    from autocompress.targets.runtimes import VNNI_FLAGS, cpu_info, cpu_record

    flags = cpu_info()[1]
    features = [f for f in (*VNNI_FLAGS, "avx512_bf16", "amx_bf16") if f in flags]
    return {**cpu_record(), "int8_features": features, "cores": os.cpu_count(), **versions}


def int8_checks(rows: dict[str, dict], kernels: str) -> dict[str, bool]:
    """int8 within a point of fp32, and every int8 layer ran the runtime's int8 ``kernels``."""
    done, total = rows["int8"]["int_compute_layers"].split("/")
    return {
        "int8 within 1 point of fp32": rows["fp32"]["accuracy"] - rows["int8"]["accuracy"] <= 0.01,
        f"every int8 layer ran {kernels}": done == total,
    }


def write_results(
    args: argparse.Namespace, default_out: Path, cpu: dict, rows: dict, checks: dict, **settings
) -> None:
    """The results JSON (machine, date, the digits model, settings, rows, checks) at ``--out``
    (default ``default_out``)."""
    out = args.out or default_out
    settings = {"batch": 1, "rounds": args.rounds, "warmup": INT8_WARMUP, **settings}
    started = args.started
    doc = {
        "machine": cpu,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "model": "examples/digits/task.py:build_task (ResNet-style CNN, 16x16 digits)",
        "settings": {
            "threads": 1,
            **settings,
            "order": "round-robin, random order per round (seed 0); per turn a cold call "
            "(latency_cold_ms) then the timed call (latency_ms)",
        },
        "load_average_1min": round(os.getloadavg()[0], 1),  # other processes on the cores
        "results": rows,
        "checks": checks,
        "seconds": round(time.time() - started),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")


def print_results(cpu: dict, rows: dict, checks: dict[str, bool], width: int, tail: Any) -> None:
    """The CPU, one line a row (name padded to ``width``, then ``tail(row)``), the checks."""
    print(f"{cpu['model']} | int8 features: {', '.join(cpu['int8_features']) or 'none'}")
    for name, row in rows.items():
        print(
            f"{name:{width}s} acc {row['accuracy']:.4f}  {row['size_bytes'] / 1e6:6.3f} MB  "
            f"{row['latency_ms']:.3f} ms  {row['speedup_vs_fp32']:.2f}x  {tail(row)}"
        )
    for check, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {check}")
