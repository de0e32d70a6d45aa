"""Where preset files live: ``search_spaces/`` and ``objectives/``.

In a source checkout they are the folders at the repository top; an installed wheel carries
copies in ``autocompress/_presets/`` (put there by the build step in ``setup.py``).
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def preset_dir(folder: str) -> Path:
    """The folder holding the ``folder`` presets (``"search_spaces"`` or ``"objectives"``)."""
    installed = _PACKAGE / "_presets" / folder
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / folder
