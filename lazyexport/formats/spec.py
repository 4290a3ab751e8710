"""OutputSpec: what a writer is told about the output it writes.

The planner describes each output once (:func:`lazyexport.plan.output_spec`, ``plan.spec``) in
this frozen value, and hands it to every :class:`~lazyexport.formats.base.Writer` method; no
writer sees the plan, the source or the settings as a whole, so nothing in
:mod:`lazyexport.formats` depends on the planner.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import numpy as np

from ..remote import as_path

Shape = tuple[int, ...]

ZarrFormat = Literal[2, 3]  # the Zarr versions lazyexport writes


@dataclasses.dataclass(frozen=True, kw_only=True)
class OutputSpec:
    """One export's output, as the planner decided it. Containers are immutable (tuples, a
    read-only mapping); lengths and chunks are in output axes."""

    format: str  # the writer's name
    output: Path  # the file, store or (sequences) first slice file
    internal: str  # the path inside a container file or store, as given ("" for none)
    paths: tuple[Path, ...]  # every final file or directory the export writes
    shape: Shape
    dtype: np.dtype
    axes: tuple[str, ...]
    chunks: Shape  # the output's chunk shape; () while the planner checks the output
    shards: Shape | None  # Zarr v3 shard shape (whole chunks), if sharded
    nbytes: int  # the uncompressed result
    compression: str  # the settings' codec, else the format's default
    compression_level: int | None  # None: the codec's default
    pixel_size: Mapping[str, float]  # physical size of a pixel per spatial axis, where known
    unit: str | None  # the unit of pixel_size (None: sizes without a unit)
    # known without reading data, in the output dtype
    value_range: tuple[int, int] | tuple[float, float] | None
    nickname: str
    slice_axis: str | None  # sequences: the axis the files run along
    slice_start: int  # sequences: source index of the first slice
    # sequences: the path of every slice file with "\0" where the slice index goes (any other
    # slice files of the template are the output's too: replaced with it); "" where unknown
    slice_template: str = dataclasses.field(default="", compare=False)
    staged: bool  # sequences: slices are assembled in a staging file
    memory_limit: int  # bytes, for the whole export
    workers: int  # blocks written at a time
    # (chunks, shape, itemsize) -> a block of whole chunks within the export's memory budget per
    # block in flight: the planner's own block sizing, for a writer's second pass (pyramid levels)
    block_shape: Callable[[Shape, Shape, int], Shape] = dataclasses.field(compare=False, repr=False)
    # the plan's block lengths per axis (as dask's chunks); () while the planner chooses them
    blocks: tuple[Shape, ...] = dataclasses.field(default=(), compare=False, repr=False)
    # the blocks were chosen at the writer's block_steps, priced with its block_work
    stepped: bool = dataclasses.field(default=False, compare=False)
    # settings that only some formats read
    zarr_format: ZarrFormat  # zarr, ome-zarr
    result_type: str | None  # ome-zarr: a result type naming labels makes "mode" the default
    # a label image (a segment or threshold step): the names of labels 1, 2, ... (ome-zarr:
    # mode pyramids and image-label metadata); None: not one
    labels: tuple[str, ...] | None = None
    # the source's names of the output's channels (along "c"), where known
    channel_names: tuple[str, ...] | None = None
    # where the output's first pixel centre lies in the source, in output pixels, per output axis
    # where it is not 0: the cutout's start, over the bin factor and at the window's centre where
    # binned (ome-zarr: its translation)
    origin: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # per output axis where it is not 1: how many source pixels an output pixel spans (the
    # steps' scale: binning); ome-zarr: the scale of axes whose pixel size is unknown (the unit
    # then is the source pixel)
    scale: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # the options this format declares (Writer.options), each as given, else its default
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        set_("output", as_path(self.output))
        set_("paths", tuple(as_path(p) for p in self.paths))
        set_("shape", tuple(int(n) for n in self.shape))
        set_("dtype", np.dtype(self.dtype))
        set_("axes", tuple(str(a) for a in self.axes))
        set_("chunks", tuple(int(n) for n in self.chunks))
        set_("shards", None if self.shards is None else tuple(int(n) for n in self.shards))
        set_("pixel_size", MappingProxyType(dict(self.pixel_size)))
        set_("origin", MappingProxyType({a: n for a, n in self.origin.items() if n}))
        set_("scale", MappingProxyType({a: f for a, f in self.scale.items() if f != 1}))
        set_("options", MappingProxyType(dict(self.options)))
        set_("value_range", None if self.value_range is None else tuple(self.value_range))
        if self.labels is not None:
            set_("labels", tuple(str(n) for n in self.labels))
        if self.channel_names is not None:
            set_("channel_names", tuple(str(n) for n in self.channel_names))

    @property
    def tiff_flavor(self) -> str | None:
        """tiff: ``"plain"``, ``"imagej"`` or ``"ome"`` (None: by the output's name); declared by
        the tiff writer, its value in :attr:`options`."""
        value: str | None = self.options.get("tiff_flavor")
        return value

    @property
    def levels(self) -> int | None:
        """ome-zarr: pyramid levels (None: until y/x fit 512); in :attr:`options`."""
        value: int | None = self.options.get("levels")
        return value

    @property
    def downsample(self) -> str | None:
        """ome-zarr: ``"mean"``, ``"mode"``, ``"nearest"`` (None: by result type); in
        :attr:`options`."""
        value: str | None = self.options.get("downsample")
        return value

    @property
    def dataset(self) -> str:
        """The path inside the container without surrounding slashes ("" where the output file
        or store is the array itself; a format may name a default: ``Writer.dataset``)."""
        return self.internal.strip("/")

    @property
    def sizes(self) -> Mapping[str, int]:
        """The length of each output axis."""
        return MappingProxyType(dict(zip(self.axes, self.shape)))
