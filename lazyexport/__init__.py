"""lazyexport: export image volumes far larger than memory, lazily, chunk by chunk.

The public API::

    src = open_source("raw.h5/data")                     # labeled, dask-backed, nothing read
    print(describe(src))                                 # shape, dtype, axes, chunks, bytes
    settings = ExportSettings(roi={"z": (0, 100)}, renormalize=((0, 1), (0, 255)),
                              dtype="uint8", axis_order="czyx", format="zarr")
    result = export(src, settings)                       # what was written
    out = open_exported(result)                          # read it back, labeled
    planes = preview(src, settings, at={"z": 10})        # raw / live / disk planes of z=10
    batch = Batch.load("project.toml")                   # many datasets by nickname
    report = batch.export_all()                          # results and failures by nickname
"""

from .batch import Batch
from .describe import describe
from .errors import ExportError
from .preview import preview
from .run import export
from .settings import ExportSettings
from .sources import open_exported, open_source

__all__ = ["Batch", "ExportError", "ExportSettings", "describe", "export", "open_exported", "open_source",
           "preview"]
__version__ = "0.1.0"
