"""An obstore store (S3, Google Cloud Storage, Azure, obstore's ``MemoryStore`` or
``LocalStore``) as a :class:`~lazyexport.storage.backend.Backend`.

Invariants: :meth:`ObjectBackend.put_new` is obstore's conditional put (``mode="create"``:
``If-None-Match: *`` on S3, honoured by S3 and by moto's server), so of racing creators exactly
one succeeds; obstore's ``AlreadyExistsError`` and ``PreconditionError`` become
:class:`FileExistsError` and its ``NotFoundError`` is :class:`FileNotFoundError` already.
:meth:`ObjectBackend.replace` puts conditionally on the entity tag (and version) of the object
it read (``If-Match`` on S3, honoured by moto's server too), so it never overwrites a change
made since.
"""

from __future__ import annotations

from typing import Any, cast

from .backend import Backend
from .objects import store
from .urls import UrlPath


class ObjectBackend(Backend):
    """The objects of the obstore store ``client``, below ``prefix`` (no trailing ``/``)."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client, self.prefix = client, prefix.strip("/")

    @classmethod
    def at(cls, url: UrlPath) -> ObjectBackend:
        """The objects below ``url``, through the store of its bucket (storage options in use)."""
        return cls(store(url.root), url.key)

    def __repr__(self) -> str:
        return f"ObjectBackend({self.client!r}, {self.prefix!r})"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def exists(self, key: str) -> bool:
        import obstore

        try:
            obstore.head(self.client, self._key(key))
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str = "") -> list[str]:
        import obstore

        base = self._key("")
        # obstore lists whole path segments: list the prefix's directory, then pick by text
        directory = "/".join(p for p in (self.prefix, prefix.rpartition("/")[0]) if p)
        found = [
            meta["path"][len(base) :]
            for batch in obstore.list(self.client, prefix=directory or None)
            for meta in batch
        ]
        return sorted(k for k in found if k.startswith(prefix))

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        import obstore

        if start is None and end is None:
            return bytes(obstore.get(self.client, self._key(key)).bytes())
        if end is None:
            options: Any = {"range": {"offset": start}}
            return bytes(obstore.get(self.client, self._key(key), options=options).bytes())
        return bytes(obstore.get_range(self.client, self._key(key), start=start or 0, end=end))

    def put(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self.client, self._key(key), data)

    def put_new(self, key: str, data: bytes) -> None:
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.client, self._key(key), data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            raise FileExistsError(key) from None

    def replace(self, key: str, expected: bytes, data: bytes) -> bool:
        import obstore
        from obstore.exceptions import NotSupportedError, PreconditionError

        try:
            found = obstore.get(self.client, self._key(key))
        except FileNotFoundError:
            return False
        meta = found.meta
        if bytes(found.bytes()) != expected:
            return False
        version = {k: meta[k] for k in ("e_tag", "version") if meta.get(k) is not None}
        if not version:  # nothing to make the put conditional on
            return super().replace(key, expected, data)
        try:
            obstore.put(self.client, self._key(key), data, mode=cast(Any, version))
        except PreconditionError:  # changed since it was read
            return False
        except NotSupportedError:  # a store without conditional updates
            return super().replace(key, expected, data)
        return True

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.client, self._key(key))
        except FileNotFoundError:
            pass

    def delete_prefix(self, prefix: str) -> int:
        import obstore

        keys = [self._key(k) for k in self.list(prefix)]
        for start in range(0, len(keys), 1000):
            obstore.delete(self.client, keys[start : start + 1000])
        return len(keys)
