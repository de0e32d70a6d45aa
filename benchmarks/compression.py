"""Compression results against what a user would do instead, measured in one process.

For each example (digits, minilm) and each target (``--targets``: torch, onnxruntime, openvino,
executorch): the best Pareto point of a finished search within the example's accuracy budget of
the teacher (1 point of accuracy for digits, 0.02 WordSim-353 Spearman for MiniLM), exported
from its run directory (a several-target search gives each target's own front), beside the
teacher fp32 on that runtime and that runtime's own peer, the tool its users would run on the
teacher instead:

- onnxruntime: ``quantize_static`` (QDQ, U8S8, per-channel, MinMax-calibrated on the task's
  training batches) of the teacher's fp32 ONNX export; ``quantize_dynamic`` for the transformer;
- openvino: ``nncf.quantize`` of the teacher's fp32 IR (CNN), ``nncf.compress_weights`` (int8
  weights) for the transformer; every IR compiled as the target compiles (one thread, one
  stream, ``INFERENCE_PRECISION_HINT=f32``);
- executorch: the XNNPACK quantizer's post-training flow (pt2e, static per-channel; the
  dynamic-activation config for the transformer if the static one fails), lowered to XNNPACK.

The rows of one runtime are timed round-robin in this process (batch 1, one thread); size is
the artifact's bytes (all its files); accuracy is the task metric computed with it. Accuracy
drop, speedup and size reduction are against the teacher on the same runtime. A row a runtime
refuses (a model it cannot lower, bits it does not offer) holds the one-line reason.

Beside the search points, each example's hand-written policies (``Example.policies``, or
``--policy EXAMPLE[:TARGET]=FILE``) are applied with ``compress`` (no search) on their target:
what our artifact gives for a policy a user would write by hand.

    .venv/bin/python benchmarks/compression.py                      # every example, torch + ORT
    .venv/bin/python benchmarks/compression.py --targets onnxruntime openvino executorch --name x
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, int8_machine  # noqa: E402
from _peers import (  # noqa: E402
    Contender,
    Session,
    latency,
    quantize_dynamic_peer,
    quantize_static_peer,
    round_robin,
)
from _points import policy_point, search_point  # noqa: E402
from _target_peers import nncf_compress_weights, nncf_quantize, xnnpack_ptq  # noqa: E402

from autocompress import compress, measure_teacher  # noqa: E402
from autocompress.analysis.layers import list_layers  # noqa: E402
from autocompress.policy import Policy  # noqa: E402
from autocompress.targets import TARGETS, get_target  # noqa: E402
from autocompress.targets.onnx import export_onnx  # noqa: E402
from autocompress.targets.runtimes import cpu_record  # noqa: E402
from autocompress.targets.runtimes import openvino_runtime as ov_rt  # noqa: E402
from autocompress.task import Task, load_task  # noqa: E402

MD_OUT = RESULTS / "compression.md"
TARGET_NAMES = ("torch", "onnxruntime")
REFERENCE = {
    "torch": "teacher (eager torch fp32)",
    "onnxruntime": "teacher (ORT fp32)",
    "openvino": "teacher (OpenVINO fp32, f32 hint)",
    "executorch": "teacher (ExecuTorch XNNPACK fp32)",
}
IDENTITY = {"finetune": {"epochs": 0}, "quant": {"default": 32}}  # the teacher as an artifact


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
        # (int4 on openvino is weight compression; int8 is its and XNNPACK's integer path)
        policies={
            "torch": ("examples/digits/policy-drop-p50-int4.json",),
            "onnxruntime": ("examples/digits/policy-drop-p50-int4.json",),
            "openvino": (
                "examples/digits/policy-drop-p50-int4.json",
                "examples/digits/policy-drop-p50-int8.json",
            ),
            "executorch": ("examples/digits/policy-drop-p50-int8.json",),
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
            "openvino": (
                "examples/minilm/policy-int8.json",
                "examples/minilm/policy-drop2-ffn50-int8.json",
            ),
            "executorch": (
                "examples/minilm/policy-int8.json",
                "examples/minilm/policy-drop2-ffn50-int8.json",
            ),
        },
    ),
}


def guarded(name: str, runtime: str, kind: str, build: Callable[[], Contender]) -> Contender:
    """``build()``, or where the runtime refuses (any error), a row holding the one-line reason."""
    try:
        return build()
    except Exception as exc:  # a refusal is a row of the table, never a crash of the benchmark
        text = " ".join(str(exc).split()) or "no message"
        reason = f"{type(exc).__name__}: {text[:300]}"
        print(f"refused: {name} on {runtime}: {reason}", flush=True)
        return Contender(name, runtime, None, None, kind, error=reason)


def references(
    task: Task, targets: list[str], work: Path, figures: dict[str, dict[str, Any]]
) -> list[Contender]:
    """The teacher fp32 on each target's runtime: the eager model, its ONNX export, and for the
    lowered targets the target's own artifact of the teacher (``IDENTITY``: 32 bits, nothing
    removed, no fine-tuning; the same bytes as ``measure_teacher``'s)."""
    out = []
    if "torch" in targets:
        pt = work / "teacher.pt"
        bits = {i.path: 32 for i in list_layers(task.model)}
        meta = {"policy": Policy().to_dict()}
        get_target("torch").save(task.model, pt, bits=bits, structure={}, meta=meta)
        out.append(Contender(REFERENCE["torch"], "torch", task.model, pt, "reference"))
    if "onnxruntime" in targets:
        onnx_path = export_onnx(task.model, task.example_inputs, work / "teacher.onnx")
        out.append(Contender(REFERENCE["onnxruntime"], "onnxruntime", Session(onnx_path), onnx_path, "reference"))  # fmt: skip
    for target in (t for t in targets if t not in ("torch", "onnxruntime")):
        name = REFERENCE.get(target, f"teacher ({target} fp32)")

        def lowered(target: str = target, name: str = name) -> Contender:
            figures[target] = measure_teacher(task, target=target)
            result = compress(
                task,
                Policy.from_dict(IDENTITY),
                target=target,
                out_dir=work / f"teacher-{target}",
                teacher=figures[target],
            )
            model = get_target(target).load(result.artifact, task.model)
            info = {"graph": result.metrics["graph"]} if "graph" in result.metrics else {}
            return Contender(name, target, model, result.artifact, "reference", info)

        out.append(guarded(name, target, "reference", lowered))
    return out


def peers(task: Task, example: Example, teachers: dict[str, Contender], work: Path) -> list[Contender]:  # fmt: skip
    """Each runtime's own post-training peer of the teacher (where its teacher was built)."""
    out = []
    if "onnxruntime" in teachers:
        fp32 = teachers["onnxruntime"].artifact
        names = {"static": "ORT quantize_static (QDQ U8S8 per-channel)", "dynamic": "ORT quantize_dynamic (int8 per-channel)"}  # fmt: skip

        def static() -> Contender:
            path = quantize_static_peer(fp32, work / "static.onnx", task.train_loader)
            return Contender(names["static"], "onnxruntime", Session(path), path, "peer")

        def dynamic() -> Contender:
            path = quantize_dynamic_peer(fp32, work / "dynamic.onnx")
            return Contender(names["dynamic"], "onnxruntime", Session(path), path, "peer")

        out.append(guarded(names["static"], "onnxruntime", "peer", static))
        if example.transformer:
            out.append(guarded(names["dynamic"], "onnxruntime", "peer", dynamic))
    if "openvino" in teachers:
        ir, nncf_out = teachers["openvino"].artifact, work / "nncf" / "model.xml"
        if example.transformer:
            name = "NNCF compress_weights (int8 weights)"
            build = lambda: nncf_compress_weights(ir, nncf_out)  # noqa: E731
        else:
            name = "NNCF quantize (int8, 300 calibration samples)"
            build = lambda: nncf_quantize(task, ir, nncf_out)  # noqa: E731

        def openvino() -> Contender:
            path = build()
            return Contender(name, "openvino", ov_rt.OvModule(path), path, "peer")

        out.append(guarded(name, "openvino", "peer", openvino))
    if "executorch" in teachers:
        out += _xnnpack_peers(task, example, work)
    return out


def _xnnpack_peers(task: Task, example: Example, work: Path) -> list[Contender]:
    """XNNPACK PTQ, static; for a transformer also the dynamic config on its Linears (the
    flow ExecuTorch's LLM recipes use), as ORT's rows give both quantize_static and
    quantize_dynamic."""
    from autocompress.targets.runtimes import executorch_runtime as et_rt

    def build(dynamic: bool, why: str | None = None) -> Contender:
        path, record = xnnpack_ptq(task, work / f"xnnpack-{'dynamic' if dynamic else 'static'}", dynamic=dynamic)  # fmt: skip
        info = {"graph": record, **({"static_refused": why} if why else {})}
        name = f"XNNPACK PTQ ({'dynamic' if dynamic else 'static'} int8 per-channel, pt2e)"
        return Contender(name, "executorch", et_rt.EtModule(path, threads=1), path, "peer", info)

    static = guarded("XNNPACK PTQ (static int8 per-channel, pt2e)", "executorch", "peer", lambda: build(False))  # fmt: skip
    if not example.transformer:
        return [static]
    return [static, guarded("XNNPACK PTQ (dynamic int8 per-channel, pt2e)", "executorch", "peer", lambda: build(True, static.error))]  # fmt: skip


def measure(
    task: Task, example: Example, contenders: list[Contender], *, rounds: int, per_round: int
) -> list[dict[str, Any]]:
    """Per runtime, its rows timed round-robin; then each row's task metric, size (all the
    artifact's files), runtime records and ratios against the teacher on its runtime."""
    live = [c for c in contenders if c.error is None]
    for runtime in dict.fromkeys(c.runtime for c in live):
        group = [c for c in live if c.runtime == runtime]
        print(f"timing {len(group)} {runtime} rows round-robin", flush=True)
        round_robin(group, task.example_inputs, rounds=rounds, per_round=per_round)
    extra = example.extra() if example.extra is not None else None
    rows = []
    for c in contenders:
        if c.error is not None:
            rows.append({"name": c.name, "kind": c.kind, "runtime": c.runtime, "error": c.error, **c.info})  # fmt: skip
            continue
        print(f"evaluating {c.name}", flush=True)
        files = get_target(c.runtime).files(c.artifact) if c.runtime in TARGETS else [c.artifact]
        row: dict[str, Any] = {
            "name": c.name,
            "kind": c.kind,
            "runtime": c.runtime,
            "accuracy": task.evaluate(c.model),
            "size_bytes": sum(f.stat().st_size for f in files if f.exists()),
            **latency(c),
            **c.info,
        }
        if extra is not None:
            row["extra"] = extra(c.model)
        if isinstance(c.model, Session):
            row["ort_ops"] = c.model.ops
        if isinstance(c.model, ov_rt.OvModule):  # the precision it ran in, its runtime ops
            row.update(ov_rt.graph_record(c.model.compiled))
        rows.append(row)
    teacher = {r["runtime"]: r for r in rows if r["kind"] == "reference" and "error" not in r}
    for row in rows:
        ref = teacher.get(row["runtime"])
        if "error" in row or ref is None:
            continue
        row["teacher_accuracy"] = ref["accuracy"]
        row["accuracy_drop"] = ref["accuracy"] - row["accuracy"]
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
    if args.max_drop is not None:
        example = replace(example, max_drop=args.max_drop)
    print(f"== {name}", flush=True)
    load_before = _loadavg()
    task = load_task(f"{ROOT / 'examples' / name / 'task.py'}:build_task")
    notes: list[str] = []
    figures: dict[str, dict[str, Any]] = {}  # target -> the teacher's figures compress compares to
    with tempfile.TemporaryDirectory(prefix=f"compression-{name}-") as tmp:
        work = Path(tmp)
        refs = references(task, args.targets, work, figures)
        teachers = {c.runtime: c for c in refs if c.error is None}
        contenders = refs + peers(task, example, teachers, work)
        for target in args.targets:
            point = search_point(
                task, example.max_drop, target, runs[target], work, by=args.by, notes=notes
            )
            if point is not None:
                contenders.append(point)
        for target, policy_file in policies:
            label = f"ours: {policy_file.stem} policy on {target}"

            def ours(target: str = target, policy_file: Path = policy_file) -> Contender | None:
                return policy_point(
                    task, target, policy_file, work, notes=notes, teacher=figures.get(target)
                )

            point = guarded(label, target, "policy", ours)
            if point is not None:
                contenders.append(point)
        rows = measure(task, example, contenders, rounds=args.rounds, per_round=args.per_round)
    return {
        "metric": example.metric,
        "max_accuracy_drop": example.max_drop,
        "latency_inputs": [list(t.shape) for t in task.example_inputs],
        "targets": list(args.targets),
        "rows": rows,
        "notes": notes,
        "machine": _machine(),
        "cpu": _cpu(),
        "load_average_1min": os.getloadavg()[0],
        "loadavg_before": load_before,  # /proc/loadavg: other processes on the cores
        "loadavg_after": _loadavg(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", "benchmarks/compression.py", *sys.argv[1:]]),
    }


def _loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else ""


def _cpu() -> dict[str, Any]:
    """The CPU record with its int8/bf16 features and the runtimes' versions."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in ("onnxruntime", "openvino", "nncf", "executorch", "torchao"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            pass
    return int8_machine(torch=torch.__version__, **versions)


def _machine() -> str:
    """The machine, with what decides int8 speed: VNNI or AVX2-only, and the int8/bf16 flags."""
    cpu = cpu_record()
    model = cpu["model"] or platform.processor() or platform.machine()
    isa = "AVX-512 VNNI" if cpu["vnni"] else ("AVX2, no VNNI" if cpu["avx2"] else "no AVX2")
    features = ", ".join(_cpu()["int8_features"]) or "none"
    return (
        f"{os.cpu_count()} vCPU {model} ({isa}; int8/bf16 features: {features}), "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def markdown(results: dict[str, Any]) -> str:
    lines = []
    for name, res in results.items():
        load = (
            f"; /proc/loadavg before {res['loadavg_before']!r}, after {res['loadavg_after']!r}"
            if res.get("loadavg_before")
            else ""
        )
        lines += [
            f"### {name}: {res['metric']}, batch 1, one thread",
            "",
            f"`{res['command']}` — {res['machine']}, {res['date']}, 1-minute load average "
            f"{res.get('load_average_1min', float('nan')):.1f} at the end{load}. Accuracy drop, "
            "speedup and size reduction are against the teacher on the same runtime; the rows "
            "of one runtime are timed round-robin in one process.",
            "",
            f"| model | runtime | {res['metric']} | drop | size | × smaller | latency (median) | × faster |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in res["rows"]:
            if "error" in r:
                lines.append(f"| {r['name']} | {r['runtime']} | refused: {r['error']} | | | | | |")
                continue
            extra = "".join(f" / {k} {v:.3f}" for k, v in r.get("extra", {}).items())
            lines.append(
                f"| {r['name']} | {r['runtime']} | {r['accuracy']:.4f}{extra} | "
                f"{r.get('accuracy_drop', float('nan')):+.4f} | {_mb(r['size_bytes'])} | "
                f"{r.get('size_reduction', float('nan')):.2f}× | "
                f"{r['latency_ms']:.3f} ms | {r.get('speedup', float('nan')):.2f}× |"
            )
        lines += ["", *_verdict(res), *(f"- note: {n}" for n in res["notes"]), ""]
    return "\n".join(lines)


def _verdict(res: dict[str, Any]) -> list[str]:
    """Per runtime: is one of our points (a search point or a hand policy) within budget of that
    runtime's teacher smaller AND faster than every peer measured on that runtime, at equal or
    better accuracy than each (the issue's bar)? If none is, per column what the best point
    within budget beats, and by how much its accuracy is below. No peer measured: no claim."""
    budget = res["max_accuracy_drop"]
    rows = [r for r in res["rows"] if "error" not in r and "accuracy_drop" in r]
    refused = [r["name"] for r in res["rows"] if "error" in r and r.get("kind") == "peer"]
    out = []
    for runtime in dict.fromkeys(r["runtime"] for r in rows):
        ours = [r for r in rows if r["runtime"] == runtime and r["kind"] in ("search", "policy")]
        peers = [r for r in rows if r["runtime"] == runtime and r["kind"] == "peer"]
        within = [r for r in ours if r["accuracy_drop"] <= budget]
        if not peers and not ours:
            continue
        if not within:
            out.append(f"- {runtime}: no point of ours within {budget} of the teacher")
            continue
        if not peers:
            why = f" (refused: {', '.join(refused)})" if refused else ""
            out.append(f"- {runtime}: no peer measured{why}: nothing compared")
            continue
        than = "; ".join(f"{p['name']} {res['metric']} {p['accuracy']:.4f}" for p in peers)
        full = [
            r
            for r in within
            if all(
                r["size_bytes"] < p["size_bytes"]
                and r["latency_ms"] < p["latency_ms"]
                and r["accuracy_drop"] <= p["accuracy_drop"]
                for p in peers
            )
        ]
        if full:
            best = min(full, key=lambda r: r["latency_ms"])
            out.append(
                f"- {runtime}: {best['name']} ({res['metric']} {best['accuracy']:.4f}) is smaller "
                f"and faster than every peer at equal or better accuracy ({than})"
            )
            continue
        for column, label in (("size_bytes", "size"), ("latency_ms", "latency")):
            best = min(within, key=lambda r: r[column])
            winners = [p for p in peers if p[column] < best[column]]
            for p in winners:
                acc = "" if p["accuracy_drop"] <= budget else f", {p['accuracy_drop']:.4f} below the teacher"  # fmt: skip
                out.append(f"- **{runtime}: a peer wins {label}**: {p['name']}{acc}")
            if not winners:
                below = ", ".join(
                    f"{p['name']} by {best['accuracy_drop'] - p['accuracy_drop']:.4f}"
                    for p in peers
                    if p["accuracy_drop"] < best["accuracy_drop"]
                )
                out.append(
                    f"- {runtime} {label}: {best['name']} ({res['metric']} {best['accuracy']:.4f}) "
                    f"beats every peer ({than})"
                    + (f", **accuracy below** {below}" if below else "")
                )
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
    parser.add_argument(
        "--max-drop", type=float, default=None,
        help="the search point's accuracy budget (default: the example's: 0.01 digits, "
        "0.02 MiniLM)",
    )  # fmt: skip
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
