"""One interface to every place lazyexport stores bytes: local files and object stores.

Modelled on zarr-python 3's ``zarr.abc.store.Store``: a :class:`Backend` holds bytes under
string keys (``/``-separated, no leading ``/``, relative to the backend's root) and states what
it can do in class attributes; each implementation is one class (:class:`~lazyexport.storage.
files.FileBackend`, :class:`~lazyexport.storage.stores.ObjectBackend`), and one contract suite
(``tests/test_storage_backends.py``) runs against every one.

Invariants every implementation keeps:

- :meth:`Backend.put` replaces a key's bytes as one step: a reader sees the old bytes or the new,
  never a part.
- :meth:`Backend.put_new` creates a key only if nothing is there, atomically (``O_EXCL`` for
  files, a conditional put, ``If-None-Match: *``, for object stores): of any number of callers
  racing for one key exactly one succeeds, and it writes its bytes whole; the others get
  :class:`FileExistsError` and change nothing.
- :meth:`Backend.replace` writes only over the bytes it was given (on an object store: a put
  conditional on their entity tag, ``If-Match``).
- :meth:`Backend.delete` and :meth:`Backend.delete_prefix` of what is not there are no errors.
- A missing key is :class:`FileNotFoundError` on :meth:`Backend.read`.
- A *log* (:meth:`Backend.start_log`, :meth:`Backend.add_to_log`, :meth:`Backend.read_log`:
  what a resume journal is kept in) is a header and a set of short records; a record reads back
  only once it was added whole (an interrupted addition is never read), and a log restarted with
  another header reads back no record of the old one. Here (any backend) the header is the key
  ``<log>.header`` and each record the empty key ``<log>/<record>``, written after the header;
  :class:`~lazyexport.storage.files.FileBackend` keeps a log as one append-only file instead.

Capabilities (class attributes, as zarr's ``supports_*``): ``renames`` - an output is written
under a temporary name and renamed into place by the commit (local files); without it (object
stores) an output is written in place and made visible by what its commit writes last.
``directories`` - keys live in directories that must exist and be writable before a write.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

RECORD = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")  # a log record: a short key segment


def check_record(record: str) -> str:
    """``record`` if it can be a log record (a key segment: letters, digits, ``._-``, not
    starting with ``.``); else ValueError."""
    if not RECORD.fullmatch(record):
        raise ValueError(f"not a log record: {record!r}")
    return record


class Backend(ABC):
    """Bytes under keys, at one root (a directory, or a bucket and prefix)."""

    supports_put_new: bool = True  # an atomic create (every backend here has one)
    renames: bool = False  # outputs are renamed into place (else written in place)
    directories: bool = False  # keys live in directories that must be made and writable

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` holds bytes."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every key that starts with ``prefix``, sorted."""

    @abstractmethod
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """The bytes of ``key`` (``start`` to ``end``, exclusive, when given); raises
        :class:`FileNotFoundError` if there are none."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key``, replacing what was there in one step."""

    @abstractmethod
    def put_new(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` if nothing is there, atomically; raise
        :class:`FileExistsError` (and change nothing) if something is."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` (nothing there: no error)."""

    def replace(self, key: str, expected: bytes, data: bytes) -> bool:
        """Store ``data`` under ``key`` only if it holds ``expected``; return whether it did. Here:
        read, compare, :meth:`put` (callers that race hold a marker meanwhile, as
        :mod:`lazyexport.storage.runs` does); an object store makes its put conditional on the
        entity tag of what it read, so a change in between is never overwritten."""
        try:
            if self.read(key) != expected:
                return False
        except FileNotFoundError:
            return False
        self.put(key, data)
        return True

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key that starts with ``prefix``; return how many."""
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def file_path(self, key: str) -> Path | None:
        """The local file that holds ``key`` where keys are files (the commit renames and
        removes those with the output's temporaries); None here (an object store)."""
        return None

    # -- logs: a header and a set of records (a resume journal) --------------------------------

    def start_log(self, key: str, header: str, records: Iterable[str] = ()) -> None:
        """Make ``key`` the log of ``header`` holding exactly ``records``. Here: a header that
        differs is deleted first and written last, so an interruption leaves a log with no
        header (read as nothing) or with this one and a subset of ``records``."""
        wanted = {check_record(r) for r in records}
        head = f"{key}.header"
        try:
            same = self.read(head) == header.encode()
        except FileNotFoundError:
            same = False
        if not same:
            self.delete(head)
        present = {found[len(key) + 1 :] for found in self.list(f"{key}/")}
        for record in present - wanted:
            self.delete(f"{key}/{record}")
        for record in wanted - present:
            self.put(f"{key}/{record}", b"")
        if not same:
            self.put(head, header.encode())

    def add_to_log(self, key: str, record: str) -> None:
        """Add ``record`` to the log ``key`` durably: once this returns it reads back."""
        self.put(f"{key}/{check_record(record)}", b"")

    def read_log(self, key: str) -> tuple[str | None, tuple[str, ...]]:
        """The header of the log ``key`` (None if it has none) and its records, each whole."""
        try:
            header: str | None = self.read(f"{key}.header").decode()
        except FileNotFoundError:
            header = None
        records = [found[len(key) + 1 :] for found in self.list(f"{key}/")]
        return header, tuple(r for r in records if "/" not in r and RECORD.fullmatch(r))

    def delete_log(self, key: str) -> None:
        """Remove the log ``key`` (nothing there: no error); its records before its header."""
        self.delete_prefix(f"{key}/")
        self.delete(f"{key}.header")
