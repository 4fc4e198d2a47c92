"""`predict --resample-to-model` beside the scene's nodata: every valid pixel gets the prediction
of the valid input, never one spread from the zero-filled nodata, and nodata stays exactly where
the scene is invalid.

Real GeoTIFFs through rasterio; stand-in generators whose output is a function of each input
pixel alone, on a uniform scene, so that the right value is known at every valid pixel.
"""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from predict_helpers import CLASSES, PixelLogits, PixelValue, categorical_meta, loaded, write_scene
from rasterio.transform import from_origin
from rasterio.windows import Window

from geopix2pix.chips.scaling import Scaling
from geopix2pix.prediction import predict, resample
from geopix2pix.raster.grid import Grid

UNIFORM = 250  # band 1 everywhere valid: the class of centre 221 (40), or the value 250
WIDTH, HEIGHT = 150, 120


def uniform_scene(path, pixel_size: float) -> tuple[str, np.ndarray]:
    """A uniform 3-band uint8 scene (nodata 0) with a slanted nodata border, as a reprojected
    scene has, and a hole (a cloud); and its validity."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    invalid = (xx + 2 * yy < 90) | (xx - yy > 100)
    invalid[50:58, 60:75] = True
    data = np.where(invalid, 0, UNIFORM).astype("uint8")[None].repeat(3, 0)
    scene = write_scene(path, WIDTH, HEIGHT, data=data,
                        transform=from_origin(500000.0, 4_000_000.0, pixel_size, pixel_size))
    return scene, ~invalid


def beside_nodata(valid: np.ndarray, distance: int = 4) -> np.ndarray:
    """The valid pixels within `distance` pixels (chessboard) of an invalid one."""
    near = ~valid
    for _ in range(distance):
        padded = np.pad(near, 1, mode="edge")
        near = near | padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
        near = near | padded[:-2, :-2] | padded[:-2, 2:] | padded[2:, :-2] | padded[2:, 2:]
    return near & valid


def predicted(scene, model, tmp_path) -> np.ndarray:
    """The output of --resample-to-model, masked where it is nodata."""
    out = tmp_path / "out.tif"
    predict(scene, out, model=model, progress=False, resample_to_model=True,
            on_warning=lambda _: None)
    with rasterio.open(out) as dst:
        return np.ma.masked_array(dst.read(1), dst.read_masks(1) == 0)


PIXEL_SIZES = [20.0, 27.3, 45.0]  # finer and coarser than the model's 30 m


@pytest.mark.parametrize("pixel_size", PIXEL_SIZES)
@pytest.mark.parametrize("target", ["float32", "uint8"])  # warped back bilinear, nearest
def test_values_beside_the_nodata_are_those_of_the_valid_input(tmp_path, pixel_size, target):
    """Band 1's value, predicted at 30 m: 250 at every valid pixel, also beside the hole and
    the border (the zero-filled nodata would give 127.5, and averages of both next to it)."""
    scene, valid = uniform_scene(tmp_path / "s.tif", pixel_size)
    model = loaded(PixelValue(), target_dtype=target,
                   target_nodata=-9999.0 if target == "float32" else None,
                   target_scaling=Scaling("minmax", (0.0,), (255.0,)))
    values = predicted(scene, model, tmp_path)
    np.testing.assert_array_equal(values.mask, ~valid)  # nodata exactly where the scene is
    assert beside_nodata(valid).sum() > 500
    np.testing.assert_allclose(values.data[valid], UNIFORM, atol=1e-3)


@pytest.mark.parametrize("pixel_size", PIXEL_SIZES)
def test_class_codes_beside_the_nodata_are_those_of_the_valid_input(tmp_path, pixel_size):
    """A categorical model's class of band 1, predicted at 30 m: the uniform scene's class at
    every valid pixel, also beside the hole and the border (the zero-filled nodata is another
    class)."""
    scene, valid = uniform_scene(tmp_path / "s.tif", pixel_size)
    model = loaded(PixelLogits(), out_ch=len(CLASSES), **categorical_meta())
    values = predicted(scene, model, tmp_path)
    np.testing.assert_array_equal(values.mask, ~valid)
    expected = PixelLogits.expected(np.full((1, 1), UNIFORM))[0, 0]
    assert expected != PixelLogits.expected(np.full((1, 1), 127))[0, 0]  # the nodata's class
    np.testing.assert_array_equal(values.data[valid], expected)


@pytest.mark.parametrize("pixel_size", [3.0, 10.0])
def test_small_valid_patches_in_nodata_get_their_prediction(tmp_path, pixel_size):
    """Single valid pixels and 2 x 2 patches amid nodata, the model's pixels 3 to 10 times
    larger: each model pixel holding any valid scene pixel is predicted (the scene averaged onto
    it), so every valid pixel gets its value (a reviewer found 24 of 25 such pixels written as
    nodata when bilinear called those model pixels invalid)."""
    data = np.zeros((3, 200, 200), "uint8")
    data[:, 7::19, 5::23] = UNIFORM
    for row, col in [(40, 40), (101, 150), (160, 33)]:
        data[:, row:row + 2, col:col + 2] = UNIFORM
    scene = write_scene(tmp_path / "s.tif", 200, 200, data=data,
                        transform=from_origin(500000.0, 4_000_000.0, pixel_size, pixel_size))
    valid = (data != 0).all(0)
    model = loaded(PixelValue(), target_dtype="float32", target_nodata=-9999.0,
                   target_scaling=Scaling("minmax", (0.0,), (255.0,)))
    values = predicted(scene, model, tmp_path)
    np.testing.assert_array_equal(values.mask, ~valid)
    np.testing.assert_allclose(values.data[valid], UNIFORM, atol=1e-3)
    assert resample.scene_resampling(pixel_size / 30.0) == "average"
    assert resample.scene_resampling(45.0 / 30.0) == "bilinear"


def test_fill_takes_a_neighbours_code_or_the_mean_of_neighbours_values():
    """Missing (NaN) pixels take the value of their nearest valid neighbours: one neighbour's
    code, never a mean of codes; or the mean of the valid neighbours' values. Pixels farther
    than `steps` from any value stay missing."""
    nan = np.nan
    values = np.array([[[10, 40, nan, nan, nan, nan]]], dtype="float32")
    codes = resample.fill_missing(values.copy(), steps=3, average=False)
    np.testing.assert_array_equal(codes, [[[10, 40, 40, 40, 40, nan]]])
    means = resample.fill_missing(np.array([[[10, nan, 40]]], dtype="float32"), steps=1,
                                  average=True)
    np.testing.assert_array_equal(means, [[[10, 25, 40]]])
    codes = resample.fill_missing(np.array([[[10, nan, 40]]], dtype="float32"), steps=1,
                                  average=False)
    assert codes[0, 0, 1] in (10, 40)


@pytest.mark.parametrize(("ratio", "margin"), [(1.5, 3), (2 / 3, 4), (0.1, 21), (0.01, 128)])
def test_the_fill_margin_spans_two_model_pixels_and_is_bounded(ratio, margin):
    assert resample.fill_margin(ratio) == margin


class ArrayView:
    """A stand-in for the warped-back view: `read` of a (bands, rows, cols) array."""

    def __init__(self, array: np.ndarray):
        self.array = array

    def read(self, bands, window):
        rows, cols = window.toslices()
        return self.array[[b - 1 for b in bands], rows, cols].copy()


@pytest.mark.parametrize("average", [True, False])
def test_blocks_read_with_the_margin_are_filled_as_the_whole_raster(average):
    """The output is written in blocks, each read with the fill margin around it: every block's
    pixels get the values a fill of the whole raster gives them, with missing patches that
    cross the blocks' edges."""
    rng = np.random.default_rng(2)
    values = rng.normal(size=(2, 90, 70)).astype("float32")
    values[:, rng.random((90, 70)) < 0.3] = np.nan
    values[:, 20:31, 25:50] = np.nan
    fill = resample.Fill(margin=6, average=average)
    whole = resample.fill_missing(values.copy(), fill.margin, average)
    grid = Grid(None, Affine.identity(), 70, 90)
    for row in range(0, 90, 25):
        for col in range(0, 70, 30):
            window = Window(col, row, min(30, 70 - col), min(25, 90 - row))
            wanted = np.ones((window.height, window.width), bool)
            block = resample.read_filled(ArrayView(values), window, grid, 2, fill, wanted)
            np.testing.assert_array_equal(block, whole[(slice(None), *window.toslices())])
    assert not np.isnan(whole).any()


def test_a_resampled_prediction_far_finer_than_the_scene_is_refused(tmp_path):
    """A tester's 300 m Landsat scene and a 4.5 m model: --resample-to-model began a 52700 x
    47900 grid. Past 64 times the scene's pixels it is refused in one line, naming the size;
    25 times (150 m against 30 m) is predicted."""
    from geopix2pix.errors import GeoPix2PixError

    model = loaded(PixelValue(), target_dtype="float32", target_nodata=-9999.0,
                   target_scaling=Scaling("minmax", (0.0,), (255.0,)))
    coarse = write_scene(tmp_path / "coarse.tif", 40, 30,
                         transform=from_origin(500000.0, 4_000_000.0, 300.0, 300.0))
    with pytest.raises(GeoPix2PixError) as caught:
        predict(coarse, tmp_path / "a.tif", model=model, progress=False,
                resample_to_model=True, on_warning=lambda _: None)
    assert str(caught.value) == (
        f"{coarse}: its pixels are 10x the training's, so --resample-to-model would predict a "
        "400 x 300 grid (100 times the scene's pixels); predict without --resample-to-model, "
        "or use a model trained nearer the scene's pixel size")
    assert not (tmp_path / "a.tif").exists()
    medium = write_scene(tmp_path / "medium.tif", 40, 30,
                         transform=from_origin(500000.0, 4_000_000.0, 150.0, 150.0))
    predict(medium, tmp_path / "b.tif", model=model, progress=False, resample_to_model=True,
            on_warning=lambda _: None)
    assert (tmp_path / "b.tif").exists()


def test_resample_to_model_that_cannot_be_applied_is_said(tmp_path, model_file):
    """A scene with no geotransform (--allow-no-crs) has no pixel size to compare: it was
    predicted at its own, exit 0, with nothing said."""
    scene = write_scene(tmp_path / "bare.tif", 64, 64, crs=None, transform=Affine.identity())
    said: list[str] = []
    predict(scene, tmp_path / "o.tif", model=model_file, progress=False, allow_no_crs=True,
            resample_to_model=True, on_warning=said.append)
    assert [w for w in said if "--resample-to-model" in w] == [
        f"{scene}: --resample-to-model is not applied: the scene has no pixel size that can be "
        "compared with the training's (no geotransform, or no CRS); it is predicted at its own "
        "pixel size"]
    with rasterio.open(tmp_path / "o.tif") as out:
        assert (out.width, out.height) == (64, 64)
