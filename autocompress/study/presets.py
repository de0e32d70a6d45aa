"""Preset files: where they live (``search_spaces/``, ``objectives/``) and how they are read.

``read_preset`` finds a preset by name or path and reads its YAML; ``check_keys`` and
``to_number`` are the checks every preset reader uses, each naming the file and key at fault.

In a source checkout they are the folders at the repository top; an installed wheel carries
copies in ``autocompress/_presets/`` (put there by the build step in ``setup.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from autocompress.errors import ConfigError, reject_unknown_keys

_PACKAGE = Path(__file__).resolve().parent.parent  # autocompress/


def preset_dir(folder: str) -> Path:
    """The folder holding the ``folder`` presets (``"search_spaces"`` or ``"objectives"``)."""
    installed = _PACKAGE / "_presets" / folder
    if installed.is_dir():
        return installed
    return _PACKAGE.parent / folder


def read_preset(name_or_path: str | Path, folder: str) -> tuple[dict[str, Any], str]:
    """Read ``<repo>/<folder>/<name>.yaml`` or a YAML file path; return ``(data, source)``."""
    text_name = str(name_or_path)
    if text_name.endswith((".yaml", ".yml")) or "/" in text_name or "\\" in text_name:
        path, source = Path(text_name), text_name
    else:
        path, source = preset_dir(folder) / f"{text_name}.yaml", f"{folder}/{text_name}.yaml"
        if not path.is_file():
            known = sorted(p.stem for p in preset_dir(folder).glob("*.yaml"))
            raise ConfigError(
                f"unknown {folder} preset {text_name!r}; presets: {', '.join(known)} "
                "(or give a path to a .yaml file)"
            )
    data = load_yaml(path, source)
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a YAML mapping, got {type(data).__name__}")
    return data, source


def load_yaml(
    path: Path, source: str, *, what: str = "", problem: Callable[[Exception], str] = str
) -> Any:
    """``path``'s YAML; a file that cannot be read (``cannot read <what><source>``) or parsed
    (``<source>: not valid YAML: <problem>``) is a ``ConfigError``."""
    import yaml

    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what}{source}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {problem(exc)}") from None


def check_keys(source: str, where: str, given: Any, allowed: Iterable[str]) -> None:
    """Raise ``ConfigError`` if ``given`` is not a mapping or has a key outside ``allowed``."""
    allowed = tuple(allowed)

    def error(key: str | None) -> ConfigError:
        if key is None:
            label = f"{source}: {where}" if where else source
            return ConfigError(f"{label}: must be a mapping, got {given!r}")
        return ConfigError(
            f"{source}: {where + '.' if where else ''}{key}: unknown key; "
            f"allowed: {', '.join(allowed)}"
        )

    reject_unknown_keys(given, allowed, error)


def to_number(source: str, key: str, value: Any) -> float | int:
    """A finite number; strings like ``1e-6`` (which YAML 1.1 leaves as text) are accepted."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ConfigError(f"{source}: {key}: {value!r} is not a number")
    return value
