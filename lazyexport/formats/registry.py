"""The registry of output formats: each writer module registers its Writer by name."""

from __future__ import annotations

from ..errors import FormatError
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
