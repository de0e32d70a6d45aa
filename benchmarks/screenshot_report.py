"""Render a run's report.html to a PNG screenshot with headless Chromium (for the README).

    python benchmarks/screenshot_report.py runs/digits-cnn --out docs/report.png

Writes the report first if ``report.html`` is missing (or with ``--rebuild``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from autocompress.reporting import write_report

# headless, offline and quiet: no sandbox (containers), GPU, network, first-run or sync
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def run_chromium(
    binary: str, html_path: Path, profile: Path | str, *flags: str, budget_ms: int = 5000, **run
) -> subprocess.CompletedProcess:
    """Open ``html_path`` in headless Chromium (``CHROMIUM_FLAGS``, a fresh ``profile`` folder,
    ``budget_ms`` of virtual time for its scripts) with ``flags`` saying what to write."""
    return subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}",
            *flags,
            html_path.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=180,
        **run,
    )


def screenshot(
    html_path: Path,
    out: Path,
    *,
    chromium: str = "chromium",
    width: int = 1400,
    height: int = 2400,
    budget_ms: int = 5000,
) -> Path:
    """Open ``html_path`` offline in headless Chromium and save a ``width``x``height`` PNG."""
    binary = shutil.which(chromium)
    if binary is None:
        raise SystemExit(
            f"{chromium!r} not found; install it (apt-get install chromium) or pass --chromium"
        )
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as profile:
        run_chromium(
            binary,
            html_path,
            profile,
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            budget_ms=budget_ms,
            check=True,
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "run_dir", type=Path, help="run directory holding trials.jsonl and pareto.json"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="PNG path (default: <run_dir>/report.png)"
    )
    parser.add_argument("--rebuild", action="store_true", help="rewrite report.html first")
    parser.add_argument("--chromium", default="chromium")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2400)
    args = parser.parse_args(argv)

    html_path = args.run_dir / "report.html"
    if args.rebuild or not html_path.is_file():
        html_path, _ = write_report(args.run_dir)
    out = screenshot(
        html_path,
        args.out or args.run_dir / "report.png",
        chromium=args.chromium,
        width=args.width,
        height=args.height,
    )
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
