"""An HDF5 export into the source's own file (issue 13 item 8), from Python and the command line:
the source dataset is kept. Each test failed before its fix.
"""

from __future__ import annotations

import h5py
import numpy as np

import lazyexport as le
from helpers import run_cli


def _h5_source(path, data):
    with h5py.File(path, "w") as f:
        f.create_dataset("raw", data=data, chunks=(2, 4, 4))
        f.create_dataset("labels", data=data[:1])
    return path


def _check_same_file(path, data):
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["exp", "labels", "raw"]
        np.testing.assert_array_equal(f["raw"][...], data)  # the source is untouched
        np.testing.assert_array_equal(f["labels"][...], data[:1])
        np.testing.assert_array_equal(f["exp"][...], data)


def test_item08_hdf5_export_into_the_sources_own_file(tmp_path):
    data = np.arange(4 * 6 * 5, dtype=np.uint16).reshape(4, 6, 5)
    path = _h5_source(tmp_path / "data.h5", data)
    result = le.export(f"{path}/raw", le.ExportSettings(format="hdf5", output=f"{path}/exp"))
    assert result.output == path and result.internal == "exp"
    _check_same_file(path, data)
    # and again, replacing only the dataset it wrote
    le.export(f"{path}/raw", le.ExportSettings(format="hdf5", output=f"{path}/exp"), overwrite=True)
    _check_same_file(path, data)
    assert not [p for p in tmp_path.iterdir() if p.name != "data.h5"]


def test_item08_hdf5_export_into_the_sources_own_file_cli(tmp_path):
    data = np.arange(4 * 6 * 5, dtype=np.uint8).reshape(4, 6, 5)
    path = _h5_source(tmp_path / "data.h5", data)
    proc = run_cli("export", f"{path}/raw", "--output", f"{path}/exp", "--quiet")
    assert proc.returncode == 0, proc.stderr
    _check_same_file(path, data)
