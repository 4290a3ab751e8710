"""A nickname given from Python is checked as on the command line and in project files where
it goes into file names through ``{nickname}``: ``/``, ``\\`` or ``..`` would put the output
elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import lazyexport
from lazyexport.errors import SettingsError


@pytest.mark.parametrize("nickname", ["../x", "a/b", "a\\b", ".."])
def test_a_nickname_that_leaves_the_directory_is_refused_and_nothing_is_written(
    tmp_path: Path, nickname: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    settings = lazyexport.ExportSettings(format="hdf5", output=str(out / "{nickname}.h5"))
    with pytest.raises(SettingsError, match="must not contain"):
        lazyexport.export(np.zeros((4, 4), "uint8"), settings, nickname=nickname)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out"]


def test_a_plain_nickname_names_the_output(tmp_path: Path) -> None:
    settings = lazyexport.ExportSettings(format="hdf5", output=str(tmp_path / "{nickname}.h5"))
    lazyexport.export(np.zeros((4, 4), "uint8"), settings, nickname="cells")
    assert (tmp_path / "cells.h5").is_file()


def test_a_nickname_with_a_slash_is_fine_where_no_file_name_uses_it(tmp_path: Path) -> None:
    """napari saves each layer under its own node and passes the layer's name ("cells/nuclei")
    as the nickname, which only the metadata shows."""
    settings = lazyexport.ExportSettings(format="hdf5", output=str(tmp_path / "out.h5/cells"))
    result = lazyexport.export(np.zeros((4, 4), "uint8"), settings, nickname="cells/nuclei")
    assert [str(p) for p in result.paths] == [str(tmp_path / "out.h5")]
    assert lazyexport.open_source(str(tmp_path / "out.h5/cells")).shape == (4, 4)
