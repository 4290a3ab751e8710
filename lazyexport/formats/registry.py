"""The registry of output formats: each writer module registers its Writer by name."""

from __future__ import annotations

from ..errors import FormatError
from ..template import named_extension, placeholders
from .base import Writer

_WRITERS: dict[str, type[Writer]] = {}


def register(cls: type[Writer]) -> type[Writer]:
    _WRITERS[cls.name] = cls
    return cls


def get_writer(name: str) -> Writer:
    key = str(name).lower().replace("_", "-")
    if key not in _WRITERS:
        raise FormatError(f"unknown format {name!r}; choose one of {', '.join(formats())}")
    return _WRITERS[key]()


def formats() -> list[str]:
    return sorted(_WRITERS)


def format_for(template: str) -> str | None:
    """The format an output template's extension names (``out.zarr``: zarr,
    ``s_{slice_index}.tif``: tiff-sequence), or None: the longest extension wins, then the format
    whose own first extension it is; sequence formats only for templates with
    ``{slice_index}``."""
    sequence = "slice_index" in placeholders(template)
    best: tuple[tuple[int, bool], str] | None = None
    for name, cls in _WRITERS.items():
        writer = cls()
        ext = named_extension(template, writer.extensions)
        if ext is None or writer.capabilities.sequence != sequence:
            continue
        key = (len(ext), ext == writer.extensions[0])
        if best is None or key > best[0]:
            best = (key, name)
    return best[1] if best else None
