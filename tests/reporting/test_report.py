from __future__ import annotations

import json
import runpy
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from autocompress.errors import AutoCompressError
from autocompress.reporting.report import write_report

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
)
TEACHER = {"accuracy": 0.98, "size_bytes": 654321, "latency_ms": 1.1}
OBJECTIVES = [
    {"name": "accuracy", "direction": "maximize"},
    {"name": "size_bytes", "direction": "minimize"},
    {"name": "latency_ms", "direction": "minimize"},
]
LAYERS = ("features.0", "features.3", "classifier")


def _policy(alpha: float, prune: float, bits: int) -> dict:
    return {
        "distill": {"alpha": alpha, "temperature": 4.0},
        "prune": {"default": 0.0, "layers": {"features.*": prune}},
        "quant": {"default": bits, "layers": {"classifier": 8}},
        "finetune": {"lambda": 1e-4, "epochs": 1, "lr": 1e-3},
    }


def _complete(
    number: int, acc: float, size: int, lat: float, *, prune: float, bits: int, baseline=None
) -> dict:
    layers = {
        name: {
            "prune": prune if name.startswith("features") else 0.0,
            "bits": bits if name != "classifier" else 8,
            "mode": "int-compute",
        }
        for name in LAYERS
    }
    metrics = {
        "accuracy": acc,
        "size_bytes": size,
        "latency_ms": lat,
        "latency_p90_ms": lat * 1.2,
        "params": size // 4,
        "macs": size * 10,
        "speedup": TEACHER["latency_ms"] / lat,
        "compression": TEACHER["size_bytes"] / size,
        "teacher": {**TEACHER, "latency_p90_ms": 1.3, "params": 400000, "macs": 8000000},
        "layers": layers,
        "artifact": f"trials/{number}/model.pt",
        "target": "torch",
        "threads": 1,
    }
    return _record(number, "complete", _policy(0.5, prune, bits), metrics, start=baseline)


def _record(
    number: int, state: str, policy: dict, metrics: dict, *, error=None, start=None
) -> dict:
    return {
        "number": number,
        "state": state,
        "policy": policy,
        "metrics": metrics,
        "error": error,
        "params": {"distill.alpha": policy["distill"]["alpha"]},
        "start": start,
        "node": None,
        "host": "testhost",
        "duration_s": 1.5,
    }


def _records() -> list[dict]:
    return [
        _complete(0, 0.98, 654321, 1.1, prune=0.0, bits=32, baseline="identity"),
        _complete(1, 0.978, 170000, 0.6, prune=0.0, bits=8, baseline="int8"),
        _complete(2, 0.97, 120000, 0.45, prune=0.3, bits=8, baseline="prune30-int8"),
        _complete(3, 0.95, 60000, 0.3, prune=0.5, bits=4),
        _complete(4, 0.94, 200000, 0.7, prune=0.1, bits=16),  # dominated
        _record(5, "infeasible", _policy(0.3, 0.9, 2), {"size_bytes": 9000, "latency_ms": 0.1}),
        _record(
            6,
            "failed",
            _policy(0.7, 0.2, 8),
            {},
            error="RuntimeError: shape mismatch in features.3",
        ),
        _complete(7, 0.975, 90000, 0.5, prune=0.4, bits=8),
        _record(8, "pruned", _policy(0.2, 0.6, 4), {"accuracy": 0.5, "size_bytes": 50000}),
        _complete(9, 0.90, 40000, 0.25, prune=0.7, bits=4),
        _record(
            10,
            "failed",
            _policy(0.9, 0.1, 8),
            {"size_bytes": 1},
            error="ValueError: bad <bits> & more",
        ),
        _complete(11, 0.96, 100000, 0.55, prune=0.4, bits=8),  # dominated by 7
    ]


def _dominates(a: dict, b: dict, objectives: list[dict]) -> bool:
    sign = {"maximize": -1.0, "minimize": 1.0}
    av = [sign[o["direction"]] * a["metrics"][o["name"]] for o in objectives]
    bv = [sign[o["direction"]] * b["metrics"][o["name"]] for o in objectives]
    return all(x <= y for x, y in zip(av, bv, strict=True)) and av != bv


def make_run(run_dir: Path, objectives: list[dict] = OBJECTIVES) -> list[int]:
    """Write a realistic run directory; return the Pareto trial numbers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records = _records()
    (run_dir / "trials.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    complete = [r for r in records if r["state"] == "complete"]
    front = [r for r in complete if not any(_dominates(o, r, objectives) for o in complete)]
    pareto = {
        "name": "digits-cnn",
        "objectives": objectives,
        "teacher": {o["name"]: TEACHER[o["name"]] for o in objectives},
        "trials": [
            {"number": r["number"], "policy": r["policy"], "metrics": r["metrics"]} for r in front
        ],
    }
    (run_dir / "pareto.json").write_text(json.dumps(pareto, indent=2))
    (run_dir / "config.yaml").write_text("name: digits-cnn\nsampler: tpe\nseed: 0\n")
    return [r["number"] for r in front]


def test_writes_html_png_and_plotly_js(tmp_path: Path) -> None:
    front = make_run(tmp_path)
    assert front == [0, 1, 2, 3, 7, 9]
    html_path, png_path = write_report(tmp_path)
    assert html_path == tmp_path / "report.html" and png_path == tmp_path / "pareto.png"

    text = html_path.read_text()
    for number in front:
        assert f'id="pareto-row-{number}"' in text
    for number in (4, 11):
        assert f'id="pareto-row-{number}"' not in text
    assert text.count('class="pareto-row"') == len(front)
    row_7 = text.split('id="pareto-row-7">')[1].split("</tr>")[0]
    assert "<td>0.975</td>" in row_7 and "<td>90,000</td>" in row_7 and "2.20×" in row_7

    assert '<b id="count-complete">8</b>' in text
    assert '<b id="count-infeasible">1</b>' in text
    assert '<b id="count-failed">2</b>' in text
    assert '<b id="count-pruned">1</b>' in text
    assert "RuntimeError: shape mismatch in features.3" in text
    assert "bad &lt;bits&gt; &amp; more" in text
    for div_id in ("pareto-front", "pareto-3d", "hypervolume", "heatmap-prune", "heatmap-bits"):
        assert f'id="{div_id}"' in text
    for name in ("identity", "int8", "prune30-int8", "teacher"):
        assert name in text
    assert "sampler: tpe" in text

    # Offline: plotly.js is local, nothing is fetched from a CDN.
    assert '<script src="plotly.min.js"></script>' in text
    assert "cdn.plot.ly" not in text
    js = tmp_path / "plotly.min.js"
    assert 1_000_000 < js.stat().st_size < 8_000_000
    assert html_path.stat().st_size < 2_000_000

    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png_path) as image:
        image.verify()
    with Image.open(png_path) as image:
        width, height = image.size
    assert width > height > 300  # two panels side by side


def test_two_objectives_has_no_3d_plot(tmp_path: Path) -> None:
    objectives = OBJECTIVES[:2]
    front = make_run(tmp_path, objectives)
    html_path, png_path = write_report(tmp_path, inline_plotlyjs=True)
    text = html_path.read_text()
    assert 'id="pareto-3d"' not in text and 'id="pareto-front"' in text
    assert text.count('class="pareto-row"') == len(front)
    assert not (tmp_path / "plotly.min.js").exists()
    assert '<script src="plotly.min.js">' not in text
    with Image.open(png_path) as image:
        assert image.size[0] > 300


def test_missing_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(AutoCompressError, match="pareto.json"):
        write_report(tmp_path)


class _ParetoPoints(HTMLParser):
    """Count ``path.point`` elements per scatter trace inside one plot div of the rendered DOM."""

    def __init__(self, div_id: str) -> None:
        super().__init__()
        self.div_id = div_id
        self.stack: list[tuple[str, bool, str | None]] = []  # (tag, inside plot div, trace uid)
        self.points: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        inside, trace = (self.stack[-1][1], self.stack[-1][2]) if self.stack else (False, None)
        inside = inside or a.get("id") == self.div_id
        classes = (a.get("class") or "").split()
        if inside and tag == "g" and "trace" in classes and "scatter" in classes:
            trace = next(
                c.removeprefix("trace") for c in classes if c.startswith("trace") and c != "trace"
            )
        if inside and trace and tag == "path" and "point" in classes:
            self.points[trace] = self.points.get(trace, 0) + 1
        if tag not in ("path", "br", "img", "input", "meta", "link", "rect", "circle", "line"):
            self.stack.append((tag, inside, trace))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if self.stack and self.stack[-1][0] == tag and tag not in ("path",):
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium)")
def test_rendered_pareto_plot_has_one_point_per_pareto_trial(tmp_path: Path) -> None:
    front = make_run(tmp_path / "run")
    html_path, _ = write_report(tmp_path / "run")
    # Chromium opened as the README's screenshot opens it (benchmarks/screenshot_report.py)
    run_chromium = runpy.run_path(str(ROOT / "benchmarks" / "screenshot_report.py"))["run_chromium"]
    result = run_chromium(CHROMIUM, html_path, tmp_path / "profile", "--dump-dom", text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    parser = _ParetoPoints("pareto-front")
    parser.feed(result.stdout)
    assert parser.points.get("pareto") == len(front), parser.points
    assert parser.points.get("all") == 8  # every complete trial, drawn faintly
    assert parser.points.get("baselines") == 3
    assert parser.points.get("teacher") == 1
