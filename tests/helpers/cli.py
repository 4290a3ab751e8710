"""The command line in a subprocess, with this checkout first on the import path."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    return [sys.executable, "-m", "lazyexport", *map(str, args)]


def run_cli(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    stdin=subprocess.DEVNULL,
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli_command(*args),
        cwd=cwd,
        env=cli_env(),
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
