"""The built-in Ray Tune schedulers, ``auto``, ``asha`` and ``none``, registered by name in
``autocompress.study.samplers`` (which imports this module only when one is built)."""

from __future__ import annotations

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


def builtin_scheduler(
    kind: str, epochs: int, *, metric: str, time_attr: str
) -> ASHAScheduler | FIFOScheduler:
    """The built-in schedulers ``auto``, ``asha`` and ``none`` (registered in ``samplers``)."""
    if kind == "none" or (kind == "auto" and epochs < 2):
        return FIFOScheduler()
    # reduction factor 2: stop below the median at a rung (4 would keep only the top quarter,
    # too harsh for searches of a few dozen trials)
    return ASHAScheduler(
        metric=metric,
        mode="max",
        time_attr=time_attr,
        max_t=max(epochs, 1),
        grace_period=1,
        reduction_factor=2,
    )


__all__ = ["builtin_scheduler"]
