"""What lies beside outputs, local or at a URL alike, so callers do not branch on ``is_url``:
the leftovers of killed exports (:func:`clean_beside`), and marks - empty files (or objects) at
a hidden name.

A mark is made with no content and removed whole; making one replaces what is at its name (a
local link there is replaced itself, never what it points to: :func:`~.local.create_new`).
``values``: the storage options of a URL's store (ignored for local files).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any

from .held import clean_beside as clean_beside_urls
from .local import Leftover, clean, create_new, refuse_links
from .objects import delete_object, exists_object, put_bytes
from .urls import UrlPath, is_url


def beside(paths: Sequence[Path]) -> tuple[set[Path], set[str]]:
    """Where the temporaries of the outputs ``paths`` lie: the directories, and the output
    names they are named after (through a symlinked store too)."""
    both = [*paths, *(p.resolve() for p in paths)]
    return {p.parent for p in both}, {p.name for p in both}


def refuse_links_beside(paths: Sequence[Path], token: str) -> None:
    """Refuse a symbolic link at a name of the run ``token`` beside the outputs ``paths``
    (:func:`~.local.refuse_links`); an object store has no links."""
    if paths and not is_url(paths[0]):
        refuse_links(beside(paths)[0], token)


def clean_beside(
    paths: Sequence[Path], keep: str | None = None, dry_run: bool = False
) -> tuple[list[Leftover], list[Leftover]]:
    """Remove (or list) what killed exports left beside the outputs ``paths`` (but ``keep``'s
    run): :func:`~.local.clean` (at a URL: :func:`~.held.clean_beside`, which lists nothing)."""
    if paths and is_url(paths[0]):
        if not dry_run:
            clean_beside_urls(paths, keep=keep)
        return [], []
    return clean(*beside(paths), keep=keep, dry_run=dry_run)


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
