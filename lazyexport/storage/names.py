"""What the front ends (command line, project files) do with a location's name, whether it is
a local path or a URL: made absolute or relative to a project's directory, cleaned of what
killed exports left beside it, its emptied directories removed. The front ends call these
instead of asking :func:`~lazyexport.storage.urls.is_url` themselves.

Invariants: a URL is never treated as a local path (never joined to a directory, never made
relative, never cleaned as a file); nothing here removes a directory that is not empty.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path, PurePath

from ..errors import SettingsError
from .held import clean_beside
from .local import clean_path
from .objects import describe, is_storage_error
from .urls import READ_ONLY, as_path, is_url, url_scheme


def absolute(text: str, base: Path) -> str:
    """``text`` (a source or output as written in a project file) made absolute against
    ``base`` (``~`` expanded); a URL as it is."""
    if is_url(text):
        return text
    return os.path.abspath(base / os.path.expanduser(text))


def relative(text: str, base: Path) -> str:
    """``text`` relative to ``base`` where it lies under it (URLs and others as they are)."""
    if is_url(text):
        return text
    path = Path(text)
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


def clean_named(text: str, dry_run: bool) -> tuple[list[str], list[str]]:
    """``lazyexport clean TEXT``: what killed exports left beside the output (or in the
    directory of outputs) ``text`` names, removed (only listed with ``dry_run``); returns what
    was (or would be) removed and what was left alone, described. A URL is cleaned in its store
    (runs of this host only: nobody here can tell whether a run elsewhere is alive)."""
    path = as_path(text)
    if is_url(path):
        return _clean_url(path, dry_run), []
    if not path.exists() and not path.parent.is_dir():
        raise SettingsError(f"{path} does not exist, nor does the directory it would be in")
    done, kept = clean_path(path, dry_run=dry_run)
    return [item.describe() for item in done], [item.describe() for item in kept]


def _clean_url(url: Path, dry_run: bool) -> list[str]:
    if url_scheme(str(url)) in READ_ONLY:
        raise SettingsError(f"{url} is read-only (HTTP): lazyexport writes nothing there to clean")
    try:
        return clean_beside([url], dry_run=dry_run)
    except Exception as exc:
        if is_storage_error(exc):
            raise describe(exc, url, "clean beside") from None
        raise


def remove_empty_parents(paths: Sequence[PurePath], stop: Path) -> None:
    """Remove directories holding ``paths`` that are now empty, up to (not including) ``stop``
    or the first directory that is not empty; an object store has no directories to leave."""
    if any(is_url(p) for p in paths):
        return
    stop = stop.resolve()
    for parent in sorted({Path(p).resolve().parent for p in paths}, key=lambda p: -len(p.parts)):
        while parent != stop and stop in parent.parents:
            try:
                parent.rmdir()  # only succeeds when empty
            except OSError:
                break
            parent = parent.parent
