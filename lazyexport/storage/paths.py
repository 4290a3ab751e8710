"""The operations code above the storage layer needs on a location, whether it is a local path
or a URL: the one place that asks which it is, so a writer calls one function instead of
branching on :func:`~lazyexport.storage.urls.is_url` itself.

Invariants: each function does for a URL what it does for a local path, with the object store's
nearest operation (a file is an object; a directory is every object below a prefix); nothing
here follows a symbolic link to delete (a link is removed itself). Where the two differ in kind
(no rename at a URL, no directory in an output's way there) the difference is stated by the
function; what a location can or cannot do at all is asked of
:mod:`~lazyexport.storage.capabilities`.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path, PurePath
from typing import Any

from . import objects
from .held import visible
from .local import remove
from .urls import as_path, is_url, local_text


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


def identity_text(path: Path) -> str:
    """``path`` as text that names it wherever it is read: a URL as written, a local path
    absolute."""
    return str(path) if is_url(path) else os.path.abspath(path)


def present(path: Path) -> bool:
    """Whether a file or directory is at ``path``, a link followed (a dangling link is not);
    at a URL: an object."""
    if is_url(path):
        return objects.exists_object(path)
    return Path(path).exists()


def node_exists(path: Path) -> bool:
    """Whether a node is at ``path``: anything (:func:`exists`), or at a URL a Zarr node - its
    metadata, since the chunks alone of an export under way are not one."""
    return visible(path) if is_url(path) else exists(path)


def store_exists(path: Path) -> bool:
    """Whether a store that can take another node is at ``path``: a directory (a link to one
    too), or at a URL a Zarr node (:func:`node_exists`)."""
    return visible(path) if is_url(path) else Path(path).is_dir()


def file_in_the_way(path: Path) -> bool:
    """Whether what is at ``path`` is a file (or a link to no directory) where a directory
    store goes. Never at a URL: a key can be an object and have keys below it at once."""
    return not is_url(path) and exists(path) and not Path(path).is_dir()


def occupied_directory(path: Path, follow_links: bool = False) -> bool:
    """Whether a directory with something in it is at ``path`` (reached through a link only
    with ``follow_links``). Never at a URL: a prefix is no directory that stands in an
    output's way (what is written there goes beside the keys already below it)."""
    if is_url(path) or (not follow_links and Path(path).is_symlink()):
        return False
    return Path(path).is_dir() and any(Path(path).iterdir())


def read_json(path: Path) -> Any:
    """The JSON document at ``path`` (a file, or at a URL an object), or None where nothing is
    there to read or it is not JSON."""
    if is_url(path):
        try:
            return json.loads(objects.get_bytes(path))
        except (FileNotFoundError, ValueError):
            return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def matching_files(pattern: str) -> list[str]:
    """The local paths the glob ``pattern`` matches. None at a URL: objects there are not
    looked for by pattern (an output's objects are listed by their own keys)."""
    return [] if is_url(pattern) else glob.glob(pattern)


def written_location(text: str) -> PurePath:
    """``text`` as a location to split into its parts: a URL in its one spelling, a local path
    as written (the OS resolves its own ``..``; a ``file://`` URL is a local path). Refuses a
    scheme lazyexport does not write to (:func:`~lazyexport.storage.urls.as_path`)."""
    whole: PurePath = as_path(text)
    return whole if is_url(whole) else PurePath(local_text(text))
