"""A script run in a fresh interpreter (its own peak memory, page faults, imports), with this
checkout on its path and nothing of the caller's environment."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def run_json(script: str, *args: str, timeout: float = 300) -> Any:
    """Run ``script`` (``python -c``) with ``args``; it must succeed and print a JSON document as
    its last line, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
