"""What an export leaves on disk: its hidden temporaries, and a hash of every file below a
directory (to show a refused or interrupted run changed nothing)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def hidden_temps(directory: Path) -> list[Path]:
    """lazyexport's hidden temporaries (``.<name>.lazyexport-<token>.<kind>``: outputs being
    written, staging and raw files, journals, commit records) anywhere below ``directory``."""
    return sorted(p for p in directory.rglob(".*.lazyexport-*"))


def snapshot(directory: Path) -> dict[str, str]:
    """Every file and directory below ``directory`` -> its content hash ("dir" for directories)."""
    out = {}
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory).as_posix()
        out[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return out
