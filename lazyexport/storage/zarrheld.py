"""A Zarr store whose metadata documents live elsewhere until the commit (imports zarr: only
:func:`lazyexport.storage.held.held_store` imports this module, when a Zarr output is opened).

Invariant: chunks go to the wrapped store, metadata documents
(:func:`~lazyexport.storage.objects.is_metadata`) to the side store, and reads of metadata look
at the side store first: nothing at the output is a Zarr node before
:func:`lazyexport.storage.held.publish`.
"""

from __future__ import annotations

from typing import Any

from zarr.storage import WrapperStore

from .objects import is_metadata


class HeldMetadata(WrapperStore):
    """The store ``store`` with its metadata documents in ``side``."""

    def __init__(self, store: Any, side: Any) -> None:
        super().__init__(store)
        self._side = side

    def _with_store(self, store: Any) -> Any:
        return type(self)(store, self._side)

    async def get(self, key, prototype, byte_range=None):
        if is_metadata(key):
            found = await self._side.get(key, prototype, byte_range)
            if found is not None:
                return found
        return await self._store.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        if is_metadata(key) and await self._side.exists(key):
            return True
        return await self._store.exists(key)

    async def set(self, key, value) -> None:
        await (self._side if is_metadata(key) else self._store).set(key, value)

    async def set_if_not_exists(self, key, value) -> None:
        await (self._side if is_metadata(key) else self._store).set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        await (self._side if is_metadata(key) else self._store).delete(key)

    async def list_dir(self, prefix: str):
        seen = set()
        for source in (self._side, self._store):
            async for name in source.list_dir(prefix):
                if name not in seen:
                    seen.add(name)
                    yield name
