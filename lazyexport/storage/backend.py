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
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Backend(ABC):
    """Bytes under keys, at one root (a directory, or a bucket and prefix)."""

    supports_put_new: bool = True  # an atomic create (every backend here has one)

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
