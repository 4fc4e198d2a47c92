"""A void of one band only (-9999 or NaN in band 1, band 2 valid there) is kept out of that
band's warp: rasterio's WarpedVRT takes a pixel for nodata only where every band is, and GDAL
blended the -9999 into its neighbours' values (-4949.5), which then counted as valid in the
export's warped targets, evaluate's warped reference and predict --resample-to-model."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import shared, write_raster

from geopix2pix import evaluate
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import invalid_pixels, warped_view

ORIGIN = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)


@pytest.mark.parametrize("fill", [-9999.0, float("nan")])
def test_a_void_of_one_band_is_not_blended_into_its_neighbours(tmp_path, fill):
    data = np.stack([np.full((40, 40), 100.0, np.float32), np.full((40, 40), 200.0, np.float32)])
    data[0, 10:20, 10:20] = fill  # band 1 only
    data[1, 25:30, 25:30] = fill  # band 2 only
    path = write_raster(tmp_path / "two.tif", data, nodata=None if np.isnan(fill) else fill)
    with rasterio.open(path) as src:
        moved = Grid(src.crs, ORIGIN @ Affine.translation(0.5, 0.5), 40, 40)
        with warped_view(src, moved, "bilinear") as view:
            warped = view.read()
            invalid = invalid_pixels(view, warped, [1, 2])
    valid = ~invalid
    assert valid.sum() > 1000
    assert (warped[0][valid] == 100.0).all() and (warped[1][valid] == 200.0).all()
    # each band's void is its own: band 2 is read across band 1's, and the reverse
    void_1, void_2 = ~np.isin(warped[0], [100.0]), ~np.isin(warped[1], [200.0])
    assert void_1[12:17, 12:17].all() and not void_2[12:17, 12:17].any()
    assert void_2[26:28, 26:28].all() and not void_1[26:28, 26:28].any()


def test_evaluate_finds_no_error_in_landsat_resampled_band_by_band(tmp_path):
    """The real Landsat scene has 0 (nodata) in some bands only along its edges: resampled band
    by band onto a grid moved half a pixel, evaluate warps it back onto that grid and scores
    the prediction that is the same resampling: every error is 0 (498 pixels were off by up to
    92 DN)."""
    landsat = shared("single_landsat7", "rasterio_RGB.byte.tif")
    with rasterio.open(landsat) as src:
        moved = Grid(src.crs, src.transform @ Affine.translation(0.5, 0.5), src.width - 1,
                     src.height - 1)
        bands = []
        for band in (1, 2, 3):
            one = write_raster(tmp_path / f"b{band}.tif", src.read(band), crs=src.crs,
                               transform=src.transform, nodata=src.nodata)
            with rasterio.open(one) as single, warped_view(single, moved, "bilinear") as view:
                bands.append(view.read(1))
    pred = write_raster(tmp_path / "pred.tif", np.stack(bands), crs=moved.crs,
                        transform=moved.transform, nodata=0)
    report = evaluate(pred, landsat)
    assert report.warped and report.valid_pixels > 100_000
    assert [b.mae for b in report.bands] == [0.0, 0.0, 0.0]


def _stacked_nodata(path, source, nodata: list[float]):
    """A VRT of `source`'s bands, each tagged with its own nodata value (as gdalbuildvrt
    -separate writes a stack of files of other fill values)."""
    with rasterio.open(source) as src:
        dtype, size = src.dtypes[0], (src.width, src.height)
        transform = ", ".join(map(repr, src.transform.to_gdal()))
    kind = {"float32": "Float32", "int16": "Int16"}[dtype]
    bands = "".join(
        f'<VRTRasterBand dataType="{kind}" band="{i}"><NoDataValue>{value}</NoDataValue>'
        f'<SimpleSource><SourceFilename relativeToVRT="0">{source}</SourceFilename>'
        f"<SourceBand>{i}</SourceBand></SimpleSource></VRTRasterBand>"
        for i, value in enumerate(nodata, start=1))
    path.write_text(f'<VRTDataset rasterXSize="{size[0]}" rasterYSize="{size[1]}"><SRS>'
                    f"EPSG:32633</SRS><GeoTransform>{transform}</GeoTransform>{bands}"
                    "</VRTDataset>")
    return path


@pytest.mark.parametrize("dtype", ["float32", "int16"])
def test_bands_of_other_nodata_values_keep_each_its_own_void(tmp_path, dtype):
    """Band 1's voids are -9999, band 2's -1 (a VRT stack): rasterio gives the warper one
    value for all bands, band 1's, so band 2's -1 was blended into its neighbours (MAE 3.49 in
    evaluate for an exact prediction). Each band's own void now stays out, and counts as
    invalid in the warped view."""
    data = np.stack([np.full((40, 40), 100, dtype), np.full((40, 40), 200, dtype)])
    data[0, 10:20, 10:20] = -9999
    data[1, 25:30, 25:30] = -1
    stack = _stacked_nodata(tmp_path / "stack.vrt", write_raster(tmp_path / "raw.tif", data),
                            [-9999, -1])
    moved = Grid("EPSG:32633", ORIGIN @ Affine.translation(0.5, 0.5), 40, 40)
    with rasterio.open(stack) as src:
        assert src.nodatavals == (-9999.0, -1.0)
        with warped_view(src, moved, "bilinear") as view:
            warped = view.read()
            invalid = invalid_pixels(view, warped, [1, 2])
    assert (warped[0][~invalid] == 100).all() and (warped[1][~invalid] == 200).all()
    assert invalid[12:17, 12:17].all() and invalid[26:28, 26:28].all()
    assert (~invalid).sum() > 1000
    # evaluate: a prediction that is the reference's own bilinear resampling scores 0
    pred = write_raster(tmp_path / "pred.tif", np.where(invalid, -9999, warped).astype(dtype),
                        transform=moved.transform, nodata=-9999)
    report = evaluate(pred, stack)
    assert report.warped and [b.mae for b in report.bands] == [0.0, 0.0]


def test_a_band_s_values_at_another_band_s_nodata_stay_values(tmp_path):
    """Band 1's voids are -9999, band 2's -1, and band 2 holds real -9999 values (an int16
    stack): the warper's one nodata value was band 1's, so band 2's -9999 became voids. It is
    now NaN, which no integer value equals, and the values come back exact."""
    data = np.stack([np.full((40, 40), 100, "int16"), np.full((40, 40), 200, "int16")])
    data[0, 10:20, 10:20] = -9999
    data[1, :, 30:] = -9999  # values of band 2
    data[1, 25:30, 5:10] = -1
    stack = _stacked_nodata(tmp_path / "stack.vrt", write_raster(tmp_path / "raw.tif", data),
                            [-9999, -1])
    with rasterio.open(stack) as src:
        grid = Grid.of(src)
        with warped_view(src, grid, "nearest") as view:
            warped = view.read()
            invalid = invalid_pixels(view, warped, [1, 2])
            void_2 = invalid_pixels(view, warped[1:], [2])
    assert (warped[1][:, 30:] == -9999).all() and not void_2[:, 30:].any()
    assert void_2[25:30, 5:10].all() and void_2.sum() == 25
    assert invalid[10:20, 10:20].all() and invalid.sum() == 125
    assert (warped[0][~invalid] == 100).all()


def test_a_stack_of_other_nodata_values_read_from_a_zip_or_retagged_is_warped_alike(tmp_path):
    """The VRT that gives the bands one nodata value reopens the raster by GDAL's name for it
    (zip://a.zip!b.vrt is /vsizip/...: its rasterio form failed at the read), and a nodata value
    the user gives (--reference-nodata) is the one the warp keeps out, as before."""
    import zipfile

    data = np.stack([np.full((40, 40), 100, "float32"), np.full((40, 40), 200, "float32")])
    data[0, 10:20, 10:20] = -9999
    data[1, 25:30, 25:30] = -1
    stack = _stacked_nodata(tmp_path / "stack.vrt", write_raster(tmp_path / "raw.tif", data),
                            [-9999, -1])
    with zipfile.ZipFile(tmp_path / "stack.zip", "w") as archive:
        archive.write(stack, "stack.vrt")
    moved = Grid("EPSG:32633", ORIGIN @ Affine.translation(0.5, 0.5), 40, 40)
    with rasterio.open(stack) as src, warped_view(src, moved, "bilinear") as view:
        warped = view.read()
        invalid = invalid_pixels(view, warped, [1, 2])
    pred = write_raster(tmp_path / "pred.tif", np.where(invalid, -9999, warped).astype("float32"),
                        transform=moved.transform, nodata=-9999)
    zipped = f"zip://{tmp_path / 'stack.zip'}!stack.vrt"
    assert [b.mae for b in evaluate(pred, zipped).bands] == [0.0, 0.0]
    # -9999 given for both bands: band 2's -1 are values then, band 1's voids still kept out
    report = evaluate(pred, stack, reference_nodata=-9999)
    assert report.bands[0].mae == 0.0


def test_a_band_without_nodata_keeps_its_values_of_another_band_s_nodata(tmp_path):
    """Band 1 untagged holds real -1 heights, band 2's nodata is -1: no value of band 1 is
    made a void by a nodata given to every band (800 of them were, through the VRT)."""
    data = np.stack([np.full((40, 40), -1, "int16"), np.full((40, 40), 200, "int16")])
    data[0, :, 20:] = 50
    stack = _stacked_nodata(tmp_path / "stack.vrt", write_raster(tmp_path / "raw.tif", data),
                            [-1, -1])
    stack.write_text(stack.read_text().replace("<NoDataValue>-1</NoDataValue>", "", 1))
    moved = Grid("EPSG:32633", ORIGIN @ Affine.translation(0.5, 0.5), 40, 40)
    with rasterio.open(stack) as src:
        assert src.nodatavals == (None, -1.0)
        with warped_view(src, moved, "nearest") as view:
            warped = view.read()
            invalid = invalid_pixels(view, warped[:1], [1])
    assert (warped[0][:39, :19] == -1).all() and (warped[0][:39, 21:39] == 50).all()
    assert not invalid[:39, :39].any()  # (the -1 heights are heights)
