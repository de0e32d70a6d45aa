"""Reading finished searches: the HTML report, comparisons of searches, exporting a trial's
model, describing a search space for a task (``inspect``).

Names load lazily (PEP 562): plotting libraries load only when used.
"""

from __future__ import annotations

from autocompress._lazy import lazy_names

__getattr__, __all__ = lazy_names(
    __name__,
    {
        ".comparison": ("compare", "format_table"),
        ".export": ("export_trial", "pick_trial"),
        ".inspect": ("describe",),
        ".report": ("load_run", "write_report", "write_report_safely"),
    },
)
