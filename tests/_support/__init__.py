"""Test helpers shared by the whole suite: test models (``models``), task entry points
(``tasks``, ``faulty_tasks``) and the fault-suite summary (``faults``). ``tests/`` is on
``sys.path`` (``pyproject.toml``), so tests import ``_support.models`` and friends."""
