"""Shared test helpers, imported as ``from helpers import ...`` (pytest puts tests/ on the import
path through the rootdir's conftest.py; mypy finds the package there too).

The names below are the helpers every kind of test uses: source files written from known numpy
data (:mod:`helpers.sources`), the command line in a subprocess (:mod:`helpers.cli`), what an
export leaves on disk (:mod:`helpers.outputs`) and a cancelled huge export
(:mod:`helpers.exports`). The other modules are imported by name: object storage on loopback
(``helpers.objstore``) and the requests it counted (``helpers.request_counts``), a dask cluster
of command-line processes (``helpers.dask_processes``) and what an export asks of it
(``helpers.scheduler_load``), reading Zarr nodes (``helpers.zarr_nodes``), reader samples
(``helpers.reader_samples``), a format plugin (``helpers.contract_plugin``), and scripts run by
path (``crashtest.py``, ``kill_at_commit.py``, ``slow_cli.py``). Helpers hold no fixtures: those
stay in tests/conftest.py.
"""

from helpers.cli import ROOT, cli_command, cli_env, run_cli
from helpers.exports import cancel_a_huge_export
from helpers.outputs import hidden_temps, snapshot
from helpers.sources import (
    DTYPES,
    FILE_CHUNKS,
    FILE_KINDS,
    SHAPE,
    WRITERS,
    SourceFile,
    arange,
    make_data,
    write_hdf5,
    write_imagej_tiff,
    write_npy,
    write_zarr2,
    write_zarr3,
)

__all__ = [
    "DTYPES",
    "FILE_CHUNKS",
    "FILE_KINDS",
    "ROOT",
    "SHAPE",
    "WRITERS",
    "SourceFile",
    "arange",
    "cancel_a_huge_export",
    "cli_command",
    "cli_env",
    "hidden_temps",
    "make_data",
    "run_cli",
    "snapshot",
    "write_hdf5",
    "write_imagej_tiff",
    "write_npy",
    "write_zarr2",
    "write_zarr3",
]
