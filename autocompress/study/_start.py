"""The search's first trials: the uniform line search a careful person would run by hand.

``starts: [identity, auto]`` (the demo's choice) starts a search with uniform policies (one
prune ratio and one bit-width for the whole model), chosen by measurement instead of from a
fixed list, in two steps:

1. **Bit-widths, before any training** (seconds): the teacher quantized uniformly at each
   bit-width the space offers is deployed as the target deploys it, without fine-tuning, and
   its accuracy, artifact bytes and latency (timed interleaved with the teacher) are measured.
   A bit-width that another one matches in accuracy (within ``BITS_TOLERANCE``) while being
   smaller and no slower (within ``LATENCY_TOLERANCE``) is dropped. On the torch target the
   16-bit policy loses to the 8-bit one everywhere; on models whose 8-bit Linears run
   PyTorch's dynamic int8 kernels slower than float, and whose 4-bit weights lose no accuracy,
   8 bits go too. Pruning cannot be judged this way: a pruned network is at chance before it
   is fine-tuned, so its ratio is found by training.
2. **Prune ratio, by bisection** along the space's ratios (0, 0.1, ..., 0.7 in the presets), for
   each remaining bit-width in turn (smallest first): ratio 0, then the middle of the ratios
   not yet decided, going up when a trial completes within the accuracy drop the objectives
   allow (their accuracy ``max_drop`` constraint; ``ACCURACY_TOLERANCE`` without one) of the
   same bit-width's unpruned trial, and down when it does not (or failed, or broke a
   constraint). The probes on the way (0.4, 0.6, 0.5, ...) are points of the front themselves. ``auto`` runs 6 such trials,
   ``auto<K>`` K; a bit-width whose search has converged, or whose next step waits for a
   running trial, gives its turn to the next one, and when none can step the sampler proposes.

Step 1 is recorded in the run directory's ``start.json`` (every bit-width's measurements, the
kept ones, the seconds it took); a resumed search reads it back. Step 2 is a function of the
finished trials, so a resumed search continues it where it stopped.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autocompress.device import CPU
from autocompress.pipeline._compress import compress
from autocompress.pipeline.options import CompressOptions
from autocompress.study.objectives import ObjectiveSet
from autocompress.study.rundir import RunDir
from autocompress.study.space import ResolvedSpace
from autocompress.study.space.hierarchy import GLOBAL_BITS, GLOBAL_PRUNE, _choices
from autocompress.task import Task

AUTO = re.compile(r"auto([1-9]\d?)?")
DEFAULT_K = 6
# how far below its bit-width's unpruned trial a pruned start may fall and still count as
# holding: the accuracy drop the objectives allow (their accuracy ``max_drop`` constraint),
# else this; the fronts the search is judged by reach down to that edge
ACCURACY_TOLERANCE = 0.05
LATENCY_TOLERANCE = 0.05  # timings within 5 % of each other count as equal
# a bit-width is dropped for a smaller one only when that one, untrained, is within half a
# point: fine-tuning recovers some of the gap, but not what the pruning ratio then costs on top
BITS_TOLERANCE = 0.005
START_FILE = "start.json"


def auto_count(name: str) -> int | None:
    """K for ``auto`` / ``auto<K>``; None for any other start name."""
    found = AUTO.fullmatch(name)
    if found is None:
        return None
    return int(found.group(1) or DEFAULT_K)


def uniform_name(ratio: float, bits: int) -> str:
    pct = int(round(ratio * 100))
    return f"prune{pct}-int{bits}" if pct else f"int{bits}"


def space_levels(space: ResolvedSpace) -> tuple[list[float], list[int]]:
    """The uniform ratios and bit-widths of a space: its global level's, or those every
    per-group parameter allows."""
    names = set(space.param_names)
    if GLOBAL_PRUNE in names or GLOBAL_BITS in names:
        prune = [space.param(GLOBAL_PRUNE)] if GLOBAL_PRUNE in names else []
        bits = [space.param(GLOBAL_BITS)] if GLOBAL_BITS in names else []
    else:
        prune = [space.param(n) for n in space.param_names if n.startswith("prune.")]
        bits = [space.param(n) for n in space.param_names if n.startswith("bits.")]
    ratios = sorted({round(float(v), 6) for p in prune for v in _choices(p) if v < 1} | {0.0})
    widths = sorted({int(v) for p in bits for v in _choices(p)} or {32})
    return ratios, widths


# -- step 1: bit-widths, measured before training ------------------------------------------
def _beats(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return (
        a["accuracy"] >= b["accuracy"] - BITS_TOLERANCE
        and a["size_bytes"] < b["size_bytes"]
        and a["latency_ratio"] <= b["latency_ratio"] * (1 + LATENCY_TOLERANCE)
    )


def kept_bits(points: Sequence[Mapping[str, Any]]) -> list[int]:
    """Bit-widths no other one beats, smallest artifact first."""
    kept = [p for p in points if not any(_beats(q, p) for q in points if q is not p)]
    return [p["bits"] for p in sorted(kept, key=lambda p: p["size_bytes"])]


def measure_bits(
    task: Task,
    space: ResolvedSpace,
    widths: Sequence[int],
    *,
    teacher: Mapping[str, Any],
    options: CompressOptions,
    quiet: bool = True,
) -> list[dict[str, Any]]:
    """Each bit-width applied to the whole teacher, deployed without training."""
    # nothing trains: the teacher at each bit-width, as deployed (seed 0, as always measured)
    options = options.replace(seed=0, training=CPU)
    out = []
    for i, bits in enumerate(widths):
        if bits == 32:  # the teacher itself
            out.append(
                {
                    "bits": 32,
                    "accuracy": float(teacher["accuracy"]),
                    "size_bytes": int(teacher["size_bytes"]),
                    "latency_ratio": 1.0,
                }
            )
            continue
        if not quiet:
            print(
                f"\rstart: bit-width {i + 1}/{len(widths)} ({bits} bits)  ",
                end="",
                file=sys.stderr,
                flush=True,
            )
        policy = space.policy_from_params(space.params_for_policy(uniform_name(0.0, bits)))
        policy = dataclasses.replace(
            policy, finetune=dataclasses.replace(policy.finetune, epochs=0)
        )
        try:
            m = compress(task, policy, options=options, teacher=teacher).metrics
        except Exception as exc:  # a bit-width the target cannot build is not a start
            out.append({"bits": bits, "error": f"{type(exc).__name__}: {exc}"})
            continue
        out.append(
            {
                "bits": bits,
                "accuracy": float(m["accuracy"]),
                "size_bytes": int(m["size_bytes"]),
                "latency_ratio": float(m["latency_ms"]) / float(m["teacher"]["latency_ms"]),
            }
        )
    return out


# -- step 2: prune ratio by bisection ------------------------------------------------------
@dataclass(frozen=True)
class StartPlan:
    """The uniform line search: per bit-width, bisection over the ratios for the largest one
    whose trial stays within ``tolerance`` of the teacher's accuracy."""

    bits: tuple[int, ...]
    ratios: tuple[float, ...]
    k: int = DEFAULT_K
    tolerance: float = ACCURACY_TOLERANCE

    def names(self) -> set[str]:
        return {uniform_name(r, b) for b in self.bits for r in self.ratios}

    def next(self, results: Mapping[str, float | bool | None], asked: int) -> str | None:
        """The next start, given each start asked so far: its accuracy when complete, False
        when it failed or broke a constraint, None while it runs; None when no step is
        possible now."""
        if asked >= self.k:
            return None
        for bits in self.bits:
            step = self._step(bits, results)
            if step is not None:
                return step
        return None

    def _step(self, bits: int, results: Mapping[str, float | bool | None]) -> str | None:
        """Bisection for one bit-width: a ratio is good when its trial stays within
        ``tolerance`` of the same bit-width's unpruned trial (ratio 0 is good when complete)."""
        first = results.get(uniform_name(self.ratios[0], bits), "unseen")
        if first == "unseen":
            return uniform_name(self.ratios[0], bits)
        if first is None or first is False:
            return None  # still running, or even unpruned this bit-width does not hold
        lo, hi = 0, len(self.ratios)  # largest index known good, smallest known bad
        for i, r in enumerate(self.ratios[1:], start=1):
            seen = results.get(uniform_name(r, bits), "unseen")
            if seen is None:
                return None  # wait for it: the next step depends on it
            if seen == "unseen":
                continue
            if seen is not False and float(seen) >= float(first) - self.tolerance:
                lo = max(lo, i)
            else:
                hi = min(hi, i)
        if hi - lo <= 1:
            return None
        return uniform_name(self.ratios[(lo + hi) // 2], bits)

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": list(self.bits),
            "ratios": list(self.ratios),
            "k": self.k,
            "tolerance": self.tolerance,
        }


def allowed_drop(objectives: ObjectiveSet) -> float:
    """The accuracy drop the objectives allow, from their ``accuracy max_drop`` constraint."""
    drops = [
        c.value for c in objectives.constraints if c.metric == "accuracy" and c.bound == "max_drop"
    ]
    return min(drops) if drops else ACCURACY_TOLERANCE


def start_plan(
    starts: Sequence[str],
    *,
    run_dir: RunDir,
    task: Task,
    space: ResolvedSpace,
    objectives: ObjectiveSet,
    teacher: Mapping[str, Any],
    options: CompressOptions,
    quiet: bool = False,
) -> tuple[tuple[str, ...], StartPlan | None]:
    """The fixed starts, and the plan ``auto``/``auto<K>`` stands for (None without it).
    Step 1 is measured once and kept in ``start.json``."""
    counts = [auto_count(b) for b in starts]
    fixed = tuple(b for b, c in zip(starts, counts, strict=True) if c is None)
    ks = [c for c in counts if c is not None]
    if not ks:
        return fixed, None
    ratios, widths = space_levels(space)
    path = run_dir.path / START_FILE
    record = run_dir.read_json(START_FILE) if path.is_file() else None
    if record is None:
        began = time.perf_counter()
        measured = measure_bits(
            task,
            space,
            widths,
            teacher=teacher,
            options=options,
            quiet=quiet,
        )
        points = [m for m in measured if "error" not in m]
        bits = kept_bits(points) or [max(widths)]
        record = {
            "seconds": round(time.perf_counter() - began, 2),
            "bit_widths": measured,
            "kept_bits": bits,
            "plan": StartPlan(
                tuple(bits), tuple(ratios), k=max(ks), tolerance=allowed_drop(objectives)
            ).to_dict(),
        }
        run_dir.write_json(START_FILE, record)
        if not quiet:
            print(
                f"\rstart: bit-widths {', '.join(map(str, bits))} kept of "
                f"{', '.join(map(str, widths))} (measured without training in "
                f"{record['seconds']:.0f} s); prune ratios by bisection over "
                f"{ratios[0]:g}..{ratios[-1]:g}",
                file=sys.stderr,
                flush=True,
            )
    plan = record["plan"]
    return fixed, StartPlan(
        tuple(plan["bits"]), tuple(plan["ratios"]), k=plan["k"], tolerance=plan["tolerance"]
    )


__all__ = [
    "StartPlan",
    "auto_count",
    "kept_bits",
    "measure_bits",
    "space_levels",
    "start_plan",
    "uniform_name",
]
