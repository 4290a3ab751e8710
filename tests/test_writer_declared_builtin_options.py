"""Built-in options moved into their writers' declarations (issue 27: "Writer options declared
by each writer"): ``tiff_flavor`` is declared and checked by the tiff writer, ``levels`` and
``downsample`` by the ome-zarr writer; their values live in ``settings.options`` and
``spec.options``, and every former way of giving or reading them (keyword, attribute,
``replace``, ``to_dict``, project files, the command line) still works.
"""

from __future__ import annotations

import pytest

import lazyexport as le
from lazyexport.cli_options import option_dest
from lazyexport.cli_settings import settings_from_args
from lazyexport.errors import SettingsError
from lazyexport.formats import get_writer
from lazyexport.formats.options import BUILTIN
from lazyexport.formats.tiff import TiffWriter
from lazyexport.settings import MIRRORED


def test_the_tiff_writer_declares_its_flavor():
    writer = get_writer("tiff")
    assert [o.name for o in writer.options] == ["tiff_flavor"]
    assert "tiff_flavor" not in {o.name for o in BUILTIN}
    assert MIRRORED == ("tiff_flavor", "levels", "downsample")
    assert writer.options[0].validate("ImageJ") == "imagej"


def test_the_keyword_goes_into_options_and_the_field_mirrors_it():
    by_keyword = le.ExportSettings(format="tiff", tiff_flavor="OME")
    by_option = le.ExportSettings(format="tiff", options={"tiff_flavor": "ome"})
    for s in (by_keyword, by_option):
        assert s.tiff_flavor == "ome" and s.options == {"tiff_flavor": "ome"}
    assert by_keyword == by_option
    assert by_keyword.to_dict() == {"format": "tiff", "tiff_flavor": "ome"}  # as before
    assert le.ExportSettings.from_dict(by_keyword.to_dict()) == by_keyword


def test_replace_gives_the_new_value_whichever_way_it_comes():
    s = le.ExportSettings(format="tiff", tiff_flavor="ome")
    assert s.replace(tiff_flavor="imagej").options == {"tiff_flavor": "imagej"}
    assert s.replace(options={"tiff_flavor": "plain"}).tiff_flavor == "plain"
    assert s.replace(output="x.tif").tiff_flavor == "ome"
    assert s.replace(tiff_flavor=None).tiff_flavor is None


def test_two_values_are_refused_and_others_as_before():
    with pytest.raises(SettingsError, match=r"^tiff_flavor is given twice, 'ome' and 'plain'"):
        le.ExportSettings(format="tiff", tiff_flavor="ome", options={"tiff_flavor": "plain"})
    with pytest.raises(SettingsError, match="^unknown TIFF flavor 'bigtiff'"):
        le.ExportSettings(format="tiff", tiff_flavor="bigtiff")
    with pytest.raises(SettingsError, match="does not apply to format zarr, only to tiff"):
        le.ExportSettings(format="zarr", options={"tiff_flavor": "ome"})
    former = le.ExportSettings(format="zarr", tiff_flavor="plain")  # the former default
    assert former.options is None and former.tiff_flavor == "plain"


def test_the_plan_hands_the_writer_its_option(tmp_path):
    import numpy as np

    plan = le.plan(
        np.zeros((2, 8, 8), "uint8"),
        le.ExportSettings(format="tiff", tiff_flavor="imagej", output=str(tmp_path / "a.tif")),
    )
    assert plan.spec.options["tiff_flavor"] == "imagej" == plan.spec.tiff_flavor
    assert TiffWriter.flavor(plan.spec) == "imagej"


def test_the_command_line_flag_fills_the_option():
    from lazyexport.cli import make_parser

    args = make_parser().parse_args(
        ["export", "v.npy", "--format", "tiff", "--tiff-flavor", "ome", "--output", "o.tif"]
    )
    assert getattr(args, option_dest(get_writer("tiff").options[0])) == "ome"
    settings = settings_from_args(args)
    assert settings.tiff_flavor == "ome" and settings.options == {"tiff_flavor": "ome"}


def test_a_project_file_keeps_its_key(tmp_path):
    from lazyexport.batch import Dataset

    dataset = Dataset(str(tmp_path / "v.npy"), "v")
    batch = le.Batch(le.ExportSettings(format="tiff", tiff_flavor="imagej"), [dataset])
    saved = batch.save(tmp_path / "p.toml").read_text()
    assert 'tiff_flavor = "imagej"' in saved and "options" not in saved
    loaded = le.Batch.load(tmp_path / "p.toml").settings_for("v")
    assert loaded.tiff_flavor == "imagej" and loaded.options == {"tiff_flavor": "imagej"}


def test_the_ome_zarr_writer_declares_its_pyramid_options(tmp_path):
    import numpy as np

    writer = get_writer("ome-zarr")
    assert [o.name for o in writer.options] == [
        "levels",
        "downsample",
        "downsample_axes",
        "level_chunks",
    ]
    settings = le.ExportSettings(format="ome-zarr", levels=2, downsample="Mode")
    assert settings.options == {"levels": 2, "downsample": "mode"}
    assert (settings.levels, settings.downsample) == (2, "mode")
    assert settings.to_dict() == {"format": "ome-zarr", "levels": 2, "downsample": "mode"}
    assert settings.replace(levels=3).options == {"levels": 3, "downsample": "mode"}
    plan = le.plan(
        np.zeros((4, 64, 64), "uint8"), settings.replace(output=str(tmp_path / "a.ome.zarr"))
    )
    assert (plan.spec.levels, plan.spec.downsample) == (2, "mode")
    assert len(writer.levels(plan.spec)) == 2  # type: ignore[attr-defined]
    with pytest.raises(SettingsError, match="^levels must be a whole number from 1 to 32"):
        le.ExportSettings(format="ome-zarr", levels=0)
    with pytest.raises(SettingsError, match="does not apply to format hdf5, only to ome-zarr"):
        le.ExportSettings(levels=2)


def test_the_levels_flag_and_ilastik_formats_still_give_levels():
    from lazyexport.cli import make_parser

    args = make_parser().parse_args(
        ["export", "v.npy", "--format", "ome-zarr", "--levels", "3", "--downsample", "nearest"]
    )
    settings = settings_from_args(args)
    assert settings.options == {"levels": 3, "downsample": "nearest"}
