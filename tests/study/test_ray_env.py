"""Where a local Ray cluster keeps its sockets: under the run directory when the socket paths fit
AF_UNIX's 107 bytes, else a short folder in the system temp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from autocompress.study.backends._ray_env import ray_temp_dir

# the longest tail Ray writes below its temp folder (a 7-digit pid)
SOCKET_TAIL = "/session_2026-12-05_19-48-55_323352_4194304/sockets/plasma_store"


@pytest.mark.parametrize("name", ["r", "expert-gap-onnxruntime", "x" * 80])
def test_every_socket_path_fits_af_unix(tmp_path, name):
    run = Path("/work/main/runs") / name  # 46 characters for the second: once too long
    assert len(str(ray_temp_dir(run)) + SOCKET_TAIL) <= 107
    short = Path("/r") / name
    if len(str(short.resolve() / "ray" / "tmp") + SOCKET_TAIL) <= 107:
        assert ray_temp_dir(short) == short.resolve() / "ray" / "tmp"  # kept beside the run
