"""An alpha band GDAL builds no mask from (one of 5 bands, a float one) still marks its zeros
invalid, as QGIS shows them: predict left them valid and wrote values there (a tester's 5-band
uint16 scene and float32 grey+alpha), export-chips and evaluate counted them."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from predict_helpers import unet_file
from rasterio.enums import ColorInterp

import geopix2pix as g
from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.raster.bands import data_bands
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import read_window, warped_view

SIZE = 64
HOLE = 20  # alpha 0 on columns 0..19
GRID = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
# the scenes are not the model's uint8, as predict warns
pytestmark = pytest.mark.filterwarnings("ignore:.*trained on uint8 sources")


def values(bands: int, dtype: str) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(1, 250, (bands, SIZE, SIZE)).astype(dtype)


def alpha(dtype: str) -> np.ndarray:
    band = np.full((1, SIZE, SIZE), 65535 if dtype == "uint16" else 1, dtype)
    band[:, :, :HOLE] = 0
    return band


def with_alpha(path, data: np.ndarray, **extra) -> str:
    """`data` and an alpha band after it (colour interpretation alpha, set after writing as a
    user's gdal_edit.py -colorinterp_N alpha does)."""
    write_raster(path, np.concatenate([data, alpha(data.dtype.name)]), transform=GRID, **extra)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * (len(data) - 1) + [
            ColorInterp.alpha]
    return str(path)


def masked(path, data: np.ndarray) -> str:
    """`data` with the same pixels invalid through an internal mask GDAL reads as such."""
    write_raster(path, data, transform=GRID)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.write_mask(alpha("uint8")[0].astype(bool) * np.uint8(255))
    return str(path)


def check_gdal_builds_no_mask(path) -> None:
    with rasterio.open(path) as src:
        assert src.colorinterp[-1] == ColorInterp.alpha
        assert src.dataset_mask().all()  # what the fix is for: GDAL itself sees no hole


@pytest.mark.parametrize("bands,dtype", [(4, "uint16"), (1, "float32")])
def test_predict_leaves_an_alpha_bands_zeros_invalid(tmp_path, bands, dtype):
    data = values(bands, dtype)
    scene = with_alpha(tmp_path / "scene.tif", data)
    check_gdal_builds_no_mask(scene)
    predicts_as_masked(tmp_path, scene, data)


def predicts_as_masked(tmp_path, scene: str, data: np.ndarray) -> None:
    """`scene` predicts invalid exactly where its alpha is 0, and elsewhere what `data` with
    those pixels hidden by an internal mask predicts, on the same grid."""
    model = unet_file(tmp_path / "m.safetensors", in_ch=len(data), pixel_size=(10, 10))
    g.predict(scene, tmp_path / "out.tif", model=model, progress=False)
    g.predict(masked(tmp_path / "same.tif", data), tmp_path / "same_out.tif", model=model,
              progress=False)
    with rasterio.open(tmp_path / "out.tif") as out, \
            rasterio.open(tmp_path / "same_out.tif") as same:
        valid = out.dataset_mask() > 0
        assert not valid[:, :HOLE].any() and valid[:, HOLE:].all()
        assert (valid == (same.dataset_mask() > 0)).all()
        np.testing.assert_array_equal(out.read(1)[valid], same.read(1)[valid])
        assert (out.transform, out.crs) == (same.transform, same.crs)


@pytest.mark.filterwarnings("ignore::UserWarning")  # and the model's pixel size
def test_predict_resampled_to_the_model_leaves_an_alpha_bands_zeros_invalid(tmp_path):
    scene = with_alpha(tmp_path / "scene.tif", values(1, "float32"))
    check_gdal_builds_no_mask(scene)
    model = unet_file(tmp_path / "m.safetensors", in_ch=1, pixel_size=(20, 20))
    g.predict(scene, tmp_path / "out.tif", model=model, resample_to_model=True, progress=False)
    with rasterio.open(tmp_path / "out.tif") as out:
        assert out.transform == GRID
        valid = out.dataset_mask() > 0
    assert not valid[:, :HOLE - 2].any() and valid[:, HOLE + 4:].all()


def test_export_marks_an_alpha_bands_zeros_invalid_in_the_chips(tmp_path):
    source = with_alpha(tmp_path / "s.tif", values(4, "uint16"))
    target = write_raster(tmp_path / "t.tif", values(1, "float32"), transform=GRID)
    g.export_chips(source, target, tmp_path / "chips", chip_size=32, val_fraction=0,
                   max_nodata=1.0, workers=0, progress=False)
    chips = ChipDataset(tmp_path / "chips", "train")
    assert chips.info.source.bands == [1, 2, 3, 4]
    seen = 0
    for i in range(len(chips)):
        with rasterio.open(tmp_path / "chips" / "source" / f"{chips.ids[i]}.tif") as chip:
            first = round((chip.bounds.left - GRID.c) / 10)
        valid = chips[i]["source_valid"][0].numpy().astype(bool)
        columns = np.arange(first, first + 32)
        assert (valid == (columns >= HOLE)[None, :]).all()
        seen += first < HOLE
    assert seen


def test_evaluate_leaves_out_an_alpha_bands_zeros(tmp_path):
    prediction = with_alpha(tmp_path / "p.tif", values(1, "float32"))
    reference = write_raster(tmp_path / "r.tif", values(1, "float32") + 1, transform=GRID)
    report = g.evaluate(prediction, reference)
    assert report.valid_pixels == SIZE * (SIZE - HOLE)


def test_a_warped_float_scene_keeps_its_values_under_alpha_1(tmp_path):
    """GDAL's warper read a float alpha of 1 as 1/255 opaque: the view was all NaN."""
    data = values(1, "float32")
    scene = with_alpha(tmp_path / "scene.tif", data)
    plain = write_raster(tmp_path / "plain.tif", data, transform=GRID)
    grid = Grid("EPSG:32633", Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 5200000.0), 32, 32)
    with rasterio.open(scene) as src, warped_view(src, grid) as view:
        warped, valid = read_window(view, data_bands(src), None)
    with rasterio.open(plain) as src, warped_view(src, grid) as view:
        expected = view.read(1)
    clear = HOLE // 2 + 1  # the first column whose bilinear kernel reaches no alpha 0
    assert not valid[:, :HOLE // 2].any() and valid[:, clear - 1:].all()
    np.testing.assert_array_equal(warped[0][:, clear:], expected[:, clear:])


def test_evaluate_leaves_out_what_lies_outside_a_warped_five_band_reference(tmp_path):
    """The alpha band GDAL's warper adds to a view of 5 bands is no mask to GDAL either: the
    pixels outside the reference's footprint were counted as zeros."""
    prediction = write_raster(tmp_path / "p.tif", values(5, "uint16"), transform=GRID)
    reference = write_raster(tmp_path / "r.tif", values(5, "uint16"),
                             transform=Affine(10.0, 0.0, 499903.0, 0.0, -10.0, 5200000.0))
    report = g.evaluate(prediction, reference)
    # the reference covers the prediction's columns 0..53 (and 3 m of column 54)
    assert abs(report.valid_pixels - SIZE * 54) <= SIZE


def test_an_rgba_scene_gdal_masks_itself_is_predicted_as_before(tmp_path):
    """The common case the rule must leave alone: 4-band uint8 RGBA, whose alpha GDAL itself
    turns into the mask (the rule adds nothing); the output is invalid exactly where alpha is
    0, as with the same pixels hidden by an internal mask."""
    data = values(3, "uint8")
    path = tmp_path / "rgba.tif"
    write_raster(path, np.concatenate([data, alpha("uint8") * np.uint8(255)]), transform=GRID,
                 photometric="RGB", alpha="YES")
    with rasterio.open(path) as src:
        assert src.colorinterp[-1] == ColorInterp.alpha
        assert not src.dataset_mask()[:, :HOLE].any()  # GDAL's own mask, from the alpha
    predicts_as_masked(tmp_path, str(path), data)


@pytest.mark.filterwarnings("ignore:.*from the training pixel size")
@pytest.mark.parametrize("resample", [False, True])  # the scene as it is, or warped
@pytest.mark.parametrize("bands", [3, 4])  # GDAL's mask from the alpha (RGBA), and none (5 bands)
def test_semi_transparent_pixels_are_valid_as_qgis_draws_them(tmp_path, bands, resample):
    """Only alpha 0 is invalid: a semi-transparent pixel (alpha 1..254, e.g. a feathered edge)
    is drawn by QGIS and read as valid, and so are the prediction's pixels over it (predicted
    on the scene's grid, or warped to the model's pixel size and back)."""
    data = values(bands, "uint8")
    band = np.full((1, SIZE, SIZE), 255, np.uint8)
    band[:, :, :HOLE], band[:, :, HOLE:2 * HOLE] = 0, 1 + np.arange(HOLE, dtype=np.uint8) * 12
    path = tmp_path / "rgba.tif"
    write_raster(path, np.concatenate([data, band]), transform=GRID)
    with rasterio.open(path, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue][:bands] + [
            ColorInterp.undefined] * (bands - 3) + [ColorInterp.alpha]
    if bands == 4:
        check_gdal_builds_no_mask(path)  # (the alpha's zeros are ours to find)
    else:
        with rasterio.open(path) as src:  # GDAL's own mask: 0, the alpha's value, 255
            assert (src.dataset_mask()[:, :HOLE] == 0).all()
            assert (src.dataset_mask()[:, HOLE:2 * HOLE] < 255).all()
    expected = np.ones((SIZE, SIZE), bool)
    expected[:, :HOLE] = False
    with rasterio.open(path) as src:
        assert data_bands(src) == list(range(1, bands + 1))
        _, valid = read_window(src, data_bands(src), None)
    assert np.array_equal(valid, expected)
    model = unet_file(tmp_path / "m.safetensors", in_ch=bands)
    g.predict(str(path), tmp_path / "out.tif", model=model, device="cpu", progress=False,
              resample_to_model=resample)
    with rasterio.open(tmp_path / "out.tif") as out:
        assert np.array_equal(out.dataset_mask() > 0, expected)
