"""The registry of source readers: one :class:`SourceReader` per source kind, registered by name
(each reader module registers its own, a plugin through the ``lazyexport.readers`` entry point
group), the way :mod:`lazyexport.formats.registry` holds the writers.

Invariants: a suffix names at most one reader (registering a second reader for it is refused);
a path is given to the reader its file part's suffix names, else to the first reader, in
:attr:`SourceReader.guess_order` then registration order, whose :meth:`SourceReader.can_open`
accepts it; a URL only to a reader that ``supports_urls``. Entry points are loaded once, on the
first question asked of the registry; a plugin that fails to load is left out with a warning
(as xarray does with its backends), so it cannot break the readers that work. Nothing here opens
a file.
"""

from __future__ import annotations

import importlib.metadata
import os
import warnings
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import SourceError

if TYPE_CHECKING:
    import xarray as xr

    from .facts import SourceMeta

ENTRY_POINT_GROUP = "lazyexport.readers"


class SourceReader:
    """What every source reader declares, and opens with (after xarray's ``BackendEntrypoint``).

    ``name`` identifies the reader; ``description`` names what it reads for messages;
    ``suffixes`` are the lower-case suffixes of the file part it is chosen by; ``supports_urls``
    says whether it reads at an http(s)/S3 URL; ``supports_scenes`` whether a scene can be chosen
    (``scenes_through`` names the reader a scene is read through instead, e.g. an OME-TIFF's
    scenes through bioio). :meth:`open` returns the labeled, dask-backed DataArray with its
    :class:`~lazyexport.sources.facts.SourceFacts` attached; it reads metadata only.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    suffixes: ClassVar[tuple[str, ...]] = ()
    supports_urls: ClassVar[bool] = False
    supports_scenes: ClassVar[bool] = False
    scenes_through: ClassVar[str | None] = None
    # lower: asked first when no suffix names a reader
    guess_order: ClassVar[int] = 0

    def can_open(self, path: str | os.PathLike) -> bool:
        """Whether this reader reads ``path`` (by default: its suffix is one of ``suffixes``);
        readers that recognise a file by more than its name (a Zarr directory's markers, a bioio
        plugin's suffixes) say so here. Cheap: no pixel is read."""
        return Path(path).suffix.lower() in self.suffixes

    def open(
        self,
        path: Any,
        internal: str,
        axes: str | None = None,
        scene: int | str | None = None,
    ) -> xr.DataArray:
        """Open ``internal`` (the path inside the file, or "") of ``path``, labeled with ``axes``
        where given; ``scene`` only for a reader that ``supports_scenes``."""
        raise NotImplementedError

    def describe(
        self,
        path: Any,
        internal: str,
        axes: str | None = None,
        scene: int | str | None = None,
    ) -> SourceMeta | None:
        """What :meth:`open` would open, as the metadata say, without making the array (and
        without importing dask or xarray), for ``lazyexport info``; None (the default) where the
        reader can only tell by opening it."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


_READERS: dict[str, type[SourceReader]] = {}
_SUFFIXES: dict[str, str] = {}  # suffix -> reader name
_PLUGINS_LOADED = False


def register(cls: type[SourceReader]) -> type[SourceReader]:
    """Register the reader class ``cls`` by its name (a class decorator)."""
    if not cls.name:
        raise SourceError(f"the reader {cls.__name__} has no name")
    taken = {s: _SUFFIXES[s] for s in cls.suffixes if _SUFFIXES.get(s, cls.name) != cls.name}
    if taken:
        suffix, other = next(iter(taken.items()))
        raise SourceError(f"the reader {cls.name!r} claims {suffix}, which {other!r} reads")
    _READERS[cls.name] = cls
    for suffix in cls.suffixes:
        _SUFFIXES[suffix] = cls.name
    return cls


def _load_plugins() -> None:
    """Register the readers of the ``lazyexport.readers`` entry point group, once."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            cls = entry.load()
            if not (isinstance(cls, type) and issubclass(cls, SourceReader)):
                raise TypeError(f"{entry.value} is not a SourceReader class")
            if cls.name not in _READERS or _READERS[cls.name] is not cls:
                register(cls)
        except Exception as exc:  # a broken plugin: the others still work
            warnings.warn(
                f"the reader plugin {entry.name!r} was not loaded: {exc}", RuntimeWarning, 2
            )


def readers() -> list[SourceReader]:
    """Every registered reader, in the order they are guessed in."""
    _load_plugins()
    ordered = sorted(_READERS.values(), key=lambda cls: cls.guess_order)  # stable
    return [cls() for cls in ordered]


def get_reader(name: str) -> SourceReader:
    """The reader registered as ``name``."""
    _load_plugins()
    if name not in _READERS:
        raise SourceError(f"unknown reader {name!r}; known: {', '.join(sorted(_READERS))}")
    return _READERS[name]()


def known_suffixes() -> list[str]:
    """The suffixes that name a reader, sorted."""
    _load_plugins()
    return sorted(_SUFFIXES)


def reader_for_suffix(suffix: str) -> SourceReader | None:
    """The reader the file suffix ``suffix`` names, or None."""
    _load_plugins()
    name = _SUFFIXES.get(suffix.lower())
    return None if name is None else _READERS[name]()


def reader_for(path: str | os.PathLike | PurePath) -> SourceReader | None:
    """The reader of ``path``, a local file or store (see the module's invariants), or None."""
    found = reader_for_suffix(PurePath(path).suffix)
    if found is not None:
        return found
    return next((r for r in readers() if r.can_open(path)), None)


def url_readers() -> list[SourceReader]:
    """The readers that read at a URL."""
    return [r for r in readers() if r.supports_urls]
