"""ExportPlan: a source and settings -> the lazy result, its output chunks and blocks, and the files.

Building a plan reads metadata only (one exception: renormalizing a float source without an
input range reads the ROI once to find its min/max, and says so in ``plan.notes``). A plan can
be inspected (``print(plan)``) before :func:`lazyexport.run.execute` writes anything.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
import xarray as xr
from dask.utils import format_bytes, parse_bytes

from . import template as tpl
from .errors import FormatError, SettingsError, TemplateError
from .formats import Writer, get_writer
from .roi import resolve_roi, roi_text
from .settings import ExportSettings
from .sources import open_source
from .transforms import convert_dtype, cutout, default_input_range, renormalize, transpose
from .units import DEFAULT_UNIT, to_micrometers

DEFAULT_MEMORY_LIMIT = 2**30
# Memory one block in flight can take, as a multiple of its size in the widest dtype it passes
# through (source block, float copy for renormalize, converted copy, encoded bytes, ...).
BLOCK_MEMORY_FACTOR = 6
MAX_BLOCK_BYTES = 64 * 2**20


def parse_memory_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_MEMORY_LIMIT
    try:
        limit = int(value) if isinstance(value, (int, np.integer)) else parse_bytes(str(value))
    except (ValueError, TypeError):
        raise SettingsError(f"cannot read memory limit {value!r}; write e.g. 512MiB or 2GiB") from None
    if limit < 16 * 2**20:
        raise SettingsError(f"memory limit {format_bytes(limit)} is too small; give at least 16 MiB")
    return limit


@dataclasses.dataclass
class ExportPlan:
    source: xr.DataArray
    settings: ExportSettings
    writer: Writer
    nickname: str
    roi: dict[str, tuple[int, int]]          # absolute [start, stop) per source axis
    result: xr.DataArray                     # lazy, in output axes, chunked as `blocks`
    output: Path                             # the file, store or (sequences) first slice file
    internal: str                            # dataset path inside an HDF5 file / Zarr store
    paths: list[Path]                        # every final file or directory the export writes
    memory_limit: int
    workers: int
    chunks: tuple[int, ...] = ()             # output chunk shape
    renormalize: tuple[tuple[float, float], tuple[float, float]] | None = None
    slice_axis: str | None = None            # sequences: the axis the files run along
    slice_start: int = 0                     # sequences: source index of the first slice
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(str(d) for d in self.result.dims)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.result.shape)

    @property
    def dtype(self) -> np.dtype:
        return self.result.dtype

    @property
    def nbytes(self) -> int:
        return int(self.result.nbytes)

    @property
    def blocks(self) -> tuple[tuple[int, ...], ...]:
        return self.result.data.chunks

    @property
    def nblocks(self) -> int:
        return math.prod(len(c) for c in self.blocks)

    @property
    def value_range(self) -> tuple[float, float] | None:
        """The output's value range where it is known without reading data."""
        if self.renormalize is not None:
            lo, hi = self.renormalize[1]
            return (min(lo, hi), max(lo, hi))
        return default_input_range(self.dtype)

    @property
    def pixel_size(self) -> dict[str, float]:
        """Physical pixel size per spatial output axis, where known: the settings' sizes, else
        the source's (``attrs["pixel_size"]``, converted to :attr:`unit`). Axes without one are left out."""
        src = self.source.attrs
        found = {a: to_micrometers(v, src.get("unit", DEFAULT_UNIT)) / to_micrometers(1.0, self.unit)
                 for a, v in (src.get("pixel_size") or {}).items()}
        found.update(self.settings.pixel_size or {})
        return {a: float(found[a]) for a in self.axes if a in found}

    @property
    def unit(self) -> str:
        """The unit of :attr:`pixel_size`: the settings' unit, else the source's, else micrometer."""
        return self.settings.unit or self.source.attrs.get("unit") or DEFAULT_UNIT

    def widest_itemsize(self) -> int:
        return max(self.source.dtype.itemsize, self.result.dtype.itemsize, 8 if self.renormalize else 1)

    def default_chunks(self, chunk_bytes: int) -> tuple[int, ...]:
        """An output chunk shape of about ``chunk_bytes``, following the data's own chunking,
        whole channel axes kept together, and the user's ``chunks`` setting where given."""
        fixed = dict(self.settings.chunks or {})
        for axis, size in zip(self.axes, self.shape):
            if axis == "c" and size <= 16:
                fixed.setdefault(axis, size)
        wanted = tuple(min(fixed[a], s) if a in fixed else "auto" for a, s in zip(self.axes, self.shape))
        previous = tuple(max(c) for c in self.result.data.chunks)
        auto = da.core.normalize_chunks(wanted, self.shape, limit=chunk_bytes, dtype=self.dtype,
                                        previous_chunks=previous)
        return tuple(max(c) if c else 1 for c in auto)

    def __str__(self) -> str:
        lines = [
            f"export {self.source.attrs.get('source')} ({self.nickname}) -> {self.writer.name}",
            f"  output     {self.output}" + (f" [{self.internal}]" if self.internal else "")
            + (f" (+{len(self.paths) - 1} more files)" if len(self.paths) > 1 else ""),
            f"  roi        {roi_text(self.roi, self.source.dims)}",
            f"  result     {''.join(self.axes)} {self.shape} {self.dtype} ({format_bytes(self.nbytes)})",
            f"  chunks     {self.chunks}, {self.nblocks} blocks in flight {self.workers} at a time,"
            f" memory limit {format_bytes(self.memory_limit)}",
        ]
        lines += [f"  note       {n}" for n in self.notes]
        return "\n".join(lines)


def build_plan(
    source: Any,
    settings: ExportSettings | None = None,
    *,
    nickname: str | None = None,
    memory_limit: Any = None,
    workers: int | None = None,
) -> ExportPlan:
    """Plan the export of ``source`` (anything :func:`open_source` takes) with ``settings``."""
    settings = settings or ExportSettings()
    src = open_source(source)
    writer = get_writer(settings.format)
    limit = parse_memory_limit(memory_limit)
    workers = workers or os.cpu_count() or 1
    nickname = nickname or str(src.attrs.get("nickname", "export"))

    roi = resolve_roi(settings.roi, src.dims, src.shape)
    result = cutout(src, roi)
    notes: list[str] = []
    renorm = None
    if settings.renormalize is not None:
        in_range, out_range = settings.renormalize
        if in_range is None:
            in_range = default_input_range(result.dtype) or _data_range(result, notes)
        renorm = (in_range, out_range)
        result = renormalize(result, in_range, out_range)
    if settings.dtype is not None:
        result = convert_dtype(result, settings.dtype)
    if settings.axis_order is not None:
        result = transpose(result, settings.axis_order)
    wanted = writer.axis_order(tuple(str(d) for d in result.dims), dict(result.sizes), settings.axis_order)
    if wanted is not None and wanted != "".join(map(str, result.dims)):
        result = transpose(result, wanted)
        notes.append(f"{writer.name} stores axes in the order {wanted!r}")

    plan = ExportPlan(
        source=src, settings=settings, writer=writer, nickname=nickname, roi=roi, result=result,
        output=Path(), internal="", paths=[], memory_limit=limit, workers=workers,
        renormalize=renorm, notes=notes,
    )
    if writer.is_sequence:
        _plan_slices(plan)
    _plan_outputs(plan)
    plan.chunks = writer.chunks(plan)
    plan.result = result.chunk(dict(zip(plan.axes, _block_shape(plan))))
    return plan


def _data_range(arr: xr.DataArray, notes: list[str]) -> tuple[float, float]:
    lo, hi = dask.compute(da.nanmin(arr.data), da.nanmax(arr.data))
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SettingsError("cannot renormalize: the data inside the ROI has no finite values; give an input range")
    if lo == hi:
        raise SettingsError(
            f"cannot renormalize: the data inside the ROI is constant ({lo:g}); give an input range"
        )
    notes.append(f"renormalize input range taken from the data inside the ROI: [{lo:g}, {hi:g}]")
    return (lo, hi)


def _plan_slices(plan: ExportPlan) -> None:
    """Sequences run along the outermost non-channel axis; each slice must be 2-D (+ channel)."""
    sizes = plan.result.sizes
    spatial = [a for a in plan.axes if a != "c"]
    if len(spatial) < 2:
        raise FormatError(
            f"{plan.writer.name} needs a slicing axis and a 2-D plane, the result has axes {''.join(plan.axes)!r}"
        )
    slice_axis, plane = spatial[0], spatial[1:]
    extra = [f"{a!r} (length {sizes[a]})" for a in plane[:-2] if sizes[a] != 1]
    if extra:
        suggestion = "".join(a for a in plan.axes if a == "c" or sizes[a] != 1 or a in plane[-2:])
        raise FormatError(
            f"{plan.writer.name} writes 2-D slices along {slice_axis!r}, but {', '.join(extra)} would make "
            f"each slice more than 2-D; cut it to length 1 with the ROI or choose an axis order like {suggestion!r}"
        )
    plan.slice_axis = slice_axis
    plan.slice_start = plan.roi.get(slice_axis, (0, 0))[0]


def _plan_outputs(plan: ExportPlan) -> None:
    settings, writer, src = plan.settings, plan.writer, plan.source
    template = settings.output
    if template is None:
        template = tpl.DEFAULT_WITH_RESULT_TYPE if settings.result_type else tpl.DEFAULT
        if writer.is_sequence:
            template += "_{slice_index}"
    tpl.check(template, src.dims, writer.is_sequence)
    if not tpl.has_extension(template, writer.extensions):
        template += writer.extensions[0]
    values = tpl.values_for(
        dataset_dir=str(src.attrs.get("dataset_dir", os.getcwd())),
        nickname=plan.nickname,
        result_type=settings.result_type,
        roi=plan.roi,
        roi_text=roi_text(plan.roi, [a for a in plan.axes if a in plan.roi]),
    )
    if writer.is_sequence:
        count = plan.result.sizes[plan.slice_axis]
        width = len(str(plan.slice_start + count - 1))
        paths = []
        for i in range(plan.slice_start, plan.slice_start + count):
            paths.append(Path(tpl.render(template, {**values, "slice_index": tpl.SliceIndex(i, width)})))
        if len(set(paths)) != len(paths):
            raise TemplateError(f"output template {template!r} gives several slices the same file name")
        plan.paths, plan.output = paths, paths[0]
    else:
        rendered = tpl.render(template, values)
        file, internal = tpl.split_container(rendered, writer.extensions)
        plan.output, plan.internal, plan.paths = Path(file), internal, [Path(file)]
    _refuse_source_as_output(plan)


def _refuse_source_as_output(plan: ExportPlan) -> None:
    source = plan.source.attrs.get("source")
    if not source or source.startswith("<"):
        return
    src_file = Path(source).resolve()
    src_internal = str(plan.source.attrs.get("internal_path", "")).strip("/")
    for path in plan.paths:
        if path.resolve() == src_file and (not plan.internal or plan.internal.strip("/") == src_internal):
            raise TemplateError(f"the output {path} is the source itself; choose another output template")


def _block_shape(plan: ExportPlan) -> tuple[int, ...]:
    """Blocks are whole multiples of the output chunks, as large as the memory budget allows."""
    budget = plan.memory_limit // (BLOCK_MEMORY_FACTOR * max(plan.workers, 1))
    return block_shape(plan.chunks, plan.shape, plan.widest_itemsize(), budget)


def block_shape(chunks: tuple[int, ...], shape: tuple[int, ...], itemsize: int, budget: int) -> tuple[int, ...]:
    """A block of whole ``chunks`` of at most ``budget`` bytes (at least one chunk), grown along
    the innermost axes first, up to the full axis."""
    budget = max(min(budget, MAX_BLOCK_BYTES), 1)
    chunk_bytes = math.prod(chunks) * itemsize
    multiples = max(budget // max(chunk_bytes, 1), 1)
    block = list(chunks)
    for i in reversed(range(len(block))):
        c, size = chunks[i], shape[i]
        if multiples <= 1:
            break
        n_chunks = math.ceil(size / c)
        k = min(n_chunks, multiples)
        block[i] = min(c * k, size)
        multiples //= k
    return tuple(block)
