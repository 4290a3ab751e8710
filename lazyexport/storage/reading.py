"""The operations a source reader needs on where it reads, whether that is a local path or a
URL: the one place on the reading side that asks which it is, so a reader calls one function
instead of branching on :func:`~lazyexport.storage.urls.is_url` itself (the writing side's
operations are in :mod:`~lazyexport.storage.paths`).

Invariants:

- each function does for a URL what it does for a local path, with the object store's nearest
  operation (a file is an object; a directory is every object below a prefix), or says in its
  name what it cannot do there (:func:`can_glob`; whether readers of file names only can
  open it is :func:`~lazyexport.storage.capabilities.opened_by_name`);
- nothing here writes, and nothing asks an object store what a function's docs do not say it
  asks: a location's text, name, folder or parts are worked out without a request;
- a local path keeps the spelling its caller gave (absolute where the docs say so), and a URL
  stays the :class:`~lazyexport.storage.urls.UrlPath` or text it was given, so what a source
  records of its location is what it recorded before these functions existed.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from . import objects
from .capabilities import opened_by_name
from .urls import StorageError, UrlPath, as_path, is_url

# -- where a location is, as text and parts (no request) --------------------------------------


def location_text(obj: Any) -> str | None:
    """The text of the location ``obj`` (a path, a :class:`UrlPath` or text), None for anything
    else (an array)."""
    if isinstance(obj, UrlPath):
        return str(obj)
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    return None


def absolute(path: Any) -> Any:
    """``path`` in a form that names it from any working directory (cluster workers run in
    others): a local path made absolute (text), a URL as it is."""
    return path if is_url(path) else os.path.abspath(path)


def resolved_text(path: Any) -> str:
    """``path`` as text with its symbolic links resolved; a URL as written."""
    return str(path) if is_url(path) else str(Path(path).resolve())


def source_text(path: Any) -> str:
    """``path`` as a source records it: a URL in its one spelling, a local path as given."""
    return str(as_path(path)) if is_url(path) else str(path)


def name_of(path: Any) -> str:
    """The last part of ``path``'s name (``dir/a.tif`` -> ``a.tif``)."""
    return as_path(path).name if is_url(path) else Path(path).name


def folder_of(path: Any) -> str:
    """The folder holding ``path``, as text: the parent of a local path with its links resolved,
    the prefix above a URL."""
    if is_url(path):
        return str(as_path(path).parent)
    return str(Path(path).resolve().parent)


def below(path: Any, key: str) -> Any:
    """The location ``key`` below ``path`` (``path`` itself for no key), in the form ``path`` is
    kept in: text locally, a :class:`UrlPath` at a URL."""
    if not key:
        return path
    return as_path(path) / key if is_url(path) else str(Path(path) / key)


def prefixes(location: Path) -> list[tuple[Path, tuple[str, ...]]]:
    """Each leading part of ``location`` with the parts after it, shortest first: from the first
    component of a local path, from the first key segment below a URL's bucket."""
    if is_url(location):
        url = UrlPath(cast(UrlPath, location))
        heads = reversed((url, *url.parents)[:-1])
        return [(cast(Path, h), url.segments[len(h.segments) :]) for h in heads]
    parts = Path(location).parts
    return [(Path(*parts[:i]), parts[i:]) for i in range(1, len(parts) + 1)]


# -- what is there ----------------------------------------------------------------------------


def listed_file(path: Any) -> bool:
    """Whether ``path`` is a file the file system lists; at a URL False, without a request (what
    is there is asked by the reader that opens it)."""
    return not is_url(path) and Path(path).is_file()


def listed_dir(path: Any) -> bool:
    """Whether ``path`` is a directory the file system lists; at a URL False, without a request
    (an object store has no directories)."""
    return not is_url(path) and Path(path).is_dir()


def is_container(path: Any) -> bool:
    """Whether ``path`` may hold the nodes of a container (N5): a directory; at a URL any prefix
    may (nothing is asked: reading its first document tells)."""
    return is_url(path) or Path(path).is_dir()


def read_bytes(path: Any, values: Any = None) -> bytes | None:
    """The bytes of the file ``path`` (at a URL: of the object, read with the storage options
    ``values``), or None where there is none."""
    if is_url(path):
        try:
            return objects.get_bytes(as_path(path), values)
        except FileNotFoundError:
            return None
    return Path(path).read_bytes() if Path(path).exists() else None


def folders_with(root: Any, name: str, skip: Callable[[str], bool]) -> list[str]:
    """The folders below ``root`` (relative, ``/``-separated; ``""`` for ``root`` itself) that
    hold a file ``name``; folders whose name ``skip`` accepts are not entered. At a URL: the
    prefixes of every object ``name`` below ``root`` (one listing)."""
    if is_url(root):
        keys = [k for k in objects.list_keys(as_path(root)) if k.rpartition("/")[2] == name]
        folders = [k.rpartition("/")[0] for k in keys]
        return [f for f in folders if not any(skip(p) for p in f.split("/") if p)]
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not skip(d)]
        if name in files:
            found.append(Path(folder).relative_to(root).as_posix().strip("."))
    return found


# -- opening ----------------------------------------------------------------------------------


def options_for(path: Any) -> dict[str, Any] | None:
    """The storage options in effect for reading ``path`` (they travel with a source to the
    workers that read it); None for a local path, which has none."""
    return objects.current_options() if is_url(path) else None


def open_file(path: Any, values: Any = None) -> Any:
    """What to hand a reader that takes a file name or a file object (h5py, tifffile): the path,
    or at a URL a seekable file object over the object (range requests; the storage options
    ``values``, default those in effect)."""
    return objects.RemoteFile(path, values=values) if is_url(path) else path


def size_of(opened: Any) -> int:
    """The size in bytes of what :func:`open_file` returned."""
    if isinstance(opened, objects.RemoteFile):
        return opened.size
    return os.path.getsize(opened)


def zarr_readable(path: Any) -> Any:
    """What ``zarr.open`` reads the store ``path`` from: its absolute directory (cluster workers
    run in other directories), or at a URL a read-only object store over the bucket's client."""
    if is_url(path):
        return objects.zarr_store(as_path(path))
    return str(Path(path).absolute())


def zarr_node(path: Any, internal: str) -> Any:
    """The node ``internal`` of the Zarr store ``path``: below its absolute directory, or below
    the URL."""
    if is_url(path):
        return below(path, internal)
    return Path(path).absolute() / internal


def storage_failure(path: Any, exc: BaseException, where: str) -> StorageError | None:
    """``exc`` as one line naming ``where``, when it is an object store's refusal to read
    ``path``; None for any other failure (the reader words those)."""
    if is_url(path) and objects.is_storage_error(exc):
        return objects.describe(exc, where, "read")
    return None


# -- capabilities -----------------------------------------------------------------------------


def can_glob(text: str) -> bool:
    """Whether glob patterns expand at ``text``: in the file system they do; at a URL ``[``,
    ``*`` and ``?`` are characters of a key."""
    return opened_by_name(text)


def small_reads_cheap(path: Any) -> bool:
    """Whether reading a few chunks at a time from ``path`` costs no round trip: in the file
    system it does not (a pass over the data may read small groups of chunks on a few threads);
    at a URL every read waits on the network, and many chunks are better asked for at once."""
    return not is_url(path)


# -- whether the data changed -----------------------------------------------------------------


def file_listing(path: str) -> list[tuple[str, int, int, int]]:
    """(path relative to ``path``, size, mtime in ns, inode) of the file ``path``, or of every file
    below the directory ``path`` (one scandir walk); raises OSError if it cannot be listed."""
    info = os.stat(path)
    if not statmod.S_ISDIR(info.st_mode):
        return [("", info.st_size, info.st_mtime_ns, info.st_ino)]
    found, folders = [], [path]
    while folders:
        folder = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                else:
                    info = entry.stat()
                    relative = os.path.relpath(entry.path, path)
                    found.append((relative, info.st_size, info.st_mtime_ns, info.st_ino))
    return sorted(found)


def contents(path: Any) -> tuple[str, list]:
    """``path`` named from anywhere (absolute, or the URL) with the listing of what it holds:
    :func:`file_listing` locally, (key, size, entity tag) of each object at a URL. Raises
    OSError if it cannot be listed."""
    if is_url(path):
        return str(path), objects.listing(as_path(path))
    return os.path.abspath(path), file_listing(os.fspath(path))


def stamp(path: Any) -> tuple | None:
    """Size, modification time and inode of ``path`` itself (one stat; None if it cannot be
    read); at a URL the object's size and entity tag (one request)."""
    if is_url(path):
        return objects.stamp(as_path(path))
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size, info.st_mtime_ns, info.st_ino


def handle_key(path: Any) -> str | None:
    """What two spellings of one local file have in common (links resolved), for finding the
    handles this process holds open on it; None at a URL (no handle there blocks a writer)."""
    return None if is_url(path) else os.path.realpath(path)


__all__ = [
    "absolute",
    "below",
    "can_glob",
    "contents",
    "file_listing",
    "folder_of",
    "folders_with",
    "handle_key",
    "is_container",
    "listed_dir",
    "listed_file",
    "location_text",
    "name_of",
    "open_file",
    "options_for",
    "prefixes",
    "read_bytes",
    "resolved_text",
    "size_of",
    "source_text",
    "stamp",
    "storage_failure",
    "zarr_node",
    "zarr_readable",
]
