from __future__ import annotations

import subprocess
import sys


def test_import_stays_lean():
    code = (
        "import sys, autocompress; "
        "heavy = [m for m in ('ray', 'mlflow', 'plotly', 'matplotlib', 'optuna', 'openvino', 'nncf', 'executorch', 'torchao') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
