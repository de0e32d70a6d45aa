"""Build step: the presets at the top of the repository ship inside the package.

``search_spaces/*.yaml`` and ``objectives/*.yaml`` are copied to ``autocompress/_presets/``
in the build tree, so a wheel (and a non-editable ``pip install .``) holds them;
``autocompress.study.presets`` finds them there or, in a source checkout, at the repository top.
Everything else is in ``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PRESET_FOLDERS = ("search_spaces", "objectives")


class BuildWithPresets(build_py):
    def run(self) -> None:
        super().run()
        root = Path(__file__).resolve().parent
        for folder in PRESET_FOLDERS:
            target = Path(self.build_lib) / "autocompress" / "_presets" / folder
            target.mkdir(parents=True, exist_ok=True)
            for path in sorted((root / folder).glob("*.yaml")):
                shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildWithPresets})
