"""`geopix2pix predict`: exact grids, nodata, dtypes and units, seams, band and model
checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import shared, write_raster
from predict_helpers import (
    IDENTITY,
    ConvModel,
    RandomOffset,
    loaded,
    unet_file,
    whole_scene_conv,
    write_scene,
)
from rasterio.control import GroundControlPoint
from rasterio.crs import CRS
from rasterio.enums import ColorInterp
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin

import geopix2pix as g
from geopix2pix.chips.scaling import Scaling
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.prediction import predict
from geopix2pix.prediction.engine.windows import make_layout
from geopix2pix.raster.blend_windows import BLEND_WINDOWS, BlendWindow


@pytest.mark.parametrize("crs, transform, width, height", [
    ("EPSG:32633", from_origin(500000.0, 4_000_000.0, 30.0, 30.0), 1037, 771),
    ("EPSG:4326", from_origin(-3.4123, 40.95, 0.000277, 0.000301), 301, 257),
    ("EPSG:2263", from_origin(980000.0, 200000.0, 3.0, 3.0), 53, 37),  # smaller than a window
    ("EPSG:4326", from_origin(10.0, 50.0, 0.001, 0.001), 17, 61),
])
def test_output_on_exact_input_grid(tmp_path, model_file, crs, transform, width, height):
    scene = write_scene(tmp_path / "scene.tif", width, height, crs=crs, transform=transform)
    out = tmp_path / "out.tif"
    predict(scene, out, model=model_file, progress=False, overlap=0.25)
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.crs == src.crs
        assert dst.transform == src.transform
        assert (dst.width, dst.height) == (src.width, src.height)
        assert dst.count == 1 and dst.dtypes[0] == "float32"
        assert dst.nodata == -9999.0
        assert dst.descriptions == ("elevation",)
        assert dst.compression.value == "DEFLATE"
        if width >= 16 and height >= 16:
            assert dst.profile["tiled"]
        values = dst.read(1)
        assert np.isfinite(values).all() and (values >= 100).all() and (values <= 3000).all()


def test_landsat_nodata_border_preserved_and_uint8(tmp_path):
    landsat = shared("single_landsat7", "rasterio_RGB.byte.tif")
    # Target uint8 with nodata 0 and a scaling whose predictions round to 0 or 1: valid pixels
    # predicted 0 must be nudged off the nodata value.
    model = unet_file(tmp_path / "m.safetensors", target_dtype="uint8", target_nodata=0.0,
                      target_scaling=Scaling("minmax", (-1.0,), (1.0,)), pixel_size=(300, 300),
                      crs="EPSG:32618")
    out = tmp_path / "out.tif"
    predict(str(landsat), out, model=model, progress=False, batch_size=16, overlap=0.25)
    with rasterio.open(landsat) as src, rasterio.open(out) as dst:
        invalid = (src.read() == 0).any(0)
        pred = dst.read(1)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        assert invalid.any() and (pred[invalid] == 0).all()
        assert (pred[~invalid] == 1).all()  # nudged or predicted 1, never nodata


def test_float_target_in_metres_with_nan_invalid(tmp_path, model_file):
    """NaN and infinite input pixels (and signalling NaNs, garbage bits) are invalid: nodata
    out, without numpy warnings."""
    data = np.full((3, 70, 90), 120, dtype="float32")
    data[:, 10:20, 30:40] = np.nan
    data[1, 50, 70], data[2, 55:58, 80] = np.inf, -np.inf
    data[0, 60, 10] = np.array(0x7F800001, np.uint32).view(np.float32)  # a signalling NaN
    invalid = np.zeros((70, 90), bool)
    invalid[10:20, 30:40] = invalid[50, 70] = invalid[55:58, 80] = invalid[60, 10] = True
    scene = write_scene(tmp_path / "s.tif", 90, 70, dtype="float32", nodata=None, data=data)
    out = tmp_path / "out.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        predict(scene, out, model=model_file, progress=False)
    with rasterio.open(out) as dst:
        values = dst.read(1)
        assert dst.dtypes[0] == "float32" and dst.nodata == -9999.0
        assert (values[invalid] == -9999).all()
        assert (values[~invalid] >= 100).all() and (values[~invalid] <= 3000).all()


def test_integer_target_without_nodata_uses_internal_mask(tmp_path):
    model = unet_file(tmp_path / "m.safetensors", target_dtype="uint16", target_nodata=None,
                      target_scaling=Scaling("minmax", (0.0,), (1000.0,)))
    data = np.full((3, 40, 50), 100, dtype="uint8")
    data[:, :5] = 0
    scene = write_scene(tmp_path / "s.tif", 50, 40, data=data)
    out = tmp_path / "out.tif"
    predict(scene, out, model=model, progress=False)
    assert not list(tmp_path.glob("*.msk"))
    with rasterio.open(out) as dst:
        assert dst.nodata is None and dst.dtypes[0] == "uint16"
        mask = dst.read_masks(1)
        assert (mask[:5] == 0).all() and (mask[5:] == 255).all()


def _column_diffs(values: np.ndarray, layout) -> tuple[float, float]:
    """Mean |difference| between neighbouring columns across window edges and inside windows."""
    diffs = np.abs(np.diff(values, axis=1)).mean(0)  # diffs[j] is between columns j and j+1
    edges = {c + layout.size for c in layout.cols} | set(layout.cols)
    at_edge = np.array([j + 1 in edges for j in range(len(diffs))])
    return float(diffs[at_edge].mean()), float(diffs[~at_edge].mean())


def test_hann_blend_has_no_seams_with_window_varying_model(tmp_path):
    scene = write_scene(tmp_path / "s.tif", 300, 200)
    layout = make_layout(200, 300, 64, 0.5, "hann")
    out_hann, out_none = tmp_path / "hann.tif", tmp_path / "none.tif"
    for blend, out in (("hann", out_hann), ("none", out_none)):
        model = loaded(RandomOffset(), target_scaling=IDENTITY)
        predict(scene, out, model=model, progress=False, blend=blend)
    with rasterio.open(out_hann) as a, rasterio.open(out_none) as b:
        hann, none = a.read(1), b.read(1)
    edge, inside = _column_diffs(hann, layout)
    assert edge <= inside
    # The same measure sees the seams of unblended window outputs (the test can fail).
    _, inside_none = _column_diffs(none, make_layout(200, 300, 64, 0.5, "none"))
    none_layout = make_layout(200, 300, 64, 0.5, "none")
    crop_edges = [c + none_layout.margin for c in none_layout.cols]
    diffs = np.abs(np.diff(none, axis=1)).mean(0)
    assert diffs[[e - 1 for e in crop_edges if 0 < e < 300]].mean() > 10 * inside_none


def test_centre_crop_is_seam_free_for_translation_equivariant_model(tmp_path):
    scene = write_scene(tmp_path / "s.tif", 211, 150)
    model = loaded(ConvModel(), target_scaling=IDENTITY)
    outs = {}
    for blend in ("none", "hann"):
        outs[blend] = tmp_path / f"{blend}.tif"
        predict(scene, outs[blend], model=model, progress=False, blend=blend, batch_size=5)
    whole = whole_scene_conv(scene, model.generator.conv)
    with rasterio.open(outs["none"]) as a, rasterio.open(outs["hann"]) as b:
        np.testing.assert_allclose(a.read(1), whole, atol=1e-5)
        # Hann also gives the whole-scene result up to the floored weight of window edges.
        np.testing.assert_allclose(b.read(1), whole, atol=2e-3)


def test_a_blend_window_is_one_entry_of_the_registry(tmp_path, monkeypatch):
    """A window added to `BLEND_WINDOWS` (here flat, its 2 edge pixels dropped, where the 5x5
    convolution's zero padding shows) is a --blend choice, and the weights and the lattice
    follow it: the translation-equivariant model gives the whole-scene result (Hann does only
    up to 2e-3)."""
    def trimmed(size, stride, margin):
        weights = np.ones(size)
        weights[:2] = weights[-2:] = 0
        return weights

    monkeypatch.setitem(BLEND_WINDOWS, "trimmed", BlendWindow(trimmed, centre_only=False))
    scene = write_scene(tmp_path / "s.tif", 211, 150)
    model = loaded(ConvModel(), target_scaling=IDENTITY)
    predict(scene, tmp_path / "o.tif", model=model, progress=False, blend="trimmed",
            batch_size=5)
    with rasterio.open(tmp_path / "o.tif") as dst:
        np.testing.assert_allclose(dst.read(1), whole_scene_conv(scene, model.generator.conv),
                                   atol=1e-5)
    with pytest.raises(GeoPix2PixError, match="use one of hann, none, trimmed$"):
        predict(scene, tmp_path / "x.tif", model=model, blend="bartlett")


class Broadcast(torch.nn.Module):
    """One value for every pixel, returned as a broadcast view (all pixels share memory)."""

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        n, _, h, w = x.shape
        return torch.full((1, 1, 1, 1), 0.5).expand(n, 1, h, w)


@pytest.mark.parametrize("blend", ["hann", "none"])
def test_a_broadcast_output_blends_like_any_other(tmp_path, blend):
    """The blender weights outputs in place only when they are a plain array of their own."""
    scene = write_scene(tmp_path / "s.tif", 130, 70)
    out = tmp_path / "o.tif"
    predict(scene, out, model=loaded(Broadcast()), progress=False, batch_size=64, blend=blend)
    with rasterio.open(out) as dst:  # 0.5 on [-1, 1] -> 100 + 0.75 * 2900
        np.testing.assert_array_equal(dst.read(1), np.float32(2275.0))


def test_bands_default_to_those_the_model_was_trained_on(tmp_path):
    """A model trained on bands 4,3,2 of a 6-band raster reads those of a 6-band scene by
    default, all bands of a scene already cut to 3, and refuses (pointing at --bands) where it
    cannot tell. Without the training rasters' band count (older files) a model trained on the
    first 3 bands never guesses them out of a 6-band scene; with it, it reads them."""
    rng = np.random.default_rng(8)
    six = rng.integers(1, 250, (6, 70, 80)).astype("uint8")
    wide = str(write_raster(tmp_path / "six.tif", six, nodata=0,
                            transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0)))
    cut = str(write_raster(tmp_path / "cut.tif", six[[3, 2, 1]], nodata=0,
                           transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0)))
    model = unet_file(tmp_path / "m432.safetensors", source_bands=[4, 3, 2])

    def values(scene, name, **options):
        predict(scene, tmp_path / name, model=model, progress=False, **options)
        with rasterio.open(tmp_path / name) as dst:
            return dst.read(1)

    chosen = values(wide, "default.tif")
    np.testing.assert_array_equal(chosen, values(wide, "explicit.tif", bands=[4, 3, 2]))
    np.testing.assert_array_equal(chosen, values(cut, "from_cut.tif"))
    assert not np.array_equal(chosen, values(wide, "other.tif", bands=[1, 2, 3]))
    first3 = unet_file(tmp_path / "m123.safetensors")  # an older file: no raster band count
    with pytest.raises(GeoPix2PixError, match="gives 6 band.* choose 3 of its bands with --ba"):
        predict(wide, tmp_path / "x.tif", model=first3, progress=False)
    with pytest.raises(GeoPix2PixError) as caught:  # chosen: say so, not "choose bands"
        predict(wide, tmp_path / "x.tif", model=first3, progress=False, bands=[1, 2])
    assert str(caught.value) == (
        f"--bands 1,2 selects 2 band(s) of {wide} but the model takes 3 (trained on source "
        "bands [1, 2, 3]); pass 3 band numbers to --bands")
    # trained on the first 3 of 6-band rasters (recorded): the same bands of a 6-band scene,
    # all of a 3-band one, and an error for a scene of another band count
    first3 = unet_file(tmp_path / "m123_of6.safetensors", source_raster_bands=6)
    model = first3
    np.testing.assert_array_equal(values(wide, "first3.tif"),
                                  values(wide, "first3_explicit.tif", bands=[1, 2, 3]))
    values(cut, "first3_cut.tif")
    five = str(write_raster(tmp_path / "five.tif", six[:5], nodata=0,
                            transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0)))
    with pytest.raises(GeoPix2PixError, match="gives 5 band"):
        predict(five, tmp_path / "y.tif", model=model, progress=False)
    # trained on 4 of 4 bands (RGBN): an RGBA scene's alpha is never read as data
    rgba = write_raster(tmp_path / "rgba.tif", six[:4], nodata=0,
                        transform=from_origin(500000.0, 4_000_000.0, 30.0, 30.0))
    with rasterio.open(rgba, "r+") as dst:
        dst.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                           ColorInterp.alpha]
    rgba = str(rgba)
    rgbn = unet_file(tmp_path / "rgbn.safetensors", in_ch=4, source_raster_bands=4)
    with pytest.raises(GeoPix2PixError, match="gives 3 band"):
        predict(rgba, tmp_path / "z.tif", model=rgbn, progress=False)


@pytest.mark.parametrize("batch", ["0", "-3"])
def test_a_batch_of_no_windows_is_refused(tmp_path, model_file, capsys, batch):
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    code = main(["predict", scene, str(tmp_path / "o.tif"), "-m", model_file, "-q",
                 "--batch-size", batch])
    assert code == 2 and "--batch-size" in capsys.readouterr().err
    assert not (tmp_path / "o.tif").exists()


def test_band_count_error_via_cli(tmp_path, model_file, capsys):
    scene = write_scene(tmp_path / "two.tif", 40, 40, count=2)
    code = main(["predict", scene, str(tmp_path / "o.tif"), "--model", model_file, "-q"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "2 band(s)" in err and "takes 3" in err
    # fewer bands than the model takes: "choose 3 of its bands" could not be followed
    assert err.endswith("predict a scene with the training's bands, or repeat one with --bands "
                        "(e.g. 1,2,2) if that is what you mean")
    assert not (tmp_path / "o.tif").exists()


def test_crs_and_pixel_size_checks(tmp_path, model_file):
    no_crs = write_scene(tmp_path / "nocrs.tif", 40, 40, crs=None)
    with pytest.raises(GeoPix2PixError, match="no CRS"):
        predict(no_crs, tmp_path / "a.tif", model=model_file, progress=False)
    predict(no_crs, tmp_path / "a.tif", model=model_file, progress=False, allow_no_crs=True)
    coarse = write_scene(tmp_path / "coarse.tif", 60, 50,
                         transform=from_origin(500000.0, 4_000_000.0, 100.0, 100.0))
    messages: list[str] = []
    out = tmp_path / "b.tif"
    predict(coarse, out, model=model_file, progress=False, on_warning=messages.append,
            resample_to_model=True)
    assert len(messages) == 1 and "100x100" in messages[0] and "30x30" in messages[0]
    assert "predicting at the training pixel size" in messages[0]  # not "consider" it
    predict(coarse, tmp_path / "c.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert messages[1].endswith("consider --resample-to-model")
    with rasterio.open(coarse) as src, rasterio.open(out) as dst:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        values = dst.read(1)
        assert (values >= 100).all() and (values <= 3000).all()


def test_a_scene_placed_by_gcps_is_refused_or_predicted_keeping_them(tmp_path, model_file,
                                                                     capsys):
    """A raw scene georeferenced by ground control points has no CRS of its own: it is told to
    be warped first, and with --allow-no-crs its output carries the same GCPs (QGIS places it)."""
    gcps = [GroundControlPoint(row, col, 500000.0 + 30 * col, 4e6 - 30 * row, 0.0)
            for row, col in ((0, 0), (0, 40), (50, 0), (50, 40))]
    scene = write_scene(tmp_path / "raw.tif", 40, 50, transform=Affine.identity(), gcps=gcps)
    assert main(["predict", scene, str(tmp_path / "a.tif"), "-m", model_file, "-q"]) == 2
    assert capsys.readouterr().err == (
        f"Error: {scene} is placed by 4 ground control points, not on a map grid; warp it onto "
        f"one first (e.g. gdalwarp -t_srs EPSG:<code> {scene} warped.tif); or pass "
        "--allow-no-crs to predict on its pixels (the output keeps them)\n")
    for cog in (False, True):
        out = tmp_path / f"cog{cog}.tif"
        with warnings.catch_warnings():
            warnings.simplefilter("error", NotGeoreferencedWarning)
            predict(scene, out, model=model_file, progress=False, allow_no_crs=True, cog=cog)
        with rasterio.open(scene) as src, rasterio.open(out) as dst:
            assert (dst.crs, dst.transform, dst.shape) == (None, Affine.identity(), (50, 40))
            assert dst.gcps[1] == src.gcps[1] == CRS.from_epsg(32633)
            assert [(p.row, p.col, p.x, p.y) for p in dst.gcps[0]] == [
                (p.row, p.col, p.x, p.y) for p in src.gcps[0]]


def test_complex_rasters_are_refused_in_one_line(tmp_path, model_file):
    data = (np.ones((3, 40, 40)) * (1 + 2j)).astype("complex64")
    scene = write_scene(tmp_path / "slc.tif", 40, 40, dtype="complex64", data=data, nodata=None)
    with pytest.raises(GeoPix2PixError, match=r"slc.tif has complex \(complex64\) bands, which "
                                              "geopix2pix does not read; convert them"):
        predict(scene, tmp_path / "a.tif", model=model_file, progress=False)
    with pytest.raises(GeoPix2PixError, match="complex"):
        g.evaluate(scene, scene)
    with pytest.raises(GeoPix2PixError, match="complex"):
        g.export_chips(scene, scene, tmp_path / "chips", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slc.tif"]
    sentinel1 = tmp_path / "cint16.vrt"  # Sentinel-1 SLC's type, which numpy has not
    sentinel1.write_text('<VRTDataset rasterXSize="8" rasterYSize="8"><SRS>EPSG:32633</SRS>'
                         '<GeoTransform>500000,10,0,5200000,0,-10</GeoTransform>'
                         '<VRTRasterBand dataType="CInt16" band="1"/></VRTDataset>')
    with pytest.raises(GeoPix2PixError, match=r"has complex \(complex_int16\) bands"):
        g.evaluate(sentinel1, sentinel1)


def test_a_scene_inside_a_zip_is_read_through_gdal_virtual_files(tmp_path, model_file,
                                                                  monkeypatch):
    """GDAL's virtual file systems name no file on disk: GDAL, not an existence check, says
    whether they exist (absolute archive paths: GDAL's /vsizip/{/path/a.zip}/b.tif form)."""
    import zipfile

    scene = write_scene(tmp_path / "s.tif", 70, 50)
    with zipfile.ZipFile(tmp_path / "scenes.zip", "w") as archive:
        archive.write(scene, "s.tif")
    out = tmp_path / "o.tif"
    predict(f"/vsizip/{{{tmp_path / 'scenes.zip'}}}/s.tif", out, model=model_file,
            progress=False)
    monkeypatch.chdir(tmp_path)
    predict("/vsizip/scenes.zip/s.tif", tmp_path / "r.tif", model=model_file, progress=False)
    with rasterio.open(scene) as src, rasterio.open(out) as a, \
            rasterio.open(tmp_path / "r.tif") as b:
        assert (a.crs, a.transform, a.shape) == (src.crs, src.transform, src.shape)
        np.testing.assert_array_equal(a.read(), b.read())
    with pytest.raises(GeoPix2PixError, match="is not a raster GDAL can read"):
        predict("/vsizip/scenes.zip/missing.tif", tmp_path / "m.tif", model=model_file,
                progress=False)

