"""What a caller hears from one trial while it runs: :class:`TrialHooks`, one object.

``compress`` calls ``on_stage`` at each stage ("prune", "fine-tune epoch 1/3", "convert", ...),
``on_structure`` with the pruned structure's size and latency before fine-tuning (it may raise
:class:`StopTrial`; the structure is measured only when it is set), ``on_epoch`` after each
fine-tuning epoch with the student, and ``gate.step`` between training batches (timing on a
shared machine, see ``autocompress.measure.gate``). A search trial
(``autocompress.study._trial``) also calls ``on_score`` with each epoch's task metric.
Everything defaults to doing nothing.

>>> hooks = TrialHooks(on_stage=print)
>>> hooks.replace(on_score=lambda epoch, value: None).on_stage is print
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from autocompress.measure.gate import Gate, NoGate
from autocompress.techniques.finetune import EpochCallback

StageCallback = Callable[[str], None]
StructureCallback = Callable[[dict[str, Any]], None]
ScoreCallback = Callable[[int, float], None]  # (epoch from 1, the task metric after it)


class StopTrial(Exception):
    """Raised by an ``on_structure`` callback to stop a candidate before fine-tuning."""


def _ignore(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class TrialHooks:
    """The callbacks of one trial, each a no-op unless given."""

    on_stage: StageCallback = _ignore
    on_structure: StructureCallback | None = None  # None: the structure is not measured
    on_epoch: EpochCallback = _ignore
    on_score: ScoreCallback = _ignore
    gate: Gate = NoGate()

    def replace(self, **changes: Any) -> TrialHooks:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


__all__ = ["ScoreCallback", "StageCallback", "StopTrial", "StructureCallback", "TrialHooks"]
