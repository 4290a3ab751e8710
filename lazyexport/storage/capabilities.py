"""What a location can do, asked by purpose: code above the storage layer asks "can an output
here be renamed into place?" or "is what is here replaced whole by each write?", never "is this
a URL?", so each answer is decided here once for local files and object stores.

Invariants: every function answers from the location alone, without I/O; a local path can do
everything a file system does (rename, edit in place, hold directories); an object store has no
rename, replaces an object whole on each write, and has keys under prefixes, not directories.
"""

from __future__ import annotations

from typing import Any

from .resolve import backend_class
from .urls import READ_ONLY, UrlPath, is_url


def can_rename(path: Any) -> bool:
    """Whether an output at ``path`` is written under a temporary name and renamed into place
    (a file system). An object store has no rename: there chunks go to their final place and
    what makes the output visible is held back until the commit
    (:mod:`~lazyexport.storage.held`). The backend's ``renames`` capability decides."""
    return backend_class(path).renames


def holds_files(path: Any) -> bool:
    """Whether ``path`` is on a file system, where a writer that edits files in place (HDF5,
    TIFF, npy) writes its output directly; elsewhere (an object store) such an output is
    exported to a local staging directory and uploaded by the commit. The backend's
    ``directories`` capability decides."""
    return backend_class(path).directories


def replaced_whole(path: Any) -> bool:
    """Whether what is at ``path`` is replaced as a whole by each write, never changed in part
    (an object; a local file is opened and edited): nothing written there is added to later."""
    return is_url(path)


def removed_by_prefix(path: Any) -> bool:
    """Whether removing the tree at ``path`` removes exactly the keys below it and leaves no
    empty directories to tidy (an object store); on a file system the caller looks at what is
    left around it."""
    return is_url(path)


def opened_by_name(path: Any) -> bool:
    """Whether ``path`` is a file a reader that takes only file names can open (a local path);
    an object is read through range requests
    (:func:`~lazyexport.storage.reading.open_file`)."""
    return not is_url(path)


def read_only(path: Any) -> bool:
    """Whether nothing can be written at ``path``: an HTTP(S) URL."""
    return is_url(path) and _url(path).scheme in READ_ONLY


def bucket_root(path: Any) -> str | None:
    """The bucket ``path`` names as a whole (a URL without a key, which holds outputs but is
    none), as ``scheme://bucket``; None for anything else."""
    if not is_url(path):
        return None
    url = _url(path)
    return None if url.key else url.root


def _url(path: Any) -> UrlPath:
    return path if isinstance(path, UrlPath) else UrlPath(str(path))
