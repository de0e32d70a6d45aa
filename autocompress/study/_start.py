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
   Then the **fine-tuning rate** (``_start_lr.measure_lr``), where the space fixes one (the presets:
   1e-3): two students at the most aggressive kept bit-width (``lr_students``: unpruned, and
   pruned at the bisection's first ratio) are fine-tuned as a trial is, at that rate and at a
   tenth of it, one seed each, deployed and measured; the tenth is chosen when its mean
   accuracy is higher by more than ``LR_TIE``, and every trial and polish then uses the chosen
   rate. A pretrained transformer needs the tenth (all-MiniLM-L6-v2 unpruned at 4 bits: 0.695
   against 0.739 WordSim-353 after 2 epochs); a pruned CNN needs the space's (the digits CNN
   40 % pruned: 0.983 against 0.936), so each kind of student has a vote.
2. **Depth × prune ratio, by bisection**, for each remaining bit-width in turn (smallest
   first). A trial *holds* when it completes within the accuracy drop the objectives allow
   (their accuracy ``max_drop`` constraint; ``ACCURACY_TOLERANCE`` without one) of the same
   bit-width's unpruned, undropped trial (``int<B>``, run first); it fails when it does not
   (or failed, or broke a constraint). Where the space searches dropping blocks
   (``global.depth``, see ``space.hierarchy``, or per-block ``drop.<block>``), the depth
   levels 1, 2, 4, ... (blocks dropped per stage, up to the largest stage) are tried unpruned
   in turn until one fails: the deepest that holds is the most aggressive cheap point. Then
   the prune ratio is bisected along the space's ratios (0, 0.1, ..., 0.7 in the presets) at
   that depth, then at each shallower one: the middle of the ratios not yet decided, up when
   it holds, down when it fails. Holding and failing carry
   over between depths (a policy that drops fewer blocks at no higher ratio than one that
   holds, holds; one that drops more at no lower ratio than one that fails, fails), so the
   shallower bisections start narrowed. The probes on the way (0.4, 0.6, 0.5, ...) are points
   of the front themselves. Names say all three: ``drop1-prune50-int4``. ``auto<K>`` runs K
   such trials; ``auto`` 8, plus one per depth level above 0 (at most 2 more). A bit-width
   whose search has converged, or whose next step waits for a running trial, gives its turn
   to the next one, and when none can step the sampler proposes.

Step 1 is recorded in the run directory's ``start.json`` (every bit-width's measurements, the
kept ones, every learning-rate run and the chosen rate, the seconds they took, the depth levels
and the stages' drop order); a resumed search reads it back. Step 2 is a function of the
finished trials, so a resumed search continues it where it stopped. Neither step watches a
``budget:``: on a large model the learning-rate pass (four short fine-tunes) counts against it.
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
from autocompress.study._start_lr import measure_lr
from autocompress.study.objectives import ObjectiveSet
from autocompress.study.rundir import RunDir
from autocompress.study.space import ResolvedSpace
from autocompress.study.space.hierarchy import GLOBAL_BITS, GLOBAL_PRUNE, _choices
from autocompress.task import Task

AUTO = re.compile(r"auto([1-9]\d?)?")
DEFAULT_K = 8  # enough for a bisection over 8 ratios to end at two bit-widths and depths
DEPTH_EXTRA = 2  # ``auto``'s extra starts where the space searches depth
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


def uniform_name(ratio: float, bits: int, depth: int = 0) -> str:
    """``int8``, ``prune30-int8``, ``drop1-prune30-int8`` (see ``space.start_spec``)."""
    pct = int(round(ratio * 100))
    name = f"prune{pct}-int{bits}" if pct else f"int{bits}"
    return f"drop{depth}-{name}" if depth else name


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


def space_depths(space: ResolvedSpace) -> list[int]:
    """The start's depth levels: 0, then 1, 2, 4, ... up to the most blocks a stage can drop
    (only 0 where the space does not search dropping blocks; a flat ``drop.<block>`` space
    takes depth too, see ``ResolvedSpace.params_for_policy``)."""
    top, out = space.max_depth, [0]
    while out[-1] < top:
        out.append(min(max(1, 2 * out[-1]), top))
    return out


def lr_students(ratios: Sequence[float], bits: Sequence[int]) -> tuple[str, ...]:
    """The learning-rate pass's students at the most aggressive kept bit-width: unpruned, and
    pruned at the bisection's first probe (the middle ratio), as little and as much to recover
    as the trials have (see ``_start_lr``)."""
    low = min(bits)
    mid = ratios[len(ratios) // 2] if ratios else 0.0
    return tuple(dict.fromkeys((uniform_name(0.0, low), uniform_name(mid, low))))


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


# -- step 2: depth and prune ratio by bisection ---------------------------------------------
@dataclass(frozen=True)
class StartPlan:
    """The uniform line search: per bit-width, the deepest depth level that holds unpruned,
    then bisection over the ratios at that depth and each shallower one, for the largest ratio
    whose trial stays within ``tolerance`` of that bit-width's unpruned, undropped trial."""

    bits: tuple[int, ...]
    ratios: tuple[float, ...]
    k: int = DEFAULT_K
    tolerance: float = ACCURACY_TOLERANCE
    depths: tuple[int, ...] = (0,)  # blocks dropped per stage; 0 first

    def names(self) -> set[str]:
        return {uniform_name(r, b, d) for b in self.bits for r in self.ratios for d in self.depths}

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
        """One step for one bit-width (see the module docstring)."""
        depths, ratios = range(len(self.depths)), range(len(self.ratios))

        def name(d: int, r: int) -> str:
            return uniform_name(self.ratios[r], bits, self.depths[d])

        first = results.get(name(0, 0), "unseen")
        if first == "unseen":
            return name(0, 0)
        if first is None or first is False:
            return None  # still running, or even unpruned this bit-width does not hold
        seen = {(d, r): results.get(name(d, r), "unseen") for d in depths for r in ratios}
        if any(v is None for v in seen.values()):
            return None  # wait for it: the next step depends on it
        done = {cell: v for cell, v in seen.items() if v != "unseen"}
        floor = float(first) - self.tolerance
        holds = {c for c, v in done.items() if v is not False and float(v) >= floor}  # type: ignore[arg-type]
        fails = set(done) - holds

        def good(d: int, r: int) -> bool:
            return any(hd >= d and hr >= r for hd, hr in holds)

        def bad(d: int, r: int) -> bool:
            return any(fd <= d and fr <= r for fd, fr in fails)

        top = 0
        for d in depths[1:]:  # the deepest depth level that holds unpruned
            if bad(d, 0):
                break
            if not good(d, 0):
                return name(d, 0)
            top = d
        for d in range(top, -1, -1):
            lo = max((r for r in ratios if good(d, r)), default=0)
            hi = min((r for r in ratios if bad(d, r)), default=len(self.ratios))
            if hi - lo > 1:
                return name(d, (lo + hi) // 2)
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bits": list(self.bits),
            "ratios": list(self.ratios),
            "depths": list(self.depths),
            "k": self.k,
            "tolerance": self.tolerance,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StartPlan:
        """As written in ``start.json`` (one written before depth was planned: depth 0 only)."""
        return cls(
            tuple(data["bits"]),
            tuple(data["ratios"]),
            k=data["k"],
            tolerance=data["tolerance"],
            depths=tuple(data.get("depths", [0])),
        )


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
    epochs: int | None = None,
    quiet: bool = False,
) -> tuple[tuple[str, ...], StartPlan | None, float | None]:
    """The fixed starts, the plan ``auto``/``auto<K>`` stands for (None without it) and the
    fine-tuning rate step 1 chose (None: the space's own). Step 1 is measured once and kept in
    ``start.json``; ``epochs``: the trials' epochs where the config overrides the space's."""
    counts = [auto_count(b) for b in starts]
    fixed = tuple(b for b, c in zip(starts, counts, strict=True) if c is None)
    ks = [c for c in counts if c is not None]
    if not ks:
        return fixed, None, None
    ratios, widths = space_levels(space)
    depths = space_depths(space)
    k = max(ks)
    if "auto" in starts:  # the default count leaves the bit-widths their turns beside depth
        k = max(k, DEFAULT_K + min(len(depths) - 1, DEPTH_EXTRA))
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
        bits_s = time.perf_counter() - began
        lr = measure_lr(
            task,
            space,
            lr_students(ratios, bits),
            epochs=epochs,
            teacher=teacher,
            options=options,
            quiet=quiet,
        )
        record = {
            "seconds": round(time.perf_counter() - began, 2),
            "bit_widths_seconds": round(bits_s, 2),
            "bit_widths": measured,
            "kept_bits": bits,
            "lr": lr,
            "plan": StartPlan(
                tuple(bits),
                tuple(ratios),
                k=k,
                tolerance=allowed_drop(objectives),
                depths=tuple(depths),
            ).to_dict(),
            "stages": {st.name: list(st.blocks) for st in space.stages} if depths[1:] else {},
        }
        run_dir.write_json(START_FILE, record)
        if not quiet:
            print(
                f"\rstart: bit-widths {', '.join(map(str, bits))} kept of "
                f"{', '.join(map(str, widths))} (measured without training in "
                f"{bits_s:.0f} s); "
                + (
                    ""
                    if lr is None
                    else f"learning rate {lr['chosen']:g} (mean accuracy "
                    + ", ".join(f"{k}: {v:.4f}" for k, v in lr["mean_accuracy"].items())
                    + f" on {' and '.join(lr['students'])}, {lr['seconds']:.0f} s); "
                )
                + "prune ratios by bisection over "
                f"{ratios[0]:g}..{ratios[-1]:g}"
                + (
                    f" at depths {', '.join(map(str, depths))} (blocks dropped per stage)"
                    if depths[1:]
                    else ""
                ),
                file=sys.stderr,
                flush=True,
            )
    lr = record.get("lr")
    return fixed, StartPlan.from_dict(record["plan"]), None if lr is None else float(lr["chosen"])


__all__ = [
    "StartPlan",
    "auto_count",
    "kept_bits",
    "lr_students",
    "measure_bits",
    "space_depths",
    "space_levels",
    "start_plan",
    "uniform_name",
]
