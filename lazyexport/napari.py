"""napari writers: save image and labels layers through lazyexport (OME-Zarr, HDF5, TIFF).

The commands are contributed to napari through npe2 by ``napari.yaml`` beside this module (the
``napari.manifest`` entry point); napari calls them with a layer's data (a numpy or dask array,
written block by block) and its metadata. What a layer carries over: its ``scale`` on the
spatial axes as the pixel size (with the unit of its ``units`` where that is a length), its
``name`` as the dataset name (HDF5), the image name (OME-Zarr) or the label name, and its
``axis_labels`` as the axes where they name axes (``z``, ``y``, ``x``, ``c``, ``t``, "time",
"channel"); napari's default labels give ``yx``, ``zyx``, ``tzyx`` or ``tczyx`` by rank, and an
RGB(A) image adds ``c`` last. Of a multiscale layer, the full-resolution level is written.
Nothing here imports napari. The user's guide: docs/napari.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from .errors import AxisError, FormatError
from .plan import plan
from .run import export
from .settings import ExportSettings
from .sources import open_source
from .storage.capabilities import replaced_whole
from .units import parse_unit, source_attrs, to_micrometers

# napari's full layer data tuple: (data, metadata, layer type)
LayerData = tuple[Any, Mapping[str, Any], str]

# axis labels that name an axis in words (lower case) -> lazyexport's letter
_AXIS_WORDS = {"time": "t", "channel": "c", "channels": "c", "ch": "c"}
# the axes of a layer without axis labels, by rank: napari shows the last two as y and x
_BY_RANK = {1: "x", 2: "yx", 3: "zyx", 4: "tzyx", 5: "tczyx"}
# a node named like this would be taken for the file or store itself in the output path
_CONTAINERS = (".h5", ".hdf5", ".hdf", ".zarr")
_NO_UNIT = {"", "none", "pixel", "pixels", "px"}  # napari's default unit is "pixel"


def write_ome_zarr(path: str, layer_data: list[LayerData]) -> list[str]:
    """Save one image layer, its labels layers, or one labels layer as an OME-Zarr store.

    The image is the store's multiscale image, each labels layer an OME-NGFF label image
    ``labels/<name>`` of it with as many pyramid levels (labels downsample to the most frequent
    label). A labels layer alone is the store's image itself. An existing store is replaced.

    Parameters
    ----------
    path : str
        The store to write (``.ome.zarr`` or ``.zarr``).
    layer_data : list of (array, dict, str)
        The layers as napari gives them: (data, metadata, layer type) tuples, of type
        ``"image"`` (at most one) or ``"labels"``.

    Returns
    -------
    list of str
        The store written.

    Raises
    ------
    ExportError
        For layers that cannot be saved (two images, several labels layers without an image,
        labels of a non-integer type, axes OME-Zarr cannot hold, ...).
    """
    _check_extension(path, "OME-Zarr", (".ome.zarr", ".zarr"))
    layers = [_Layer(*item) for item in layer_data]
    images = [layer for layer in layers if layer.kind == "image"]
    labels = [layer for layer in layers if layer.kind == "labels"]
    if replaced_whole(path) and len(layers) > 1:  # labels and metadata are added afterwards
        raise FormatError("an image with its labels is saved to a local OME-Zarr store, not a URL")
    if len(images) > 1:
        raise FormatError("an OME-Zarr store holds one image layer (and its labels); save one")
    if not images and len(labels) > 1:
        raise FormatError(
            "several labels layers go into an OME-Zarr store only with the image layer they label"
        )
    root = images[0] if images else labels[0]
    others = [layer for layer in labels if layer is not root]
    names = _unique([layer.name for layer in others], "label image")
    nodes = [(root, "")] + [(layer, f"labels/{name}") for layer, name in zip(others, names)]
    exports = [(layer, _output(path, node), layer.settings("ome-zarr")) for layer, node in nodes]
    _check_all(exports)
    written = _export(*exports[0])
    if names:
        levels = len(_ome(zarr.open_group(path, mode="r"))["multiscales"][0]["datasets"])
        for layer, output, settings in exports[1:]:
            _export(layer, output, settings.replace(levels=levels))
        _label_metadata(path, names)
    return written


def write_hdf5(path: str, layer_data: list[LayerData]) -> list[str]:
    """Save image and labels layers as datasets of one HDF5 file, each named after its layer.

    A dataset of that name in an existing file is replaced; the file's other datasets stay.

    Parameters
    ----------
    path : str
        The file to write (``.h5`` or ``.hdf5``).
    layer_data : list of (array, dict, str)
        The layers as napari gives them: (data, metadata, layer type) tuples, of type
        ``"image"`` or ``"labels"``.

    Returns
    -------
    list of str
        The file written.

    Raises
    ------
    ExportError
        For layers that cannot be saved (labels of a non-integer type, two layers whose names
        give the same dataset name, ...).
    """
    _check_extension(path, "HDF5", (".h5", ".hdf5"))
    layers = [_Layer(*item) for item in layer_data]
    if replaced_whole(path) and len(layers) > 1:  # each layer is added to the file
        raise FormatError("several layers are saved to a local HDF5 file, one layer to a URL")
    names = _unique([layer.name for layer in layers], "dataset")
    exports = [
        (layer, _output(path, name), layer.settings("hdf5")) for layer, name in zip(layers, names)
    ]
    _check_all(exports)
    written: list[str] = []
    for export_ in exports:
        written += [p for p in _export(*export_) if p not in written]
    return written


def write_tiff_image(path: str, data: Any, meta: Mapping[str, Any]) -> list[str]:
    """Save an image layer as one multipage TIFF.

    ``.ome.tif`` / ``.ome.tiff`` write an OME-TIFF (pixel sizes only with a unit), other names
    lazyexport's plain TIFF (axes and pixel sizes in its description, for any data type).

    Parameters
    ----------
    path : str
        The file to write.
    data : array
        The layer's data (numpy or dask; of a multiscale layer, its levels).
    meta : dict
        The layer's metadata (``name``, ``scale``, ``units``, ``axis_labels``, ``rgb``, ...).

    Returns
    -------
    list of str
        The file written.

    Raises
    ------
    ExportError
        For a layer that cannot be saved (non-numeric data, axes an OME-TIFF cannot hold, ...).
    """
    return _write_tiff(path, _Layer(data, meta, "image"))


def write_tiff_labels(path: str, data: Any, meta: Mapping[str, Any]) -> list[str]:
    """Save a labels layer as one multipage TIFF, its labels unchanged.

    As :func:`write_tiff_image`, for integer labels.

    Parameters
    ----------
    path : str
        The file to write.
    data : array
        The layer's integer labels (numpy or dask; of a multiscale layer, its levels).
    meta : dict
        The layer's metadata (``name``, ``scale``, ``units``, ``axis_labels``, ...).

    Returns
    -------
    list of str
        The file written.

    Raises
    ------
    ExportError
        For labels that cannot be saved (a non-integer data type, ...).
    """
    return _write_tiff(path, _Layer(data, meta, "labels"))


def _write_tiff(path: str, layer: _Layer) -> list[str]:
    _check_extension(path, "TIFF", (".tif", ".tiff"))
    flavor = "ome" if path.lower().endswith((".ome.tif", ".ome.tiff")) else "plain"
    return _export(layer, _output(path), layer.settings("tiff", tiff_flavor=flavor))


def layer_source(data: Any, meta: Mapping[str, Any], kind: str = "image") -> xr.DataArray:
    """A napari layer's data as a lazyexport source, as the writers take it (for the widget).

    Its axes, pixel size and name are read as the module docstring says; nothing is computed.

    Parameters
    ----------
    data : array
        The layer's data (numpy or dask; of a multiscale layer, its levels).
    meta : dict
        The layer's metadata (``name``, ``scale``, ``units``, ``axis_labels``, ``rgb``, ...).
    kind : str, default "image"
        The layer type: ``"image"`` or ``"labels"``.

    Returns
    -------
    xarray.DataArray
        The lazy source, labeled with the layer's axes, nicknamed after the layer.

    Raises
    ------
    ExportError
        For a layer lazyexport cannot export (another layer type, axes it cannot name, ...).
    """
    layer = _Layer(data, meta, kind)
    source = layer.source()
    source.attrs["nickname"] = layer.name  # (the writers name their exports so too)
    return source


class _Layer:
    """One napari layer as lazyexport exports it: its data, axes, pixel size and name."""

    def __init__(self, data: Any, meta: Mapping[str, Any], kind: str):
        self.kind = kind
        self.name = str(meta.get("name") or kind)
        if kind not in ("image", "labels"):
            raise FormatError(
                f"layer {self.name!r} is a {kind} layer; lazyexport saves image and labels layers"
            )
        if meta.get("multiscale"):  # the levels, finest first
            data = data[0]
        if not isinstance(data, (np.ndarray, da.Array, xr.DataArray)):
            data = da.from_array(data) if hasattr(data, "dtype") else np.asarray(data)
        self.data = data
        self.dtype = np.dtype(data.dtype)
        if kind == "labels" and self.dtype.kind not in "biu":
            raise FormatError(
                f"labels layer {self.name!r} holds {self.dtype} values, not integer labels"
            )
        rgb = bool(meta.get("rgb"))
        self.axes = _axes(meta.get("axis_labels"), data.ndim - rgb, self.name) + (
            "c" if rgb else ""
        )
        self.attrs = _pixel_size(self.axes, meta.get("scale"), meta.get("units"))

    def settings(self, fmt: str, **options: Any) -> ExportSettings:
        """The export settings of this layer in format ``fmt``: labels as integers (bool as
        uint8), downsampled to their most frequent label."""
        if self.kind == "labels":
            if self.dtype.kind == "b":
                options["dtype"] = "uint8"
            if fmt == "ome-zarr":
                options["downsample"] = "mode"
        return ExportSettings(format=fmt, **options)

    def source(self) -> xr.DataArray:
        """The layer as a lazyexport source, with its pixel size (and unit: sizes without one
        stay without one, rather than become micrometers as the ``pixel_size`` setting's do)."""
        src = open_source(self.data, axes=self.axes)
        src.attrs.pop("unit", None)
        src.attrs.update(self.attrs)
        return src


def _axes(labels: Sequence[Any] | None, ndim: int, name: str) -> str:
    """The layer's axes: its axis labels where each names a distinct axis, else by rank."""
    letters = [
        _AXIS_WORDS.get(str(label).strip().lower(), str(label).strip().lower())
        for label in labels or ()
    ]
    if (
        len(letters) == ndim
        and all(len(a) == 1 and a.isascii() and a.isalpha() for a in letters)
        and len(set(letters)) == ndim
    ):
        return "".join(letters)
    if ndim not in _BY_RANK:
        raise AxisError(
            f"layer {name!r} has {ndim} dimensions and no axis labels that name its axes: "
            "set its axis_labels, e.g. ('t', 'c', 'z', 'y', 'x')"
        )
    return _BY_RANK[ndim]


def _pixel_size(axes: str, scale: Sequence[float] | None, units: Any) -> dict[str, Any]:
    """The source attributes ``pixel_size`` and ``unit`` of the layer's ``scale`` on its spatial
    axes (positive sizes only) and their ``units`` (none for napari's "pixel", or a unit that is
    not a length); spatial axes in different length units get micrometers. Ones without a unit
    are napari's defaults: no pixel size."""
    if scale is None:
        return {}
    if units is None or isinstance(units, str) or not isinstance(units, Sequence):
        units = [units] * len(scale)
    named = {a: (s, str(u or "").strip()) for a, s, u in zip(axes, scale, units) if a in "zyx"}
    found = {u for _, u in named.values() if u.lower() not in _NO_UNIT}
    if len(found) <= 1:
        unit = found.pop() if found else None
        if unit is None and all(float(s) == 1 for s, _ in named.values()):
            return {}
        return source_attrs({a: s for a, (s, _) in named.items()}, unit, default=None)
    sizes = {
        a: float(s) if u.lower() in _NO_UNIT else to_micrometers(float(s), parse_unit(u))
        for a, (s, u) in named.items()
    }
    return source_attrs(sizes, "micrometer")


def _check_extension(path: str, what: str, extensions: tuple[str, ...]) -> None:
    """Refuse a path the writer's format does not go by (npe2 picks writers by extension)."""
    if not path.rstrip("/").lower().endswith(extensions):
        raise FormatError(
            f"{path}: the napari {what} writer saves to names ending in "
            f"{' or '.join(extensions)}; choose such a name"
        )


def _unique(names: list[str], what: str) -> list[str]:
    """Layer names as node names (no ``/``, no name that reads as a file), each once."""
    out = []
    for name in names:
        node = name.replace("/", "_").replace("\\", "_").strip() or "layer"
        if node in (".", "..") or node.lower().endswith(_CONTAINERS):  # not a file in the file
            node += "_"
        if node in out:
            raise FormatError(
                f"two layers would be saved as the same {what} {node!r}; rename one of them"
            )
        out.append(node)
    return out


def _output(path: str, node: str = "") -> str:
    """The output template of ``path`` (and a node inside it), braces taken literally."""
    full = f"{path.rstrip('/')}/{node}" if node else path
    return full.replace("{", "{{").replace("}", "}}")


def _check_all(exports: list[tuple[_Layer, str, ExportSettings]]) -> None:
    """Plan every export before the first writes, so that a layer that cannot be saved is
    refused before anything is written."""
    if len(exports) > 1:
        for layer, output, settings in exports:
            plan(layer.source(), settings.replace(output=output), nickname=layer.name)


def _export(layer: _Layer, output: str, settings: ExportSettings) -> list[str]:
    result = export(
        layer.source(), settings.replace(output=output), nickname=layer.name, overwrite=True
    )
    return [str(p) for p in result.paths]


def _ome(group: zarr.Group) -> dict:
    """The OME-NGFF attributes of a group (0.5: under ``ome``, 0.4: the attributes)."""
    attrs = group.attrs.asdict()
    ome = attrs.get("ome", attrs)
    return dict(ome) if isinstance(ome, Mapping) else {}


def _label_metadata(path: str, names: list[str]) -> None:
    """Mark the label images of the store at ``path`` as such (OME-NGFF 0.5 ``labels`` group
    and ``image-label`` metadata)."""
    root = zarr.open_group(path, mode="r+")
    group = root.require_group("labels")
    group.attrs["ome"] = {"version": "0.5", "labels": names}
    for name in names:
        node = group[name]
        assert isinstance(node, zarr.Group)  # the label image lazyexport wrote
        node.attrs["ome"] = {
            **_ome(node),
            "image-label": {"version": "0.5", "source": {"image": "../../"}},
        }


__all__ = [
    "layer_source",
    "write_hdf5",
    "write_ome_zarr",
    "write_tiff_image",
    "write_tiff_labels",
]
