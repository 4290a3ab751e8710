"""Marks beside an output: an empty file (or object) at a hidden name, local or at a URL alike,
so callers do not branch on ``is_url``.

A mark is made with no content and removed whole; making one replaces what is at its name (a
local link there is replaced itself, never what it points to: :func:`~.local.create_new`).
``values``: the storage options of a URL's store (ignored for local files).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

from .local import create_new
from .objects import delete_object, exists_object, put_bytes
from .urls import UrlPath, is_url


def make_mark(path: PurePath | UrlPath, values: Mapping[str, Any] | None = None) -> None:
    """Make the (empty) mark ``path``; a local one's directory must exist."""
    if is_url(path):
        put_bytes(path, b"", values)
    else:
        os.close(create_new(Path(str(path))))


def has_mark(path: PurePath | UrlPath, values: Mapping[str, Any] | None = None) -> bool:
    """Whether the mark ``path`` is there."""
    if is_url(path):
        return exists_object(path, values)
    return os.path.lexists(Path(str(path)))


def remove_mark(path: PurePath | UrlPath) -> None:
    """Remove the mark ``path`` (nothing if it is gone; at a URL, with the storage options in
    effect)."""
    if is_url(path):
        delete_object(path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(Path(str(path)))
