"""docs/extending.md stays true: every file and contract test it names exists, every registry
function it names is importable, and every plug-in family it covers has a section."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "extending.md").read_text()


def test_every_named_file_exists():
    paths = set(re.findall(r"`((?:autocompress|tests)/[\w/.]+\.py)", DOC))
    assert len(paths) >= 15, paths
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert missing == []


def test_every_named_registration_function_is_importable():
    where = {
        "register_target": "autocompress.targets",
        "register": "autocompress.measure.metrics",
        "register_importance": "autocompress",
        "register_strategy": "autocompress.techniques.strategies",
        "register_sampler": "autocompress.study.samplers",
        "register_scheduler": "autocompress.study.samplers",
        "register_backend": "autocompress.study.backends",
    }
    for name, module in where.items():
        assert f"{name}(" in DOC, name
        assert callable(getattr(importlib.import_module(module), name)), (module, name)


def test_each_plug_in_family_has_a_section_ending_with_its_contract_test():
    sections = re.split(r"^## ", DOC, flags=re.M)[1:]
    titles = [s.splitlines()[0] for s in sections]
    for family in ("target", "metric", "importance criterion", "pruning strategy", "sampler"):
        section = next(s for s, t in zip(sections, titles, strict=True) if family in t.lower())
        assert "Contract:" in section and "tests/" in section, family
