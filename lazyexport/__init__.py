"""lazyexport: export image volumes far larger than memory, lazily, chunk by chunk.

The public API::

    src = open_source("raw.h5/data")                     # labeled, dask-backed, nothing read
    print(describe(src))                                 # shape, dtype, axes, chunks, bytes
    settings = ExportSettings(roi={"z": (0, 100)}, renormalize=((0, 1), (0, 255)),
                              dtype="uint8", axis_order="czyx", format="zarr")
    print(plan(src, settings))                           # blocks, memory, reads: nothing written
    result = export(src, settings)                       # what was written
    out = open_exported(result)                          # read it back, labeled
    planes = preview(src, settings, at={"z": 10})        # raw / live / disk planes of z=10
    batch = Batch.load("project.toml")                   # many datasets by nickname
    report = batch.export_all()                          # results and failures by nickname

The names are imported on first use (numpy, dask, xarray, zarr, h5py take a second or more),
so that the command line can install its signal handlers before any of that: see
:mod:`lazyexport.entry`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module defining it
_API = {
    "Batch": "batch",
    "describe": "describe",
    "ExportError": "errors",
    "preview": "preview",
    "export": "run",
    "ExportSettings": "settings",
    "open_exported": "sources",
    "open_source": "sources",
    "plan": "plan",
}
__all__ = sorted(_API)


class _Package(types.ModuleType):
    """The package imports its public names on first use. Two of them (``describe``, ``preview``)
    share their module's name: the import system sets the package's attribute to the module
    once it is imported, and here the function is kept instead, as an eager import would."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        if name in _API:
            value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        else:  # a submodule, as after an eager import of everything (lazyexport.plan, ...)
            try:
                value = importlib.import_module(f"{__name__}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{__name__}.{name}":
                    raise
                raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
        setattr(self, name, value)
        return self.__dict__[name]

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            name in _API
            and isinstance(value, types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
        ):
            value = getattr(value, name)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_API))


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:
    from .batch import Batch as Batch
    from .describe import describe as describe
    from .errors import ExportError as ExportError
    from .plan import plan as plan
    from .preview import preview as preview
    from .run import export as export
    from .settings import ExportSettings as ExportSettings
    from .sources import open_exported as open_exported
    from .sources import open_source as open_source
