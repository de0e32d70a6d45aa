"""Compression results against what a user would do instead, measured in one process.

For each example (digits, minilm) and each target (torch, onnxruntime): the best Pareto point
of a finished search within the example's accuracy budget of the teacher (1 point of accuracy
for digits, 0.02 WordSim-353 Spearman for MiniLM), exported from its run directory, beside
ONNX Runtime ``quantize_static`` (QDQ, U8S8, per-channel, MinMax-calibrated on the task's
training batches) of the teacher's fp32 ONNX export, ``quantize_dynamic`` for the transformer,
and the fp32 ORT and eager torch teachers. All are timed round-robin in this process (batch 1,
one thread); size is the artifact's bytes; accuracy is the task metric computed with it.
Speedup and size reduction are against the teacher on the same runtime.

Beside the search points, each example's hand-written policies (``Example.policies``, or
``--policy EXAMPLE[:TARGET]=FILE``) are applied with ``compress`` (no search) on their target:
what our artifact gives for a policy a user would write by hand.

    .venv/bin/python benchmarks/compression.py                      # every example and target
    .venv/bin/python benchmarks/compression.py --examples minilm --run minilm:torch=runs/x
    .venv/bin/python benchmarks/compression.py --examples minilm --policy minilm:torch=my.json

Writes benchmarks/results/compression.json (merged per example) and compression.md (into the
README too); `--name NAME` writes NAME.{json,md} instead and leaves the README alone.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT  # noqa: E402
from _peers import (  # noqa: E402
    Contender,
    Session,
    latency,
    quantize_dynamic_peer,
    quantize_static_peer,
    round_robin,
)
from _points import policy_point, search_point  # noqa: E402

from autocompress.analysis.layers import list_layers  # noqa: E402
from autocompress.policy import Policy  # noqa: E402
from autocompress.targets import get_target  # noqa: E402
from autocompress.targets.onnx import export_onnx  # noqa: E402
from autocompress.targets.runtimes import cpu_record  # noqa: E402
from autocompress.task import Task, load_task  # noqa: E402

MD_OUT = RESULTS / "compression.md"
TARGET_NAMES = ("torch", "onnxruntime")
REFERENCE = {"torch": "teacher (eager torch fp32)", "onnxruntime": "teacher (ORT fp32)"}


Evaluator = Callable[[torch.nn.Module], dict[str, float]]


def _minilm_extra() -> Evaluator:
    """SimLex-999 and Lee-documents Spearman (examples/minilm/task.py), data tokenized once."""
    spec = importlib.util.spec_from_file_location("minilm_task", ROOT / "examples/minilm/task.py")
    assert spec is not None and spec.loader is not None
    minilm = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = minilm  # its dataclasses look their module up
    spec.loader.exec_module(minilm)
    suite = {k: v for k, v in minilm.benchmarks().items() if k != "wordsim353"}
    return lambda model: minilm.evaluate_all(model, suite)


@dataclass(frozen=True)
class Example:
    """An example of examples/<name>/ (its task: ``task.py:build_task``) and how it is judged."""

    metric: str  # what the task metric is, for the table
    max_drop: float
    transformer: bool
    runs: dict[str, str]  # target -> default run directory
    extra: Callable[[], Evaluator] | None = None  # metrics reported beside the task's
    policies: dict[str, tuple[str, ...]] | None = None  # target -> hand-written policy files


EXAMPLES: dict[str, Example] = {
    "digits": Example(
        metric="accuracy",
        max_drop=0.01,
        transformer=False,
        runs={"torch": "runs/digits-cnn", "onnxruntime": "runs/digits-ort"},
        # the second block of each stage dropped, half of every prune group, 4-bit weights,
        # 25 epochs of distillation (2-3 s each): what the searches' 1-2 epochs cannot recover
        policies={
            "torch": ("examples/digits/policy-drop-p50-int4.json",),
            "onnxruntime": ("examples/digits/policy-drop-p50-int4.json",),
        },
    ),
    "minilm": Example(
        metric="WordSim-353 Spearman",
        max_drop=0.02,
        transformer=True,
        runs={"torch": "runs/minilm-torch", "onnxruntime": "runs/minilm-ort"},
        extra=_minilm_extra,
        # PyTorch's dynamic int8 Linear (7-bit activations on x86) costs WordSim ~0.03 without
        # fine-tuning; the ORT artifact's calibrated static int8 ~0.005. policy-drop2-ffn50-int8:
        # layers 1 and 4 dropped, half the FFN neurons pruned, int8, 4 epochs of distillation
        policies={
            "torch": (
                "examples/minilm/policy-int8-ft.json",
                "examples/minilm/policy-drop2-ffn50-int8.json",
            ),
            "onnxruntime": (
                "examples/minilm/policy-int8.json",
                "examples/minilm/policy-drop2-ffn50-int8.json",
            ),
        },
    ),
}


def references(task: Task, work: Path) -> list[Contender]:
    torch_target = get_target("torch")
    pt = work / "teacher.pt"
    bits = {i.path: 32 for i in list_layers(task.model)}
    torch_target.save(task.model, pt, bits=bits, structure={}, meta={"policy": Policy().to_dict()})
    onnx_path = export_onnx(task.model, task.example_inputs, work / "teacher.onnx")
    return [
        Contender(REFERENCE["torch"], "torch", task.model, pt, "reference"),
        Contender(
            REFERENCE["onnxruntime"], "onnxruntime", Session(onnx_path), onnx_path, "reference"
        ),
    ]


def peers(task: Task, example: Example, fp32: Path, work: Path) -> list[Contender]:
    static = quantize_static_peer(fp32, work / "static.onnx", task.train_loader)
    out = [
        Contender(
            "ORT quantize_static (QDQ U8S8 per-channel)",
            "onnxruntime",
            Session(static),
            static,
            "peer",
        )
    ]
    if example.transformer:
        dynamic = quantize_dynamic_peer(fp32, work / "dynamic.onnx")
        out.append(Contender("ORT quantize_dynamic (int8 per-channel)", "onnxruntime", Session(dynamic), dynamic, "peer"))  # fmt: skip
    return out


def measure(
    task: Task, example: Example, contenders: list[Contender], *, rounds: int, per_round: int
) -> list[dict[str, Any]]:
    round_robin(contenders, task.example_inputs, rounds=rounds, per_round=per_round)
    extra = example.extra() if example.extra is not None else None
    rows = []
    for c in contenders:
        print(f"evaluating {c.name}", flush=True)
        row: dict[str, Any] = {
            "name": c.name,
            "kind": c.kind,
            "runtime": c.runtime,
            "accuracy": task.evaluate(c.model),
            "size_bytes": c.artifact.stat().st_size,
            **latency(c),
            **c.info,
        }
        if extra is not None:
            row["extra"] = extra(c.model)
        if isinstance(c.model, Session):
            row["ort_ops"] = c.model.ops
        rows.append(row)
    teacher = {r["runtime"]: r for r in rows if r["kind"] == "reference"}
    for row in rows:
        ref = teacher[row["runtime"]]
        row["accuracy_drop"] = teacher["torch"]["accuracy"] - row["accuracy"]
        row["size_reduction"] = ref["size_bytes"] / row["size_bytes"]
        row["speedup"] = ref["latency_ms"] / row["latency_ms"]
        row["vs"] = ref["name"]
    return rows


def run_example(
    name: str,
    runs: dict[str, Path],
    policies: list[tuple[str, Path]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    example = EXAMPLES[name]
    print(f"== {name}", flush=True)
    task = load_task(f"{ROOT / 'examples' / name / 'task.py'}:build_task")
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"compression-{name}-") as tmp:
        work = Path(tmp)
        refs = references(task, work)
        contenders = refs + peers(task, example, refs[1].artifact, work)
        for target in args.targets:
            point = search_point(
                task, example.max_drop, target, runs[target], work, by=args.by, notes=notes
            )
            if point is not None:
                contenders.append(point)
        for target, policy_file in policies:
            point = policy_point(task, target, policy_file, work, notes=notes)
            if point is not None:
                contenders.append(point)
        rows = measure(task, example, contenders, rounds=args.rounds, per_round=args.per_round)
    return {
        "metric": example.metric,
        "max_accuracy_drop": example.max_drop,
        "latency_inputs": [list(t.shape) for t in task.example_inputs],
        "rows": rows,
        "notes": notes,
        "machine": _machine(),
        "load_average_1min": os.getloadavg()[0],
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/compression.py", *sys.argv[1:]]),
    }


def _machine() -> str:
    """The machine, with what decides ORT's int8 speed: VNNI or AVX2-only."""
    cpu = cpu_record()
    model = cpu["model"] or platform.processor() or platform.machine()
    isa = "AVX-512 VNNI" if cpu["vnni"] else ("AVX2, no VNNI" if cpu["avx2"] else "no AVX2")
    return (
        f"{os.cpu_count()} vCPU {model} ({isa}), Python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, res in results.items():
        lines += [
            f"### {name}: {res['metric']}, batch 1, one thread",
            "",
            f"`{res['command']}` — {res['machine']}, {res['date']}, 1-minute load average "
            f"{res.get('load_average_1min', float('nan')):.1f} at the end. Speedup and size reduction "
            "are against the teacher on the same runtime; all rows timed round-robin in one process.",
            "",
            f"| model | runtime | {res['metric']} | drop | size | × smaller | latency (median) | × faster |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in res["rows"]:
            extra = "".join(f" / {k} {v:.3f}" for k, v in r.get("extra", {}).items())
            lines.append(
                f"| {r['name']} | {r['runtime']} | {r['accuracy']:.4f}{extra} | "
                f"{r['accuracy_drop']:+.4f} | {_mb(r['size_bytes'])} | {r['size_reduction']:.2f}× | "
                f"{r['latency_ms']:.3f} ms | {r['speedup']:.2f}× |"
            )
        lines += ["", *_verdict(res), *(f"- note: {n}" for n in res["notes"]), ""]
    return "\n".join(lines)


def _verdict(res: dict[str, Any]) -> list[str]:
    """Per column (size, latency): does our best point (a search point or a hand policy)
    within budget beat every peer?"""
    budget = res["max_accuracy_drop"]
    ours = ("search", "policy")
    search = [r for r in res["rows"] if r["kind"] in ours and r["accuracy_drop"] <= budget]
    peers = [r for r in res["rows"] if r["kind"] == "peer"]
    if not search:
        return [f"- no point of ours within {budget} of the teacher in this table"]
    out = []
    for column, label in (("size_bytes", "size"), ("latency_ms", "latency")):
        best = min(search, key=lambda r: r[column])
        winners = [p for p in peers if p[column] < best[column]]
        for p in winners:
            within = (
                ""
                if p["accuracy_drop"] <= budget
                else f", {p['accuracy_drop']:.4f} below the teacher"
            )
            out.append(f"- **a peer wins {label}**: {p['name']}{within}")
        if not winners:
            out.append(f"- {label}: {best['name']} beats every peer")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", nargs="+", choices=sorted(EXAMPLES), default=sorted(EXAMPLES))
    parser.add_argument("--targets", nargs="+", default=list(TARGET_NAMES))
    parser.add_argument(
        "--run", action="append", default=[], metavar="EXAMPLE:TARGET=DIR",
        help="run directory of a search (default runs/<example>-<target>)",
    )  # fmt: skip
    parser.add_argument(
        "--policy", action="append", default=[], metavar="EXAMPLE[:TARGET]=FILE",
        help="hand-written policy applied with compress on TARGET (default: every --targets "
        "one); repeatable; replaces the example's own; EXAMPLE=none: no policy rows",
    )  # fmt: skip
    parser.add_argument("--by", choices=("size", "latency"), default="latency")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=5)
    parser.add_argument(
        "--render", action="store_true", help="only rewrite compression.md and README from the JSON"
    )
    parser.add_argument(
        "--name", default="compression",
        help="results file stem: benchmarks/results/NAME.{json,md}; only the default "
        "'compression' is written into the README (use another for a second machine)",
    )  # fmt: skip
    args = parser.parse_args()
    json_out, md_out = RESULTS / f"{args.name}.json", RESULTS / f"{args.name}.md"
    given = {}
    for spec in args.run:
        key, _, path = spec.partition("=")
        given[key] = Path(path)
    for name in [] if args.render else args.examples:
        runs = {
            t: given.get(f"{name}:{t}", ROOT / EXAMPLES[name].runs.get(t, f"runs/{name}-{t}"))
            for t in args.targets
        }
        result = run_example(name, runs, _policies(name, args.policy, args.targets), args)
        results = json.loads(json_out.read_text()) if json_out.exists() else {}
        results[name] = result  # merged: other examples' figures stay
        json_out.write_text(json.dumps(results, indent=2) + "\n")
    results = json.loads(json_out.read_text()) if json_out.exists() else {}
    table = markdown(results)
    md_out.write_text(table)
    if md_out == MD_OUT:
        _into_readme(table)
    print(table)


def _policies(example: str, given: list[str], targets: list[str]) -> list[tuple[str, Path]]:
    """(target, policy file) pairs for ``example``: the ``--policy`` ones naming it, else its
    own, on the ``targets`` asked for."""
    pairs = []
    for spec in given:
        key, _, file = spec.partition("=")
        name, _, target = key.partition(":")
        if name == example:
            pairs += [(t, Path(file)) for t in ([target] if target else targets)]
    if not pairs:
        own = EXAMPLES[example].policies or {}
        pairs = [(t, ROOT / f) for t in targets for f in own.get(t, ())]
    return [(t, f) for t, f in pairs if t in targets and f.name != "none"]


def _into_readme(table: str) -> None:
    """Replace the README's block between the compression markers with the fresh table."""
    readme = ROOT / "README.md"
    text = readme.read_text()
    start, end = "<!-- compression:start -->", "<!-- compression:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        readme.write_text(f"{head}{start}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    main()
