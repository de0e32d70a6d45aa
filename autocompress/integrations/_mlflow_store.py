"""Which MLflow store a search tracks to, and whether it answers.

The URI comes from ``--tracking-uri``, the config, ``MLFLOW_TRACKING_URI`` or a local sqlite
database, in that order; a file store (refused by MLflow 3) is an error naming where it came
from. No MLflow import: an HTTP server is probed with ``urllib``.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from autocompress.errors import ConfigError


def resolve_tracking_uri(cli_uri: str | None, config_uri: str | None) -> str:
    """Pick the tracking URI: ``--tracking-uri``, else config, else ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///<cwd>/mlflow.db``. The old ``./mlruns`` file store is refused.

    >>> resolve_tracking_uri("http://127.0.0.1:5000", None)
    'http://127.0.0.1:5000'
    """
    for source, uri in (
        ("--tracking-uri", cli_uri),
        ("config key tracking_uri", config_uri),
        ("environment variable MLFLOW_TRACKING_URI", os.environ.get("MLFLOW_TRACKING_URI")),
    ):
        if uri:
            _check_not_file_store(uri, source)
            return uri
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def _check_not_file_store(uri: str, source: str) -> None:
    scheme = urllib.parse.urlparse(uri).scheme
    # A one-letter scheme is a Windows drive ("C:\\mlruns"), still a plain path.
    if scheme in ("", "file") or len(scheme) == 1:
        raise ConfigError(
            f"{source} = {uri!r} is a file store, which MLflow 3 refuses: use a database URI "
            f"such as 'sqlite:///{Path.cwd().resolve() / 'mlflow.db'}' or a server URI "
            "such as 'http://127.0.0.1:5000'"
        )


def is_http(uri: str) -> bool:
    return urllib.parse.urlparse(uri).scheme in ("http", "https")


def probe(uri: str, timeout_s: float) -> str | None:
    """Why the server at ``uri`` cannot be reached, or ``None`` when it answers (any HTTP
    status) or is no HTTP server."""
    if not is_http(uri):
        return None
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return None
    except urllib.error.HTTPError:
        return None  # it answered: the server is there, auth or routing is its business
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))
