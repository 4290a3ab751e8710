"""Shared helpers: run the CLI in a subprocess (importing this checkout), snapshot a directory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    """The environment for a CLI subprocess: this checkout first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lazyexport", *map(str, args)]


def run_cli(*args: str, cwd: Path | None = None, stdin=subprocess.DEVNULL,
            timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(), stdin=stdin,
                          capture_output=True, text=True, timeout=timeout)


def snapshot(directory: Path) -> dict[str, str]:
    """Every file and directory below ``directory`` -> its content hash ("dir" for directories)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture
def cli():
    return run_cli
