"""Storage: where exports read and write, local files and object stores, in one package.

The one home of storage: nothing outside this package imports obstore or names a storage
module's private parts. Its modules, from the bottom:

- :mod:`~lazyexport.storage.urls`: :class:`UrlPath`, text made into a location once (no I/O);
- :mod:`~lazyexport.storage.backend`: :class:`Backend`, the one interface to stored bytes
  (exists, list, read ranges, put, atomic put_new, delete), implemented by
  :mod:`~lazyexport.storage.files` (local files) and :mod:`~lazyexport.storage.stores` (obstore:
  S3, memory, ...);
- :mod:`~lazyexport.storage.runs`: run tokens, live processes, and the atomic ownership claim of
  a ``--resume`` export over any backend;
- :mod:`~lazyexport.storage.local`: local files - hidden temporaries named by run token, the
  recorded commit (renames) and the leftovers of killed runs;
- :mod:`~lazyexport.storage.objects`: object-store requests through obstore, storage options;
- :mod:`~lazyexport.storage.held`: object-store outputs under way - held Zarr metadata
  (:mod:`~lazyexport.storage.zarrheld`), recorded uploads, the owner claim, leftovers;
- :mod:`~lazyexport.storage.location`: "is this the same location?" asked once, canonically;
- :mod:`~lazyexport.storage.paths`: the operations a writer needs on a location (exists, remove,
  what zarr or h5py opens), local or URL alike: callers do not branch on ``is_url``.
- :mod:`~lazyexport.storage.resolve`: a location's backend and key (as zarr's
  ``make_store_path``), and where a run's resume journal goes;
- :mod:`~lazyexport.storage.owners`: the owner records of a ``--resume`` run, claimed
  atomically and released the same way at any location;
- :mod:`~lazyexport.storage.capabilities`: what a location can do, asked by purpose (renamed
  into place? replaced whole by each write?), from the backend's capabilities;

The names below are the local-file API as the rest of lazyexport uses it
(``storage.claim``, ``storage.commit_renames``, ...); ``lazyexport.remote`` names the
object-store API.
"""

from __future__ import annotations

from .backend import Backend
from .files import FileBackend
from .local import (
    CONTAINER_MARKERS,
    KINDS,
    NAME,
    NOFOLLOW,
    Leftover,
    clean,
    clean_path,
    commit_renames,
    create_new,
    finish_commit,
    leftovers,
    owner_of,
    refuse_links,
    remove,
    replace,
    state_of,
    temp_path,
    with_kind,
    write_durably,
)
from .owners import claim, release
from .runs import Busy, Run, host_tag, new_token, process_alive
from .urls import StorageError, UrlPath, as_path, is_url

__all__ = [
    "Backend",
    "FileBackend",
    "CONTAINER_MARKERS",
    "KINDS",
    "NAME",
    "NOFOLLOW",
    "Busy",
    "Leftover",
    "Run",
    "StorageError",
    "UrlPath",
    "as_path",
    "claim",
    "clean",
    "clean_path",
    "commit_renames",
    "create_new",
    "finish_commit",
    "host_tag",
    "is_url",
    "leftovers",
    "new_token",
    "owner_of",
    "process_alive",
    "refuse_links",
    "release",
    "remove",
    "replace",
    "state_of",
    "temp_path",
    "with_kind",
    "write_durably",
]
