"""``open_source``: any supported input -> a labeled, dask-backed :class:`xarray.DataArray`.

Paths are given to a :class:`~lazyexport.sources.registry.SourceReader` from the reader registry
(:mod:`lazyexport.sources.registry`): the one the file part's suffix names, else the first whose
``can_open`` accepts the file (a Zarr directory; a suffix an installed bioio plugin claims); the
part after the file is the internal path (``file.h5/group/data``, ``store.zarr/level0``). A URL
goes only to a reader that ``supports_urls`` (a URL no suffix names is a Zarr store); a local glob
to the slice-sequence reader (at a URL, ``[``, ``*`` and ``?`` are characters of a key: a name
that is there opens by its suffix; one that is not, with glob characters, is a glob of slices,
read from local files only). Opening reads metadata only; what the planner needs to know about the
file comes with the DataArray as one :class:`~lazyexport.sources.facts.SourceFacts`.

A path is resolved to its reader once (:func:`locate`), then opened, or described from its
metadata alone (:func:`describe_path`, for ``lazyexport info``: no dask or xarray is imported,
where the reader can tell without them). Importing this package imports neither.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, cast

from ..errors import SourceError
from ..location import internal_path
from ..remote import (
    StorageError,
    UrlPath,
    as_path,
    clean_segments,
    describe,
    is_storage_error,
    local_text,
)
from ..remote import exists as remote_exists
from ..storage import capabilities, reading
from . import bioio, hdf5, n5, npy, tiff, zarr  # noqa: F401  (each registers its reader)
from .facts import SourceFacts, SourceMeta, source_facts
from .registry import (
    SourceReader,
    get_reader,
    known_suffixes,
    reader_for,
    reader_for_suffix,
    readers,
    register,
    url_readers,
)

if TYPE_CHECKING:
    import xarray as xr

ZARR = "zarr"  # the reader of a URL that no suffix names
SEQUENCE = "slice-sequence"  # the reader of a glob


def split_path(text: str) -> tuple[Path, str]:
    """Split ``file.h5/inner/path`` into the file (or store) and the internal path.

    The file part ends at the first component whose suffix names a known format, or at the
    first component that exists as a file or a Zarr directory (at a URL: by suffix only, no
    listing: an object store has no directories; a URL without one is a Zarr store).
    """
    location = as_path(text)
    for head, rest in reading.prefixes(location):
        if reader_for_suffix(head.suffix) or reading.listed_file(head) or zarr.is_zarr_dir(head):
            if _climbs(rest):  # 'a.zarr/../b.zarr': the file system's '..', not the store's
                continue
            return head, internal_path("/".join(rest), head)
    return location, ""


def _climbs(parts: tuple[str, ...]) -> bool:
    """Whether a '..' of ``parts`` goes above where they start."""
    try:
        clean_segments(parts, "", "")
    except StorageError:
        return True
    return False


def split_url(url: PurePath | UrlPath) -> tuple[UrlPath, str]:
    """:func:`split_path` for a URL: the object (or store) part ends at the first component whose
    suffix names a known format (no listing: an object store has no directories); a URL
    without one is a Zarr store. (A UrlPath is in one spelling already: no ``..`` in it.)"""
    url = UrlPath(cast(UrlPath, url))
    for outer in reversed((url, *url.parents)[:-1]):
        if reader_for_suffix(outer.suffix):
            return outer, "/".join(url.segments[len(outer.segments) :])
    return url, ""


def locate_url(url: PurePath) -> tuple[SourceReader, Any, str]:
    """The reader, object (or store) and internal path of a source at a URL (Zarr and OME-Zarr
    stores are read through ``zarr.storage.ObjectStore``, N5 containers object by object, HDF5
    and TIFF files through range requests); it is checked to exist. ``[``, ``*`` and ``?`` are
    characters of a key (``scan[1].zarr`` opens as any other name): only a name
    with them that is not there (or cannot be asked for) is a glob of objects, refused."""
    path, internal = split_url(url)
    reader = reader_for_suffix(path.suffix) or get_reader(ZARR)
    _refuse_local_only(reader, path)
    glob = get_reader(SEQUENCE).can_open(UrlPath(cast(UrlPath, url)).name.partition("?")[0])
    try:
        found = remote_exists(path)  # the bucket, the credentials, the endpoint: one request
    except Exception as exc:
        if not glob and is_storage_error(exc):
            raise describe(exc, str(path), "read") from None
        if not glob:
            raise
        found = False  # a server that cannot look a glob up: no such object
    if not found and glob:
        _refuse_local_only(get_reader(SEQUENCE), path)
    if not found:
        raise SourceError(f"source {str(path)!r} does not exist")
    return reader, path, internal


def _refuse_local_only(reader: SourceReader, path: PurePath | UrlPath) -> None:
    """Refuse, in one line, a reader that reads local files only at the URL ``path``."""
    if not reader.supports_urls:
        able = ", ".join(r.description for r in url_readers())
        kind = f"{path.suffix} sources" if reader.suffixes else reader.description
        raise SourceError(f"{path}: {kind} are read from local files only (at a URL: {able})")


def locate(text: str, scene: int | str | None = None) -> tuple[SourceReader, Any, str]:
    """The reader that reads the source ``text`` names (the one its scenes are read through where
    ``scene`` is chosen), the file (or store, or glob) and the internal path; nothing is opened."""
    if scene is not None and (
        not capabilities.opened_by_name(text) or any(ch in text for ch in "*?[")
    ):
        raise SourceError(
            f"{text}: scenes are chosen in local microscopy files read through bioio, not at a URL "
            "or in a glob of slices"
        )
    if not capabilities.opened_by_name(text):  # only the readers that make requests
        return locate_url(as_path(text))
    text = local_text(text)  # file:///abs/path; an unknown scheme is refused
    if reading.can_glob(text) and get_reader(SEQUENCE).can_open(text):
        return get_reader(SEQUENCE), text, ""
    path, internal = split_path(text)
    if not path.exists():
        raise SourceError(f"source {str(path)!r} does not exist")
    reader = reader_for(path)
    if reader is None:
        known = ", ".join(known_suffixes())
        raise SourceError(f"cannot tell the format of {str(path)!r} from its name (known: {known})")
    return _scene_reader(reader, path, scene), path, internal


def _scene_reader(reader: SourceReader, path: Path, scene: int | str | None) -> SourceReader:
    """``reader``, or the reader its scenes are read through when one is chosen; a scene is
    refused by a reader without scenes."""
    if scene is not None and not reader.supports_scenes and reader.scenes_through:
        return get_reader(reader.scenes_through)  # an OME-TIFF's series: bioio's scenes
    if scene is not None and not reader.supports_scenes:
        with_scenes = ", ".join(bioio.SUFFIXES)
        raise SourceError(
            f"{path} has no scenes: a scene is chosen in microscopy files read through bioio "
            f"({with_scenes}, OME-TIFF, ...)"
        )
    return reader


def _chosen(reader: SourceReader, scene: int | str | None) -> dict:
    """The scene argument of a reader that reads scenes (none for another)."""
    return {"scene": scene} if reader.supports_scenes else {}


def open_url(url: PurePath, axes=None) -> xr.DataArray:
    """Open a source at a URL (see :func:`locate_url`)."""
    reader, path, internal = locate_url(url)
    return reader.open(path, internal, axes=axes)


def open_path(text: str, axes=None, scene: int | str | None = None) -> xr.DataArray:
    reader, path, internal = locate(text, scene)
    return reader.open(path, internal, axes=axes, **_chosen(reader, scene))


def describe_path(text: str, axes=None, scene: int | str | None = None) -> SourceMeta | None:
    """What the source ``text`` names holds, from its metadata alone (see
    :meth:`SourceReader.describe`); None where its reader can only tell by opening it."""
    reader, path, internal = locate(text, scene)
    return reader.describe(path, internal, axes=axes, **_chosen(reader, scene))


def open_source(obj, axes: str | None = None, scene: int | str | None = None) -> xr.DataArray:
    """Open ``obj`` lazily as a labeled dask-backed DataArray; no pixel is read.

    Parameters
    ----------
    obj : str, os.PathLike, numpy.ndarray, dask.array.Array or xarray.DataArray
        A path (``file.h5/dataset``, ``store.zarr[/path]``, ``store.n5[/path]``, ``file.tif``,
        ``file.npy``, or a glob of TIFF/PNG slices) or an array.
    axes : str, optional
        Axis tags (e.g. ``"zyxc"``) that override those found in the file (or name an array's).
    scene : int or str, optional
        The scene (position, series) of a microscopy file to read, by name or index; default the
        first. Choosing one reads the file through bioio (a TIFF too: an OME-TIFF's images are
        its scenes).

    Returns
    -------
    xarray.DataArray
        Dims are the axis tags; ``attrs`` hold the source, nickname and pixel size where known,
        and the channel names (``channel_names``, for the ``c`` axis) where the file has them.

    Raises
    ------
    SourceError
        For a path that cannot be opened, a corrupt or truncated file, or unsupported data
        (complex, non-numeric).
    """
    text = reading.location_text(obj)
    if text is not None:
        return open_path(text, axes=axes, scene=scene)
    if scene is not None:
        raise SourceError("an array has no scenes: scene is for microscopy files")
    from .memory import open_memory

    return open_memory(obj, axes=axes)


def open_exported(exported) -> xr.DataArray:
    """Open what an export wrote, lazily, labeled with its axes.

    Parameters
    ----------
    exported : ExportResult, str, os.PathLike or list of paths
        An export's result, a path (``out.h5/exported_data``, ``out.zarr``, a glob of slice
        files), or a list of slice files (a sequence's, or some of them: only those are read).

    Returns
    -------
    xarray.DataArray
        The exported data, with the export's axes as dims.

    Raises
    ------
    SourceError
        For a path that cannot be opened.
    """
    import xarray as xr

    from ..transforms import transpose

    paths = getattr(exported, "paths", None)
    if paths is None:
        if isinstance(exported, (list, tuple)):
            return tiff.open_sequence(list(exported))
        return open_source(exported)
    if len(paths) > 1 or exported.format.endswith("-sequence"):
        out = tiff.open_sequence(list(paths))
    else:
        internal = f"/{exported.internal}" if exported.internal else ""
        out = open_source(f"{exported.output}{internal}")
    axes = tuple(exported.axes)
    if set(out.dims) != set(axes) and out.ndim == len(axes):  # a format without axis names (npy)
        out = xr.DataArray(out.data, dims=axes, attrs=out.attrs)
    # formats with an axis order of their own (ImageJ's TZCYX) come back in the exported order
    return out if tuple(out.dims) == axes else transpose(out, axes)


__all__ = [
    "SourceFacts",
    "SourceMeta",
    "SourceReader",
    "describe_path",
    "get_reader",
    "open_exported",
    "open_source",
    "reader_for",
    "readers",
    "register",
    "source_facts",
    "split_path",
]
