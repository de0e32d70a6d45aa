"""Reading finished searches: the HTML report, comparisons of searches, exporting a trial's
model, describing a search space for a task (``inspect``).

Names load lazily (PEP 562): plotting libraries load only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "compare": "autocompress.reporting.comparison",
    "describe": "autocompress.reporting.inspect",
    "export_trial": "autocompress.reporting.export",
    "format_table": "autocompress.reporting.comparison",
    "load_run": "autocompress.reporting.report",
    "pick_trial": "autocompress.reporting.export",
    "write_report": "autocompress.reporting.report",
    "write_report_safely": "autocompress.reporting.report",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_WHERE)
