"""The pyramid's geometry and methods (issue #29): every level of a cutout lands where its pixels
came from, as ome-zarr-py reads the transforms, for each method (``mean``, ``mode``, ``nearest``,
``gaussian``); the levels' values against independent computations (a reshape-mean; scipy's
Gaussian of the whole level below, whatever the blocks); the method in the multiscale metadata;
per-axis factors (``downsample_axes``). Output validated by ome-zarr-models."""

from __future__ import annotations

import numpy as np
import pytest
import zarr
from scipy.ndimage import gaussian_filter

import lazyexport as le
from helpers.zarr_nodes import read_all, zarr_attrs
from lazyexport.errors import ExportError, SettingsError
from lazyexport.formats.pyramid import level_block

PIXEL = {"z": 4.0, "y": 0.5, "x": 0.25}  # z never halves (anisotropic)
ROI = {"z": (3, 11), "y": (8, 40), "x": (4, 68)}  # 8 x 32 x 64: divides evenly by 4


def export_cutout(tmp_path, method: str, **extra):
    data = np.random.default_rng(7).integers(0, 4000, (16, 48, 80), dtype="uint16")
    out = tmp_path / f"{method}.ome.zarr"
    le.export(
        le.open_source(data, axes="zyx"),
        le.ExportSettings(
            format="ome-zarr", roi=ROI, pixel_size=PIXEL, unit="micrometer", levels=3,
            downsample=method, output=str(out), **extra,
        ),
    )  # fmt: skip
    return data, out


def read_with_ome_zarr(path):
    """(level arrays, [(scale, translation)] per level) as ome-zarr-py reads them."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    (node, *_) = list(Reader(parse_url(str(path)))())
    transforms = []
    for level in node.metadata["coordinateTransformations"]:
        kinds = {t["type"]: t[t["type"]] for t in level}
        transforms.append((np.array(kinds["scale"]), np.array(kinds.get("translation", [0.0] * 3))))
    return [np.asarray(d) for d in node.data], transforms


def validated(path):
    """The group's multiscale as ome-zarr-models validates it (NGFF 0.5)."""
    from ome_zarr_models.v05.image import Image

    model = Image.from_zarr(zarr.open_group(str(path), mode="r"))
    return model.attributes.ome.multiscales[0]


@pytest.mark.parametrize("method", ["mean", "mode", "gaussian"])
def test_a_window_level_is_centred_over_level_0_and_the_cutout(tmp_path, method):
    """The whole level's physical centre, ``translation + scale * (n - 1) / 2``, is level 0's at
    every level (the shapes divide evenly), and level 0 starts at the cutout's start."""
    _, out = export_cutout(tmp_path, method)
    arrays, transforms = read_with_ome_zarr(out)
    start = np.array([ROI[a][0] * PIXEL[a] for a in "zyx"])
    np.testing.assert_allclose(transforms[0][1], start)
    np.testing.assert_allclose(transforms[0][0], [PIXEL[a] for a in "zyx"])
    centres = [t + s * (np.array(a.shape) - 1) / 2 for a, (s, t) in zip(arrays, transforms)]
    assert [a.shape for a in arrays] == [(8, 32, 64), (8, 16, 32), (8, 8, 16)]
    for centre in centres[1:]:
        np.testing.assert_allclose(centre, centres[0])
    # and the first pixel of level k sits at the centre of its window of level 0
    for k, (scale, translation) in enumerate(transforms[1:], 1):
        window = scale / transforms[0][0]  # level-0 pixels per level-k pixel
        np.testing.assert_allclose(translation, start + (window - 1) / 2 * transforms[0][0])
        assert window.tolist() == [1, 2**k, 2**k]
    assert validated(out).type == method


def test_a_nearest_level_takes_the_pixel_its_translation_names(tmp_path):
    data, out = export_cutout(tmp_path, "nearest")
    arrays, transforms = read_with_ome_zarr(out)
    (scale0, start), cutout = transforms[0], data[tuple(slice(*ROI[a]) for a in "zyx")]
    for level, (scale, translation) in zip(arrays[1:], transforms[1:]):
        np.testing.assert_allclose(translation, start)  # no shift: the windows' first pixels
        for i in [(0, 0, 0), (2, 3, 5), tuple(n - 1 for n in level.shape)]:
            where = (translation + np.array(i) * scale - start) / scale0  # level-0 pixels
            assert np.allclose(where, np.round(where))
            assert level[i] == cutout[tuple(np.round(where).astype(int))]


def reshape_mean(below: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    split = [x for n, f in zip(below.shape, factors) for x in (n // f, f)]
    return below.astype(np.float64).reshape(split).mean(axis=tuple(range(1, 2 * below.ndim, 2)))


def test_mean_levels_are_the_reshape_mean_of_the_level_below(tmp_path):
    _, out = export_cutout(tmp_path, "mean")
    group = zarr.open_group(str(out), mode="r")
    for k in (1, 2):
        below, got = read_all(group[str(k - 1)]), read_all(group[str(k)])
        expected = np.rint(reshape_mean(below, (1, 2, 2))).astype("uint16")  # half to even
        np.testing.assert_array_equal(got, expected)


def gaussian_of(below: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """Independent: the whole level smoothed by scipy (sigma 2f/6 on halved axes), each window
    averaged (float64)."""
    sigma = [2 * f / 6 if f > 1 else 0 for f in factors]
    smooth = gaussian_filter(below.astype(np.float64), sigma, mode="reflect", truncate=4.0)
    return reshape_mean(smooth, factors)


def test_gaussian_levels_are_scipy_on_the_whole_level_below(tmp_path):
    _, out = export_cutout(tmp_path, "gaussian")
    group = zarr.open_group(str(out), mode="r")
    for k in (1, 2):
        below, got = read_all(group[str(k - 1)]), read_all(group[str(k)])
        expected = gaussian_of(below, (1, 2, 2))
        np.testing.assert_array_equal(got, np.rint(expected).astype("uint16"))
        # smoothing, not the plain mean: somewhere the values differ
        assert not np.array_equal(got, np.rint(reshape_mean(below, (1, 2, 2))).astype("uint16"))


@pytest.mark.parametrize("block", [(3, 4, 6), (5, 8, 2), (16, 2, 16)])
def test_a_gaussian_block_reads_its_halo_and_matches_the_whole(block):
    """Level blocks of any size (their windows starting at a window's start) give the values of
    the whole level smoothed: each reads the Gaussian's radius beyond its windows, clipped at the
    level's edges. Float data: exact to float tolerance."""
    below = np.random.default_rng(3).random((11, 30, 33)).astype("float32")
    factors = (1, 2, 2)
    out_shape = tuple(-(-n // f) for n, f in zip(below.shape, factors))
    got = np.empty(out_shape, "float32")
    reads = []

    def read(region):
        reads.append(region)
        return below[region]

    for corner in np.ndindex(*(-(-n // b) for n, b in zip(out_shape, block))):
        out = tuple(slice(c * b, min((c + 1) * b, n)) for c, b, n in zip(corner, block, out_shape))
        windows = tuple(
            slice(s.start * f, min(s.stop * f, n)) for s, f, n in zip(out, factors, below.shape)
        )
        got[out] = level_block(read, windows, below.shape, factors, "gaussian")
    even = tuple(n - n % f for n, f in zip(below.shape, factors))
    smooth = gaussian_filter(
        below.astype(np.float64), [0, 2 / 3, 2 / 3], mode="reflect", truncate=4.0
    )
    expected = reshape_mean(smooth[tuple(slice(0, n) for n in even)], factors)
    np.testing.assert_allclose(got[:, :15, :16], expected, rtol=1e-6, atol=1e-7)
    # the short last window along x: the mean of its one smoothed pixel
    np.testing.assert_allclose(
        got[:, :15, 16], smooth[:, :30, 32].reshape(11, 15, 2).mean(axis=-1), rtol=1e-6
    )
    # a halo of 3 pixels (radius of sigma 2/3 at 4 sigma) along y and x, none along z
    first = reads[0]
    assert (first[0].start, first[1].start, first[2].start) == (0, 0, 0)
    assert any(r[1].start > 0 and r[1].start % 2 == 1 for r in reads)


def test_the_method_is_recorded_in_the_multiscale(tmp_path):
    _, out = export_cutout(tmp_path, "gaussian")
    multiscale = zarr_attrs(zarr.open_group(str(out), mode="r"))["ome"]["multiscales"][0]
    assert multiscale["type"] == "gaussian"
    meta = multiscale["metadata"]
    assert meta["method"] == "lazyexport.formats.pyramid.downsample"
    assert meta["version"] == le.__version__
    assert meta["kwargs"]["method"] == "gaussian" and meta["kwargs"]["truncate"] == 4.0
    assert "Gaussian" in meta["description"]
    assert validated(out).metadata["kwargs"]["sigma"] == "2 * factor / 6"


def export_stack(tmp_path, pixel, **extra):
    data = np.random.default_rng(1).integers(0, 255, (16, 64, 64), dtype="uint8")
    out = tmp_path / f"stack{len(list(tmp_path.iterdir()))}.ome.zarr"
    le.export(
        le.open_source(data, axes="zyx"),
        le.ExportSettings(format="ome-zarr", pixel_size=pixel, levels=3, output=str(out), **extra),
    )
    group = zarr.open_group(str(out), mode="r")
    shapes = [read_all(group[str(k)]).shape for k in range(3)]
    scales = [
        d["coordinateTransformations"][0]["scale"]
        for d in zarr_attrs(group)["ome"]["multiscales"][0]["datasets"]
    ]
    return shapes, scales


def test_downsample_axes_keeps_z_of_an_isotropic_stack(tmp_path):
    iso = {"z": 1.0, "y": 1.0, "x": 1.0}
    shapes, _ = export_stack(tmp_path, iso)
    assert shapes == [(16, 64, 64), (8, 32, 32), (4, 16, 16)]  # default: z halves too
    shapes, scales = export_stack(tmp_path, iso, options={"downsample_axes": "y,x"})
    assert shapes == [(16, 64, 64), (16, 32, 32), (16, 16, 16)]
    assert [s[0] for s in scales] == [1.0, 1.0, 1.0]


def test_downsample_axes_halves_z_of_an_anisotropic_stack(tmp_path):
    aniso = {"z": 4.0, "y": 1.0, "x": 1.0}
    assert export_stack(tmp_path, aniso)[0][1] == (16, 32, 32)  # default: z kept
    shapes, scales = export_stack(tmp_path, aniso, options={"downsample_axes": "x, z, y"})
    assert shapes == [(16, 64, 64), (8, 32, 32), (4, 16, 16)]
    assert scales[2] == [16.0, 4.0, 4.0]
    shapes, _ = export_stack(tmp_path, aniso, options={"downsample_axes": "x"})
    assert shapes == [(16, 64, 64), (16, 64, 32), (16, 64, 16)]


def test_downsample_axes_from_the_command_line_and_a_project_round_trip(tmp_path):
    from lazyexport.cli import main

    data = tmp_path / "in.npy"
    np.save(data, np.zeros((4, 40, 40), "uint8"))
    out = tmp_path / "cli.ome.zarr"
    code = main(["export", str(data), "--axes", "zyx", "--output", str(out), "-q", "--levels", "2",
                 "--downsample", "gaussian", "--downsample-axes", "y,x"])  # fmt: skip
    assert code == 0
    assert read_all(zarr.open_group(str(out), mode="r")["1"]).shape == (4, 20, 20)
    settings = le.ExportSettings(format="ome-zarr", options={"downsample_axes": ["y", "x"]})
    assert (settings.options or {}).get("downsample_axes") == "y,x"
    again = le.ExportSettings.from_dict(settings.to_dict())
    assert (again.options or {}).get("downsample_axes") == "y,x"
    # a project file's [settings] table: a key of its own, read back the same
    from lazyexport.batch_project import settings_from_toml, settings_to_toml

    table = settings_to_toml(settings.to_dict())
    assert table["downsample_axes"] == "y,x"
    read = le.ExportSettings.from_dict(settings_from_toml(table))
    assert (read.options or {}).get("downsample_axes") == "y,x"


def test_downsample_axes_mistakes_are_one_line_errors(tmp_path):
    for wrong in ("q", "y,y", ""):
        with pytest.raises(SettingsError, match="downsample_axes must name spatial axes"):
            le.ExportSettings(format="ome-zarr", options={"downsample_axes": wrong})
    with pytest.raises(SettingsError, match="does not apply to format zarr"):
        le.ExportSettings(format="zarr", options={"downsample_axes": "y,x"})
    with pytest.raises(ExportError, match="names z, which the output has not"):
        le.export(
            le.open_source(np.zeros((32, 32), "uint8"), axes="yx"),
            le.ExportSettings(format="ome-zarr", options={"downsample_axes": "z,y"},
                              output=str(tmp_path / "flat.ome.zarr")),
        )  # fmt: skip


@pytest.mark.parametrize("method", ["mean", "mode", "nearest", "gaussian"])
def test_ngff_zarr_places_every_level_as_ome_zarr_py_does(tmp_path, method):
    """ngff-zarr (``from_ngff_zarr``) reads the same scale and translation per level; a window
    level's centre is level 0's, a nearest level starts at level 0's first pixel."""
    import ngff_zarr as nz

    _, out = export_cutout(tmp_path, method)
    images = nz.from_ngff_zarr(str(out)).images
    _, transforms = read_with_ome_zarr(out)
    assert len(images) == len(transforms) == 3
    centres, starts = [], []
    for image, (scale, translation) in zip(images, transforms):
        s = np.array([image.scale[a] for a in "zyx"])
        t = np.array([image.translation[a] for a in "zyx"])
        np.testing.assert_allclose(s, scale)
        np.testing.assert_allclose(t, translation)
        centres.append(t + s * (np.array(image.data.shape) - 1) / 2)
        starts.append(t)
    np.testing.assert_allclose(starts[0], [ROI[a][0] * PIXEL[a] for a in "zyx"])
    for centre, start in zip(centres[1:], starts[1:]):
        if method == "nearest":
            np.testing.assert_allclose(start, starts[0])
        else:
            np.testing.assert_allclose(centre, centres[0])


def test_a_gaussian_level_built_in_many_blocks_is_scipy_on_the_whole(tmp_path, monkeypatch):
    """End to end, with a budget that splits each level into many blocks: the level is still
    the whole level below smoothed, then averaged (float32: to float tolerance)."""
    from lazyexport.formats import ome_zarr

    calls = []
    real = ome_zarr.level_block

    def counted(*args):
        calls.append(args[1])
        return real(*args)

    monkeypatch.setattr(ome_zarr, "level_block", counted)
    data = np.random.default_rng(5).random((4, 400, 408)).astype("float32")
    out = tmp_path / "blocks.ome.zarr"
    le.export(
        le.open_source(data, axes="zyx"),
        le.ExportSettings(format="ome-zarr", levels=3, downsample="gaussian", output=str(out),
                          chunks={"z": 2, "y": 16, "x": 16}, options={"downsample_axes": "y,x"}),
        memory_limit="16MiB",
    )  # fmt: skip
    assert len(calls) > 8  # level 1 alone: several blocks
    group = zarr.open_group(str(out), mode="r")
    for k in (1, 2):
        below, got = read_all(group[str(k - 1)]), read_all(group[str(k)])
        np.testing.assert_allclose(got, gaussian_of(below, (1, 2, 2)), rtol=1e-5, atol=1e-6)
