"""Which runtime: ONE search of the digits example measured on onnxruntime, openvino and
executorch (``targets: [...]``, the search steered by the first), each trial fine-tuned once and
converted for each; per target, its front and its fastest artifact within 1 point of the
teacher's accuracy (the teacher measured on that runtime).

    .venv/bin/python benchmarks/which_runtime.py [--trials 12] [--backend local|ray]

Writes benchmarks/results/which_runtime.json (the CPU named).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from _common import RESULTS, ROOT

from autocompress.api import run_search
from autocompress.study.config import SearchConfig
from autocompress.targets.runtimes import cpu_record

TARGETS = ["onnxruntime", "openvino", "executorch"]
FIGURES = ("accuracy", "size_bytes", "latency_ms", "speedup", "compression")


def _figures(number: int, entry: dict[str, Any]) -> dict[str, Any]:
    return {"number": number, **{k: entry.get(k) for k in FIGURES}, "modes": entry.get("modes")}


def summarize(
    result: Any, pareto: dict[str, Any], polished: list[dict[str, Any]]
) -> dict[str, Any]:
    """Per target: the teacher, the front, the fastest artifact within 1 point (a trial's, or
    its polished one's: both are real artifacts, measured alike), errors."""
    out: dict[str, Any] = {}
    for name in TARGETS:
        teacher = result.teacher["targets"][name]
        entries = [
            (r["number"], r["metrics"]["targets"][name], False)
            for r in result.trials
            if r["state"] == "complete" and name in (r["metrics"].get("targets") or {})
        ] + [
            (r["number"], r["metrics"]["targets"][name], True)
            for r in polished
            if r["state"] == "complete" and name in (r["metrics"].get("targets") or {})
        ]
        measured = [(n, e, p) for n, e, p in entries if "error" not in e]
        close = [t for t in measured if teacher["accuracy"] - t[1]["accuracy"] <= 0.01]
        fastest = min(close, key=lambda t: t[1]["latency_ms"], default=None)
        out[name] = {
            "teacher": {k: teacher[k] for k in ("accuracy", "size_bytes", "latency_ms")},
            "front": [_figures(t["number"], t["metrics"]) for t in pareto["fronts"][name]],
            "fastest_within_1_point": fastest
            and {**_figures(fastest[0], fastest[1]), "polished": fastest[2]},
            "errors": {n: e["error"] for n, e, p in entries if "error" in e and not p},
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--backend", default="local", choices=("local", "ray"))
    parser.add_argument("--out", help="keep the run directory here (default: a temporary one)")
    args = parser.parse_args()
    folder = ROOT / "examples" / "digits"
    data = yaml.safe_load((folder / "search-ort.yaml").read_text())
    data.pop("target")
    data.update(name="digits-which-runtime", targets=TARGETS, trials=args.trials)
    data.update(backend=args.backend, tracking=False)
    with tempfile.TemporaryDirectory(prefix="acw") as tmp:
        data["out"] = args.out or str(Path(tmp) / "run")
        config = SearchConfig.from_dict(data, source="which_runtime", base_dir=str(folder))
        load_before = os.getloadavg()
        began = time.perf_counter()
        result = run_search(config)
        wall = time.perf_counter() - began
        pareto = json.loads((Path(data["out"]) / "pareto.json").read_text())
        polish_file = Path(data["out"]) / "polish.jsonl"
        lines = polish_file.read_text().splitlines() if polish_file.is_file() else []
        polished = [json.loads(line) for line in lines if line.strip()]
    states = [r["state"] for r in result.trials]
    figures = {
        "cpu": cpu_record(),
        "trials": len(result.trials),
        "wall_seconds": round(wall, 1),
        "loadavg_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "backend": args.backend,
        "states": {s: states.count(s) for s in sorted(set(states))},
        "objective_target": config.target,
        "targets": summarize(result, pareto, polished),
    }
    for name, got in figures["targets"].items():
        best = got["fastest_within_1_point"]
        line = "none within 1 point" if best is None else (
            f"#{best['number']}{' polished' if best['polished'] else ''}: accuracy {best['accuracy']:.4f}, {best['latency_ms']:.3f} ms "
            f"({best['speedup']:.2f}x), {best['compression']:.1f}x smaller"
        )  # fmt: skip
        print(f"{name}: teacher {got['teacher']['latency_ms']:.3f} ms; front of "
              f"{len(got['front'])}; fastest within 1 point {line}")  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "which_runtime.json").write_text(json.dumps(figures, indent=2))
    (RESULTS / "which_runtime.md").write_text(markdown(figures))
    print(f"wrote {RESULTS / 'which_runtime.json'} and which_runtime.md")


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def markdown(figures: dict[str, Any]) -> str:
    """The README's "which runtime" table: per target, the fastest artifact within 1 point of
    that runtime's own teacher, and the size of its front."""
    cpu = figures["cpu"]
    lines = [
        f"One search of the digits example ({figures['trials']} trials, "
        f"{figures['backend']} backend, {figures['wall_seconds']:.0f} s wall) measured on every "
        f"runtime; CPU: {cpu.get('model', '?')} (AVX-512 VNNI: {cpu.get('vnni')}, AVX2: "
        f"{cpu.get('avx2')}), "
        "one thread, batch 1; speedup and compression against the fp32 teacher on the same runtime.",
        "",
        "| runtime | teacher ms | front size | fastest within 1 point | accuracy (teacher) | size | ms | speedup | smaller |",
        "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: |",
    ]  # fmt: skip
    for name, got in figures["targets"].items():
        t, best = got["teacher"], got["fastest_within_1_point"]
        head = f"| {name} | {t['latency_ms']:.3f} | {len(got['front'])} |"
        if best is None:
            lines.append(head + " none | | | | | |")
            continue
        lines.append(
            f"{head} trial #{best['number']}{' (polished)' if best.get('polished') else ''} | "
            f"{best['accuracy']:.4f} ({t['accuracy']:.4f}) | "
            f"{_kib(best['size_bytes'])} | {best['latency_ms']:.3f} | {best['speedup']:.2f}x | "
            f"{best['compression']:.1f}x |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
