"""Microscopy files read through bioio's reader plugins: CZI, ND2, LIF, DV, SLDY and whatever
other plugins are installed, and OME-TIFF when a scene is chosen (the optional extra
``lazyexport[microscopy]``).

bioio presents every image in its standard dims, time, channel, z, y, x (``TCZYX``), plus ``S``
for the samples of an RGB image. They become the axes ``tczyx``, each one kept even where it
has length 1, so every file read this way has the same axes (``--roi z=...`` and ``--axis-order
zyx`` work on a 2-D image too). An RGB image's samples become ``c`` when it has one channel,
else an axis ``s``. A mosaic is read stitched, as bioio presents it.

A file with several scenes (positions, series) is read one scene at a time: the first unless
``scene`` names another, by name or by index. The channel names (``attrs["channel_names"]``)
and the physical pixel sizes are the scene's; bioio gives the sizes in micrometers (an
OME-TIFF's in its own unit, read from its OME-XML).

Reads go through :class:`BioioArray`: each process opens the file with the reader plugin
chosen when the source was opened and reads the bioio chunks (one y/x plane each, where the
plugin lets it choose) that a block overlaps.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import SourceError
from ..units import source_attrs
from .base import FileArray, from_file_array, labeled, resolve_axes
from .registry import SourceReader, register

if TYPE_CHECKING:
    import xarray as xr

# suffixes that go to bioio (lazyexport reads none of them itself), from bioio's list of
# plugins; any other suffix a plugin claims is tried when lazyexport does not know it
SUFFIXES = (".czi", ".nd2", ".lif", ".dv", ".r3d", ".sldy")

# suffix -> the reader plugin that reads it, for the message when it is not installed
PLUGINS = {
    ".czi": "bioio-czi",
    ".nd2": "bioio-nd2",
    ".lif": "bioio-lif",
    ".dv": "bioio-dv",
    ".r3d": "bioio-dv",
    ".sldy": "bioio-sldy",
    ".ome.tif": "bioio-ome-tiff",
    ".ome.tiff": "bioio-ome-tiff",
    ".tif": "bioio-tifffile",
    ".tiff": "bioio-tifffile",
    ".zarr": "bioio-ome-zarr",
    ".qptiff": "bioio-qptiff",
    ".vsi": "bioio-vsi",
    ".imzml": "bioio-imzml",
}
INSTALL = "pip install 'lazyexport[microscopy]'"
# bioio chunks: one y/x plane (the plugins add the samples axis themselves)
PLANE = ["Y", "X"]
# an OME channel ID (``Channel:0:1``, bioio's ``Channel:Image:0:1``), which bioio gives where a
# channel has no name: not a name
CHANNEL_ID = re.compile(r"Channel:(.*:)?\d+")


def suffix_of(path: str | os.PathLike) -> str:
    """The suffix that names a file's format: ``.ome.tif`` for an OME-TIFF, else the last."""
    name = Path(path).name.lower()
    for double in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.endswith(double):
            return double
    return Path(name).suffix


def _import_bioio(path: str | os.PathLike) -> Any:
    try:
        import bioio
    except ImportError:
        raise SourceError(
            f"reading {suffix_of(path) or 'such'} files needs bioio: {INSTALL}"
        ) from None
    return bioio


@contextmanager
def _quiet(found: list[str]) -> Iterator[None]:
    """Keep bioio's log lines (a plugin that tried the file and failed) off stderr, in
    ``found``: the message says what went wrong in one line."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            found.append(record.getMessage())

    loggers = [logging.getLogger(name) for name in ("bioio", "bioio_base")]
    keep = Keep(logging.WARNING)
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(keep)
        lg.propagate = False
    try:
        yield
    finally:
        for lg, propagate in saved:
            lg.removeHandler(keep)
            lg.propagate = propagate


def _installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def claims(path: str | os.PathLike) -> bool:
    """Whether bioio is installed and one of its installed plugins claims ``path``'s suffix (for
    a suffix lazyexport does not know)."""
    name = Path(path).name.lower()
    if "." not in name.strip("."):
        return False
    try:
        from bioio.plugins import get_plugins
    except ImportError:
        return False
    try:
        extensions = get_plugins(use_cache=True)
    except Exception:  # a broken plugin installation: as if there were none
        return False
    return any(name.endswith(ext) for ext in extensions)


def open_image(
    path: str | os.PathLike, reader: Any = None, planes: bool | None = None
) -> tuple[Any, bool]:
    """``bioio.BioImage(path)``, and whether its chunks are one y/x plane each (``planes``: ask
    for them, or not; None: where the plugin takes ``chunk_dims``). ``reader``: the plugin's
    Reader class (else bioio chooses one from the installed plugins). A file no installed plugin
    reads gives one line naming the plugin to install."""
    bioio = _import_bioio(path)
    from bioio_base.exceptions import UnsupportedFileFormatError

    found: list[str] = []
    try:
        with _quiet(found):
            if planes is not None:
                extra = {"chunk_dims": PLANE} if planes else {}
                return bioio.BioImage(str(path), reader=reader, **extra), planes
            try:
                return bioio.BioImage(str(path), reader=reader, chunk_dims=PLANE), True
            except TypeError:  # a plugin without chunk_dims
                return bioio.BioImage(str(path), reader=reader), False
    except UnsupportedFileFormatError:
        suffix = suffix_of(path)
        package = PLUGINS.get(suffix)
        if package is not None and not _installed(package):
            raise SourceError(
                f"no bioio reader for {suffix} files: pip install {package}"
            ) from None
        # the last plugin's own words, without bioio's "does not support the image" preamble
        said = found[-1].rpartition("error: ")[2].rpartition("'. ")[2] if found else ""
        reason = f" ({said.strip()})" if said.strip() else ""
        if package is not None:
            raise SourceError(
                f"{path} cannot be read by {package}, the bioio reader for {suffix} files; is it a "
                f"corrupt or truncated file?{reason}"
            ) from None
        raise SourceError(
            f"no installed bioio reader plugin reads {path}{reason}; see bioio's list of plugins"
        ) from None
    except SourceError:
        raise
    except Exception as exc:  # a plugin's own error for a file it claimed
        raise SourceError(f"cannot open {path} through bioio: {exc}") from None


def choose_scene(img: Any, path: str | os.PathLike, scene: int | str | None) -> int:
    """The index of ``scene`` (a name, an index, or an index written as text) among the file's
    scenes; the first where it is None."""
    scenes = [str(s) for s in img.scenes]
    if scene is None:
        return 0
    if isinstance(scene, str) and scene in scenes:
        return scenes.index(scene)
    text = str(scene).strip()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(scenes):
        return int(text)
    shown = ", ".join(f"{i} {s!r}" for i, s in enumerate(scenes[:10]))
    more = f", ... ({len(scenes)} in all)" if len(scenes) > 10 else ""
    raise SourceError(f"{path} has no scene {scene!r}; its scenes are {shown}{more}")


def _layout(img: Any) -> tuple[Any, tuple[str, ...], bool]:
    """The current scene's dask array, its axes, and whether ``c`` is bioio's channel axis (not
    an RGB image's samples)."""
    data = img.dask_data
    dims = tuple(str(d).lower() for d in img.dims.order)
    if "s" in dims and data.shape[dims.index("c")] == 1:  # RGB(A): the samples are the channels
        data = data[(slice(None),) * dims.index("c") + (0,)]
        return data, tuple("c" if d == "s" else d for d in dims if d != "c"), False
    return data, dims, True


class _Plain:
    """A bioio dask array read region by region in the calling thread (a block task is one
    already: no thread pool of its own)."""

    def __init__(self, data: Any):
        self.data = data

    def __getitem__(self, key) -> np.ndarray:
        import dask

        with dask.config.set(scheduler="synchronous"):
            return np.asarray(self.data[key].compute())


class BioioArray(FileArray):
    """One scene of a file a bioio reader plugin reads; ``key`` is the scene's name."""

    def __init__(self, path, shape, dtype, scene: str, index: int, reader: type, planes: bool):
        super().__init__(path, shape, dtype, key=scene)
        self.index = index
        self.reader = reader  # the plugin's Reader class (pickled by reference)
        self.planes = planes  # whether the plugin was asked for one chunk per y/x plane

    def _open(self) -> Any:
        img, _ = open_image(self.path, self.reader, self.planes)
        img.set_scene(self.index)
        data, _, _ = _layout(img)
        if tuple(data.shape) != self.shape:
            raise SourceError(
                f"{self.path} changed since it was opened: scene {self.key!r} is now "
                f"{tuple(data.shape)}, was {self.shape}"
            )
        return _Plain(data)


def _unit(img: Any, index: int) -> str | None:
    """The unit of the pixel sizes where the plugin keeps OME metadata (an OME-TIFF's sizes are
    in its own unit); None: bioio's micrometers."""
    images = getattr(img.metadata, "images", None)
    if not isinstance(images, Sequence) or index >= len(images):
        return None
    unit = getattr(getattr(images[index], "pixels", None), "physical_size_x_unit", None)
    return getattr(unit, "value", unit)


def open_bioio(
    path: Path, internal: str, axes=None, scene: int | str | None = None
) -> xr.DataArray:
    """Open ``scene`` of a file through bioio (see the module's description)."""
    if internal:
        raise SourceError(f"{path} is a microscopy file; it has no internal path {internal!r}")
    img, planes = open_image(path)
    index = choose_scene(img, path, scene)
    try:
        img.set_scene(index)
        data, dims, channels = _layout(img)
        sizes = img.physical_pixel_sizes
        names = [str(n) for n in img.channel_names] if channels else []
        if all(CHANNEL_ID.fullmatch(n) for n in names):
            names = []
        unit = _unit(img, index)
    except SourceError:
        raise
    except Exception as exc:
        raise SourceError(f"cannot read {path} through bioio: {exc}") from None
    native = tuple(max(c) if c else 1 for c in data.chunks)
    scenes = tuple(str(s) for s in img.scenes)
    arr = BioioArray(path, data.shape, data.dtype, scenes[index], index, type(img.reader), planes)
    extra = source_attrs({"z": sizes.Z, "y": sizes.Y, "x": sizes.X}, unit)
    if "c" in dims and len(names) == data.shape[dims.index("c")]:
        extra["channel_names"] = names
    out: xr.DataArray = labeled(
        from_file_array(arr, native),
        resolve_axes(axes, dims, data.shape),
        path,
        reader=arr,
        native=native,
        identity_paths=[str(arr.data_path())],
        scene=scenes[index],
        scenes=list(scenes),
        **extra,
    )
    return out


@register
class BioioReader(SourceReader):
    """Microscopy files through bioio's installed plugins (see the module's description): the
    suffixes lazyexport sends to bioio, and any other an installed plugin claims (asked last);
    local files only."""

    name = "bioio"
    description = "microscopy files through bioio"
    suffixes = SUFFIXES
    supports_scenes = True
    guess_order = 10

    def can_open(self, path) -> bool:
        return super().can_open(path) or claims(path)

    def open(self, path, internal, axes=None, scene=None) -> xr.DataArray:
        return open_bioio(path, internal, axes=axes, scene=scene)
