"""Zarr v2/v3 arrays and groups (``store.zarr`` or ``store.zarr/path``), OME-Zarr images included.

Axes come from ``dimension_names`` (v3), ``_ARRAY_DIMENSIONS`` (the xarray convention) or an
OME-Zarr group's ``multiscales.axes`` (level 0 is opened). :func:`zarr_meta` reads what the
metadata say (zarr-python, no dask or xarray); :func:`open_zarr` makes the dask array from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import zarr

from ..errors import SourceError
from ..storage import reading
from ..units import source_attrs
from .base import dask_chunks, exportable_dtype, from_meta, reader_array, resolve_axes, stamp
from .facts import SourceMeta
from .registry import SourceReader, register

if TYPE_CHECKING:
    import xarray as xr

SUFFIXES = (".zarr", ".zarr2", ".zarr3")
MARKERS = ("zarr.json", ".zarray", ".zgroup")


def is_zarr_dir(path: Path) -> bool:
    """Whether ``path`` is a directory holding Zarr metadata (at a URL: False, nothing asked)."""
    return reading.listed_dir(path) and any((path / m).exists() for m in MARKERS)


def _multiscales(attrs) -> list | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:
        return ome["multiscales"]
    return attrs.get("multiscales")


def _omero_labels(attrs) -> list[str]:
    """The channel labels of an OME-Zarr image's ``omero`` metadata (under ``ome`` in 0.5);
    none unless every channel has one."""
    ome = attrs.get("ome")
    omero = ome.get("omero") if isinstance(ome, dict) and "omero" in ome else attrs.get("omero")
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list) or not channels:
        return []
    labels = [c.get("label") if isinstance(c, dict) else None for c in channels]
    return [str(label) for label in labels] if all(labels) else []


def _ome_pixel_size(image: dict) -> dict:
    """Pixel sizes of level 0 from its ``scale`` transform and the axes' units. Axes without a
    unit give sizes without one, except a scale of 1 there: the placeholder for "not known"."""
    axes = [a if isinstance(a, dict) else {"name": a} for a in image.get("axes", [])]
    scale = next(
        (
            t.get("scale")
            for t in image["datasets"][0].get("coordinateTransformations", [])
            if t.get("type") == "scale"
        ),
        None,
    )
    if not scale or len(scale) != len(axes):
        return {}
    sizes = {a["name"]: s for a, s in zip(axes, scale) if a.get("unit") or s != 1}
    unit = next((a["unit"] for a in axes if a.get("type") == "space" and a.get("unit")), None)
    return source_attrs(sizes, unit, default=None)


def _array_axes(arr: zarr.Array) -> list[str] | None:
    names = getattr(arr.metadata, "dimension_names", None)
    if names and all(isinstance(n, str) for n in names):
        return list(names)
    dims = arr.attrs.get("_ARRAY_DIMENSIONS")
    return [str(d) for d in dims] if isinstance(dims, list) and dims else None


def zarr_meta(path: Path, internal: str, axes=None) -> tuple[SourceMeta, zarr.Array]:
    """What the Zarr array (or OME-Zarr image's level 0) at ``internal`` of ``path`` holds, as its
    metadata say, and the zarr array; no chunk is read."""
    # absolute: the array is pickled to cluster workers, which may run in other directories
    store = reading.zarr_readable(path)
    try:
        node = zarr.open(store=store, mode="r", path=internal or None)
    except Exception as exc:  # zarr raises several kinds for a missing or broken store
        where = f"{path}/{internal}" if internal else str(path)
        failure = reading.storage_failure(path, exc, where)
        if failure is not None:
            raise failure from None
        raise SourceError(f"cannot open {where} as Zarr: {exc}") from None
    meta_axes = None
    extra: dict = {}
    labels: list[str] = []
    if isinstance(node, zarr.Group):
        multiscales = _multiscales(node.attrs)
        if multiscales:
            image = multiscales[0]
            level0 = image["datasets"][0]["path"]
            meta_axes = [
                a["name"] if isinstance(a, dict) else a for a in image.get("axes", [])
            ] or None
            extra = _ome_pixel_size(image)
            labels = _omero_labels(node.attrs)
            arr = node[level0]
            internal = f"{internal}/{level0}".strip("/")
        else:
            arrays = sorted(name for name, _ in node.arrays())
            if len(arrays) != 1:
                listing = ", ".join(arrays[:10]) or "none"
                raise SourceError(
                    f"{path} is a Zarr group with {len(arrays)} arrays ({listing}); name one as "
                    f"{path}/<array>"
                )
            arr = node[arrays[0]]
            internal = f"{internal}/{arrays[0]}".strip("/")
    else:
        arr = node
    if not isinstance(arr, zarr.Array):
        raise SourceError(f"{path}/{internal} is a Zarr group, not an array: name an array in it")
    if meta_axes is None:
        meta_axes = _array_axes(arr)
    shards = getattr(arr, "shards", None)
    dims = resolve_axes(axes, meta_axes, arr.shape)
    if "c" in dims and len(labels) == arr.shape[dims.index("c")]:
        extra["channel_names"] = labels
    meta = SourceMeta(
        path=path,
        shape=tuple(arr.shape),
        dtype=exportable_dtype(arr.dtype, path),
        axes=dims,
        native=shards or arr.chunks,
        file_chunks=arr.chunks,
        shards=shards,
        # its files (at a URL: the metadata's entity tags) say whether it changed (--resume)
        identity_paths=(str(reading.zarr_node(path, internal)),),
        attrs={"internal_path": internal, **extra},
    )
    return meta, arr


def open_zarr(path: Path, internal: str, axes=None) -> xr.DataArray:
    from dask.base import tokenize

    from ..chunkio import reader_for

    meta, arr = zarr_meta(path, internal, axes)
    internal = meta.attrs["internal_path"]
    node_path = reading.zarr_node(path, internal)
    stamps = [stamp(node_path / m) for m in MARKERS]
    name = "zarr-" + tokenize(
        reading.resolved_text(path),
        internal,
        arr.shape,
        str(arr.dtype),
        stamps,
    )
    reader = reader_for(arr)
    return from_meta(
        meta,
        reader_array(reader, dask_chunks(arr.shape, arr.dtype, meta.native), name=name),
        reader,
    )


@register
class ZarrReader(SourceReader):
    """Zarr v2/v3 stores and OME-Zarr images: by suffix, or a directory holding Zarr metadata;
    at a URL through ``zarr.storage.ObjectStore`` (a URL no suffix names is read as Zarr)."""

    name = "zarr"
    description = "Zarr, OME-Zarr"
    suffixes = SUFFIXES
    supports_urls = True

    def can_open(self, path) -> bool:
        return super().can_open(path) or is_zarr_dir(Path(path))

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        return open_zarr(path, internal, axes=axes)

    def describe(self, path, internal, axes=None, scene=None) -> SourceMeta:
        return zarr_meta(path, internal, axes=axes)[0]
