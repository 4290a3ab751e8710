"""The output formats: importing the package imports each writer module, which registers its
Writer by name in :mod:`lazyexport.formats.registry`. A writer is told what to write in an
:class:`~lazyexport.formats.spec.OutputSpec`."""

from __future__ import annotations

from . import hdf5, n5, npy, ome_zarr, png, sequence, tiff, zarr  # noqa: F401  (each registers its writer)
from .base import Target, Writer
from .registry import format_for, formats, get_writer, register
from .spec import OutputSpec

__all__ = ["OutputSpec", "Target", "Writer", "format_for", "formats", "get_writer", "register"]
