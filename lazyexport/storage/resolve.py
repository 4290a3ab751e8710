"""A location's backend: the one place a local path or a URL becomes a
:class:`~lazyexport.storage.backend.Backend` and a key in it (as zarr's ``make_store_path``), so
code above the storage layer asks the backend what it can do instead of whether it is remote.

Invariants: a local path is the key of its name in a :class:`~lazyexport.storage.files.
FileBackend` of its directory; a URL the key of its name in an :class:`~lazyexport.storage.
stores.ObjectBackend` of its parent prefix (through the store of its bucket, with the storage
options in use when it is resolved). Nothing is read or written here.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from .backend import Backend
from .files import FileBackend
from .local import temp_path
from .stores import ObjectBackend
from .urls import UrlPath, as_url, is_url


def backend_class(path: object) -> type[Backend]:
    """The kind of backend ``path`` is in, without making one: its class attributes say what
    it can do (see :class:`Backend`), which :mod:`~lazyexport.storage.capabilities` asks."""
    return ObjectBackend if is_url(path) else FileBackend


def backend_at(path: PurePath | UrlPath) -> tuple[Backend, str]:
    """The backend holding ``path``, and ``path``'s key in it."""
    if backend_class(path) is ObjectBackend:
        url = as_url(path)
        return ObjectBackend.at(url.parent), url.name
    local = Path(str(path))
    return FileBackend(local.parent), local.name


def backend_of(path: PurePath | UrlPath) -> Backend:
    """The backend of the place ``path`` is in (what it can do: see :class:`Backend`)."""
    return backend_at(path)[0]


def journal_path(final: Path, token: str) -> Path:
    """Where the resume journal of the run ``token`` of the output ``final`` is kept: beside it
    where outputs are renamed into place (``.{name}.lazyexport-{token}.blocks``, which the commit
    removes with the temporaries), else in the run's held prefix (``.../blocks``, removed with
    it when the output is published)."""
    if backend_of(final).renames:
        return temp_path(final, token, "blocks")
    return temp_path(final, token) / "blocks"
