"""The output formats as ``lazyexport formats`` lists them, without importing a writer.

The list shows the formats' declarations (:mod:`lazyexport.declarations`), the same objects the
writers take theirs from, so it needs none of numpy, zarr, h5py, tifffile or dask. Once the
writers are imported (by a plugin that registers its own format, say), :func:`rows` lists every
registered writer's declaration instead, the built-in ones among them. The columns of
:func:`table` start at the same offset on every row.
"""

from __future__ import annotations

import sys

from .declarations import FORMATS, Format


def rows() -> tuple[Format, ...]:
    """The registered formats' declarations, by name: the registry's once it is imported, else
    the built-in ones (:data:`~lazyexport.declarations.FORMATS`)."""
    registry = sys.modules.get("lazyexport.formats")
    if registry is None:
        return tuple(FORMATS.values())
    return tuple(registry.get_writer(name).declaration for name in registry.formats())


def table(listed: tuple[Format, ...]) -> list[str]:
    """One line per format: name, kind, extensions, compressions (default), then the
    description and the options it reads, each column as wide as its widest cell."""
    cells = []
    for f in listed:
        caps = f.capabilities
        options = ", ".join(sorted(caps.options))
        cells.append(
            (
                f.name,
                "sequence" if caps.sequence else "single",
                "/".join(f.extensions),
                f"compression: {', '.join(caps.compressions)} (default {caps.compressions[0]})",
                f.description + (f"; options: {options}" if options else ""),
            )
        )
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(c, widths)) + "  " + c[4] for c in cells]
