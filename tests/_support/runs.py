"""Comparing searches: the same policies and the same metrics except timings (latency varies)."""

from __future__ import annotations

from typing import Any


def timing_free(value: Any) -> Any:
    """``value`` without the figures that are timings (latency, speedup)."""
    if isinstance(value, dict):
        return {
            k: timing_free(v)
            for k, v in value.items()
            if "latency" not in k and k not in ("speedup", "duration_s")
        }
    return value


def same_trials(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """Two searches' trial records agree on numbers, policies, states, metrics and epochs."""
    assert [r["number"] for r in a] == [r["number"] for r in b]
    assert [r["policy"] for r in a] == [r["policy"] for r in b]
    assert [r["state"] for r in a] == [r["state"] for r in b]
    for x, y in zip(a, b, strict=True):
        assert timing_free(x["metrics"]) == timing_free(y["metrics"]), x["number"]
        assert [e["accuracy"] for e in x["epochs"]] == [e["accuracy"] for e in y["epochs"]]
