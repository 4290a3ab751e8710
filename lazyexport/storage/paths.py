"""The operations code above the storage layer needs on a location, whether it is a local path
or a URL: the one place that asks which it is, so a writer calls one function instead of
branching on :func:`~lazyexport.storage.urls.is_url` itself.

Invariants: each function does for a URL what it does for a local path, with the object store's
nearest operation (a file is an object; a directory is every object below a prefix); nothing
here follows a symbolic link to delete (a link is removed itself).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from . import objects
from .local import remove
from .urls import is_url


def exists(path: Path) -> bool:
    """Whether anything is at ``path``: a file, a directory or a link (a dangling one too), or at
    a URL an object or any object below it."""
    if is_url(path):
        return objects.exists(path)
    return Path(path).exists() or Path(path).is_symlink()


def file_exists(path: Path) -> bool:
    """Whether a file (or a link, dangling or not) is at ``path``; at a URL: an object."""
    if is_url(path):
        return objects.exists_object(path)
    return Path(path).exists() or Path(path).is_symlink()


def remove_file(path: Path) -> None:
    """Remove the file (a directory: the tree; a link: the link) or the object at ``path``;
    nothing there is no error."""
    if is_url(path):
        objects.delete_object(path)
    else:
        remove(Path(path))


def zarr_location(store: Path, read_only: bool = False) -> Any:
    """What ``zarr.open_*`` opens for the Zarr store at ``store``: its directory, or at a URL an
    object store over the bucket's client."""
    if is_url(store):
        return objects.zarr_store(store, read_only=read_only)
    return str(store)


def readable(file: Path) -> Any:
    """What a reader that takes a path or a file object opens to read ``file``: the path, or at
    a URL a seekable file object over the object (range requests)."""
    return objects.RemoteFile(file) if is_url(file) else file


def identity_text(path: Path) -> str:
    """``path`` as text that names it wherever it is read: a URL as written, a local path
    absolute."""
    return str(path) if is_url(path) else os.path.abspath(path)
