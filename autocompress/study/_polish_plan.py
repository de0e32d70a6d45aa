"""The polish stage's plan: its settings (config ``polish:``), which trials it polishes, and
how a polished trial stands in for its search-time record.

A search trial fine-tunes briefly, so its accuracy says how fast a policy recovers, not how
far. After the search, ``candidates`` trials are re-trained from the teacher with the full
budget (``epochs``, a warm-up then a ``cosine`` or ``linear`` decay of the learning rate),
converted and measured on the artifact like a trial (``study.polish`` runs them).

Which trials (:func:`pick_candidates`), deterministic from the records:

1. the pool: measured trials (complete, or infeasible only by accuracy) that compress
   something, meet every constraint on a cost (size, latency...), and whose accuracy is within
   ``margin`` times the objectives' accuracy bound (``max_drop: 0.01`` and ``margin: 3``: at
   most 3 points below the teacher), since a long fine-tune recovers what a short one missed;
2. half the candidates (rounded up) from the pool's trials that already meet every
   constraint, then the rest from the whole pool: long fine-tunes do not rescue every trial
   (digits' #11 came back from 7.5 points down to above the teacher; MiniLM with all six
   encoder layers dropped stayed 9 points down);
3. within each step, non-dominated sorting on the objectives; whole fronts are taken while
   they fit; from the front that does not fit, points spread over the costs (size, latency):
   the extremes first (the smallest, the fastest), then each time the point farthest from
   those taken, on each cost's log-ratio to the teacher scaled to [0, 1]: not the most
   accurate.

A polished trial's figures replace its search-time ones on the front (:func:`with_polish`)
unless the polish lost accuracy (both artifacts are real; the better one stands); the
search-time figures stay in ``trials.jsonl`` and under the point's ``search`` key.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from autocompress.errors import ConfigError
from autocompress.measure.directions import Direction
from autocompress.measure.metrics import comparable
from autocompress.policy import LR_SCHEDULES, Policy
from autocompress.study.objectives import ObjectiveSet
from autocompress.study.pareto import front
from autocompress.study.records import TrialState


@dataclass(frozen=True)
class PolishSettings:
    """``polish: {candidates, epochs, lr, warmup, schedule, margin}``."""

    candidates: int = 3  # how many trials are polished
    # each one's fine-tuning epochs; None: EPOCHS_FACTOR x the candidate's own search epochs
    epochs: int | None = None
    lr: float | None = None  # None: each candidate's own learning rate
    warmup: float = 0.05  # fraction of the steps the learning rate warms up over
    schedule: str = "cosine"  # then decays: cosine or linear (constant: no schedule)
    margin: float = 3.0  # the pool: accuracy within margin x the objectives' accuracy bound


# The config's default for ``polish:`` (False: no polish stage; True: PolishSettings()).
DEFAULT_POLISH: bool | dict[str, Any] = True
# ``epochs: null`` (the default): a candidate is polished this many times its search epochs
EPOCHS_FACTOR = 8
# With a ``budget:``, at most this share of it is kept for the polish (the search stops asking
# earlier); from RESERVE_TRIALS trials on, the reserve is the polish's estimated cost when less
# (``polish_reserve``).
POLISH_BUDGET_SHARE = 0.25
RESERVE_TRIALS = 3
RESERVE_MARGIN = 1.25

_KEYS = tuple(f.name for f in dataclasses.fields(PolishSettings))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _key_problem(key: str, value: Any) -> str | None:
    if key == "epochs" and value is None:
        return None
    if key in ("candidates", "epochs"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return "must be an integer >= 1"
    elif key == "lr":
        if value is not None and not (_number(value) and value > 0):
            return "must be a number > 0 or null (each candidate's own)"
    elif key == "warmup":
        if not (_number(value) and 0 <= value < 1):
            return "must be a fraction of the steps in [0, 1)"
    elif key == "schedule":
        if value not in LR_SCHEDULES:
            return f"must be one of {', '.join(LR_SCHEDULES)}"
    elif key == "margin" and not (_number(value) and value >= 1):
        return "must be a number >= 1"
    return None


def polish_problem(value: Any) -> str | None:
    """What is wrong with a ``polish:`` value (None when it is fine), naming the key."""
    if isinstance(value, bool) or value is None:
        return None
    if not isinstance(value, Mapping):
        return "must be false, true or a mapping, e.g. {candidates: 3, epochs: 12}"
    for key in value:
        if key not in _KEYS:
            return f"has unknown key polish.{key}; allowed: {', '.join(_KEYS)}"
    for key, item in value.items():
        problem = _key_problem(key, item)
        if problem:
            return f"has polish.{key} = {item!r}: {problem}"
    return None


def polish_settings(value: Any) -> PolishSettings | None:
    """The settings a checked ``polish:`` value means (None: no polish stage)."""
    if value is None or value is False:
        return None
    if value is True:
        return PolishSettings()
    problem = polish_problem(value)
    if problem:
        raise ConfigError(f"polish: {problem}")
    return PolishSettings(**dict(value))


def polish_epochs(policy: Policy, settings: PolishSettings) -> int:
    """The polish's epochs for a candidate searched with ``policy``."""
    if settings.epochs is not None:
        return settings.epochs
    return EPOCHS_FACTOR * max(1, policy.finetune.epochs)


def polished_policy(policy: Policy, settings: PolishSettings) -> Policy:
    """``policy`` with the polish's fine-tuning: its epochs, schedule and warm-up."""
    finetune = dataclasses.replace(
        policy.finetune,
        epochs=polish_epochs(policy, settings),
        lr=settings.lr if settings.lr is not None else policy.finetune.lr,
        schedule=settings.schedule,
        warmup=settings.warmup if settings.schedule != "constant" else 0.0,
    )
    return dataclasses.replace(policy, finetune=finetune)


def polish_reserve(
    records: Iterable[Mapping[str, Any]], settings: PolishSettings, cap: float
) -> float:
    """Seconds of a budget to keep for the polish: ``candidates`` times the median cost of the
    complete trials that trained, each scaled by its polish's epochs over its own (a trial's
    conversion and timing scaled too: an over-estimate), times ``RESERVE_MARGIN``, plus the
    longest such trial (the trial running when the search stops asking still finishes); at most
    ``cap``, and ``cap`` until ``RESERVE_TRIALS`` such trials finished. On the test encoder a
    60 s budget kept 15 s where its polish took 2 s."""
    costs, longest = [], 0.0
    for r in records:
        if r.get("state") != TrialState.COMPLETE or not r.get("duration_s"):
            continue
        policy = Policy.from_dict(r["policy"])
        if policy.finetune.epochs > 0:
            scale = polish_epochs(policy, settings) / policy.finetune.epochs
            costs.append(float(r["duration_s"]) * scale)
            longest = max(longest, float(r["duration_s"]))
    if len(costs) < RESERVE_TRIALS:
        return cap
    costs.sort()
    # plus the longest trial: the one running when the search stops asking finishes first
    return min(cap, RESERVE_MARGIN * settings.candidates * costs[len(costs) // 2] + longest)


# -- which trials ---------------------------------------------------------------------------
def _compresses(policy: Mapping[str, Any]) -> bool:
    p = Policy.from_dict(policy)
    bits = [p.quant_default, *p.quant_layers.values()]
    prunes = [p.prune_default, *p.prune_layers.values(), p.sparsity_default]
    return bool(p.drop_blocks) or any(b < 32 for b in bits) or any(r > 0 for r in prunes)


def _in_pool(
    record: Mapping[str, Any], objectives: ObjectiveSet, teacher: Mapping[str, Any], margin: float
) -> bool:
    if record.get("state") not in (TrialState.COMPLETE, TrialState.INFEASIBLE):
        return False
    metrics = record.get("metrics") or {}
    if any(metrics.get(m) is None for m in objectives.metrics):
        return False
    if not _compresses(record.get("policy") or {}):
        return False
    own = {**teacher, **(record.get("teacher") or {})}
    recoverable = {o.metric for o in objectives.objectives if o.direction == Direction.MAXIMIZE}
    for c in objectives.constraints:
        try:
            violation = c.violation(metrics, own)
        except (KeyError, TypeError, ValueError):
            return False
        slack = 0.0
        if c.metric in recoverable and c.bound == "max_drop":
            slack = c.value
        elif c.metric in recoverable and c.bound == "min" and c.metric in own:
            slack = max(0.0, float(own[c.metric]) - c.value)
        if violation > (margin - 1.0) * slack:
            return False
    return True


def _layers(rows: list[dict[str, Any]], specs: Sequence[tuple[str, str]], teacher: Any) -> list:
    """Non-dominated sorting: the front, then the front of the rest, ..."""
    layers, rest = [], list(rows)
    while rest:
        layer = front(rest, specs, teacher)
        taken = {id(r) for r in layer}
        layers.append(layer)
        rest = [r for r in rest if id(r) not in taken]
    return layers


def _spread(
    layer: list[Mapping[str, Any]],
    chosen: list[Mapping[str, Any]],
    k: int,
    costs: Sequence[str],
    teacher: Mapping[str, Any],
) -> list[Mapping[str, Any]]:
    """``k`` points of ``layer`` spread over the costs: extremes first, then farthest points."""

    def coords(rows: Iterable[Mapping[str, Any]]) -> list[list[float]]:
        return [
            [math.log(max(1e-12, comparable(r, c, teacher) or 1e-12)) for c in costs] for r in rows
        ]

    everything = [*chosen, *layer]
    raw = coords(everything)
    lows = [min(v[i] for v in raw) for i in range(len(costs))]
    spans = [max(v[i] for v in raw) - lows[i] or 1.0 for i in range(len(costs))]
    scaled = [[(v[i] - lows[i]) / spans[i] for i in range(len(costs))] for v in raw]
    taken = scaled[: len(chosen)]
    left = list(range(len(chosen), len(everything)))
    picked: list[Mapping[str, Any]] = []
    accuracy = [float(r["metrics"].get("accuracy") or 0.0) for r in everything]

    def take(i: int) -> None:
        taken.append(scaled[i])
        picked.append(everything[i])
        left.remove(i)

    if not chosen:  # the extremes first: the lowest of each cost (the best accuracy on ties)
        for axis_ in range(len(costs)):
            best = min(
                range(len(everything)),
                key=lambda i: (scaled[i][axis_], -accuracy[i], everything[i]["number"]),
            )
            if len(picked) < k and best in left:
                take(best)
    while left and len(picked) < k:  # then each time the point farthest from those taken
        take(
            max(
                left,
                key=lambda i: (
                    min((math.dist(scaled[i], t) for t in taken), default=0.0),
                    accuracy[i],
                    -everything[i]["number"],
                ),
            )
        )
    return picked


def pick_candidates(
    records: Iterable[Mapping[str, Any]],
    objectives: ObjectiveSet,
    teacher: Mapping[str, Any],
    settings: PolishSettings,
) -> list[Mapping[str, Any]]:
    """The trials to polish (search-time records), in the order they are picked."""
    records = list(records)
    meeting = {r["number"] for r in records if _meets(r)}
    pool = [
        {**r, "state": TrialState.COMPLETE}
        for r in sorted(records, key=lambda r: r["number"])
        if _in_pool(r, objectives, teacher, settings.margin)
    ]
    specs = [(o.metric, str(o.direction)) for o in objectives.objectives]
    costs = [o.metric for o in objectives.objectives if o.direction == Direction.MINIMIZE]
    costs = costs or [m for m, _ in specs]
    # at least half the candidates from the trials that already meet every constraint: the
    # rest of the pool is a bet on recovery that does not always pay (MiniLM with every
    # encoder layer dropped stayed 9 points down after 16 epochs)
    met = [r for r in pool if r["number"] in meeting]
    chosen = _take(met, [], (settings.candidates + 1) // 2, specs, costs, teacher)
    rest = [r for r in pool if r["number"] not in {c["number"] for c in chosen}]
    return _take(rest, chosen, settings.candidates, specs, costs, teacher)


def _meets(record: Mapping[str, Any]) -> bool:
    return record.get("state") == TrialState.COMPLETE


def _take(
    rows: list[Mapping[str, Any]],
    chosen: list[Mapping[str, Any]],
    k: int,
    specs: Sequence[tuple[str, str]],
    costs: Sequence[str],
    teacher: Mapping[str, Any],
) -> list[Mapping[str, Any]]:
    """``chosen`` plus points of ``rows`` up to ``k`` in all: whole non-dominated fronts while
    they fit, then a spread of the front that does not."""
    chosen = list(chosen)
    for layer in _layers(rows, specs, teacher) if len(chosen) < k else ():
        if len(chosen) + len(layer) <= k:
            chosen += layer
        else:
            chosen += _spread(layer, chosen, k - len(chosen), costs, teacher)
        if len(chosen) >= k:
            break
    return chosen


# -- a polished trial on the front ----------------------------------------------------------
_SEARCH_KEYS = ("state", "policy", "teacher", "epochs", "duration_s", "error")


def _lost_accuracy(record: Mapping[str, Any], polished: Mapping[str, Any]) -> bool:
    """The polish ended less accurate than the search-time trial (same policy, less training)."""
    before = (record.get("metrics") or {}).get("accuracy")
    after = (polished.get("metrics") or {}).get("accuracy")
    return before is not None and after is not None and float(after) < float(before)


def with_polish(
    records: Iterable[Mapping[str, Any]], polishes: Mapping[int, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """``records`` with each polished trial's figures in place of its search-time ones.

    A polished record has ``polished: True``, its search-time figures under ``search`` (the
    metrics without the per-layer table) and the polish under ``polish`` (its cost in seconds,
    artifact folder, epochs); ``duration_s`` stays the search-time trial's cost. A polish that
    failed, or ended less accurate than the trial, leaves the search-time record, with the
    polish under ``polish`` (``kept: "search"`` when it lost accuracy)."""
    out = []
    for record in records:
        done = polishes.get(int(record["number"]))
        if done is None:
            out.append(dict(record))
            continue
        link = {
            "state": done.get("state"),
            "duration_s": done.get("duration_s"),
            "artifact": done.get("artifact"),
            "epochs": ((done.get("policy") or {}).get("finetune") or {}).get("epochs"),
            "accuracy": (done.get("metrics") or {}).get("accuracy"),
        }
        if done.get("error"):
            link["error"] = done["error"]
        if done.get("state") == TrialState.FAILED or not done.get("metrics"):
            out.append({**record, "polish": link})
            continue
        # both artifacts are real: the better one stands (the trial's when the polish lost
        # accuracy, or broke a constraint the trial met)
        regressed = record.get("state") == TrialState.COMPLETE != done.get("state")
        if regressed or _lost_accuracy(record, done):
            out.append({**record, "polish": {**link, "kept": "search"}})
            continue
        search = {k: record.get(k) for k in _SEARCH_KEYS}
        search["metrics"] = {
            k: v for k, v in (record.get("metrics") or {}).items() if not isinstance(v, dict)
        }
        out.append(
            {
                **record,
                **{k: done.get(k) for k in ("state", "policy", "metrics", "teacher", "epochs")},
                "error": done.get("error"),
                "polished": True,
                "polish": link,
                "search": search,
            }
        )
    return out


__all__ = [
    "DEFAULT_POLISH",
    "POLISH_BUDGET_SHARE",
    "PolishSettings",
    "pick_candidates",
    "polish_problem",
    "polish_reserve",
    "polish_settings",
    "polished_policy",
    "with_polish",
]
