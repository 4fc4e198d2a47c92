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
from geopix2pix.prediction.engine.windows import make_layout, point_reflect, read_strip
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


def test_a_scene_storing_other_values_than_the_training_sources_gets_a_warning(tmp_path,
                                                                                model_file):
    reflectance = write_scene(tmp_path / "r.tif", 40, 40, dtype="float32", nodata=None,
                              data=np.full((3, 40, 40), 0.05, "float32"))
    messages: list[str] = []
    predict(reflectance, tmp_path / "a.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert messages == [f"{reflectance}: it is float32 but the model was trained on uint8 "
                        "sources; its values are used as stored and scaled as the training "
                        "rasters' were, so check that they are in the same units, and convert "
                        "them to the training sources' first if not (gdal_translate -scale / "
                        "-unscale)"]
    g.predict([reflectance], out_dir=tmp_path / "many", model=model_file, progress=False,
              on_warning=messages.append)
    assert len(messages) == 2 and messages[1].endswith(messages[0])  # per scene, named
    with rasterio.open(write_scene(tmp_path / "u.tif", 40, 40), "r+") as ds:  # uint8, as trained
        ds.units = ("DN", "DN", "DN")  # the model file records none: nothing to compare
        like_training = ds.name
    predict(like_training, tmp_path / "b.tif", model=model_file, progress=False,
            on_warning=messages.append)
    assert len(messages) == 2


def test_a_scene_in_other_units_or_scale_than_the_training_sources_gets_a_warning(tmp_path):
    from geopix2pix.models import load_model

    model = load_model(unet_file(tmp_path / "m.safetensors"))
    model.metadata["source"].update(units=["reflectance"] * 3, scales=[1e-4] * 3,
                                    offsets=[0.0] * 3)
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with rasterio.open(scene, "r+") as ds:
        ds.units = ("reflectance", "reflectance", "dB")
        ds.scales = (1e-4, 2e-4, 1e-4)
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model, progress=False, on_warning=messages.append)
    assert messages == [f"{scene}: band 3 unit dB (training sources: reflectance); band 2 scale "
                        "0.0002 (training sources: 0.0001); its values are used as stored and "
                        "scaled as the training rasters' were, so check that they are in the "
                        "same units, and convert them to the training sources' first if not "
                        "(gdal_translate -scale / -unscale)"]


def test_a_model_of_a_repeated_band_warns_only_when_the_user_repeats_one(tmp_path):
    """A model trained on --source-bands 1,1,1 (a grey band fed to three inputs) reads a grey
    scene the same way without a word; --bands 1,1,2 given at predict is said (a slip?)."""
    model = unet_file(tmp_path / "m.safetensors", source_bands=[1, 1, 1],
                      source_raster_bands=1)
    grey = write_scene(tmp_path / "grey.tif", 40, 40, count=1)
    messages: list[str] = []
    predict(grey, tmp_path / "a.tif", model=model, progress=False, on_warning=messages.append)
    assert not any("more than once" in m for m in messages), messages
    rgb = write_scene(tmp_path / "rgb.tif", 40, 40)
    predict(rgb, tmp_path / "b.tif", model=model, progress=False, bands=[1, 1, 2],
            on_warning=messages.append)
    assert [m for m in messages if "more than once" in m] == [
        f"{rgb}: --bands 1,1,2 reads band 1 more than once: several bands get the same values "
        "(as a grey scene fed to a model of more bands does); check that it is not a slip for "
        "another band"]


def test_a_unit_difference_names_the_scenes_band_not_the_models_input(tmp_path):
    """--bands 2,3,1: the scene's band 1 is the model's input 3; a tester's warning called the
    scene's band 2 'band 1'."""
    from geopix2pix.models import load_model

    model = load_model(unet_file(tmp_path / "m.safetensors"))
    model.metadata["source"].update(units=["metre"] * 3, scales=[1.0] * 3, offsets=[0.0] * 3)
    scene = write_scene(tmp_path / "s.tif", 40, 40)
    with rasterio.open(scene, "r+") as ds:
        ds.units = ("W/m2", "metre", "metre")
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model, progress=False, bands=[2, 3, 1],
            on_warning=messages.append)
    assert len(messages) == 1 and messages[0].startswith(
        f"{scene}: band 1 (model input 3) unit W/m2 (training sources: metre); its values")


def test_scaled_integers_fed_to_a_model_of_plain_values_are_told_how_to_convert(tmp_path):
    """A tester's Sentinel-2 scene stored as uint16 DNs with a declared scale of 1e-4, fed to a
    model trained on float32 reflectance: one warning, saying how to apply that scale."""
    from geopix2pix.models import load_model

    model = load_model(unet_file(tmp_path / "m.safetensors"))
    model.metadata["source"].update(dtype="float32", units=["reflectance"] * 3,
                                    scales=[1.0] * 3, offsets=[0.0] * 3)
    scene = write_scene(tmp_path / "s2.tif", 40, 40, dtype="uint16",
                        data=np.full((3, 40, 40), 1200, "uint16"))
    with rasterio.open(scene, "r+") as ds:
        ds.units = ("reflectance",) * 3
        ds.scales = (1e-4,) * 3
    messages: list[str] = []
    predict(scene, tmp_path / "a.tif", model=model, progress=False, on_warning=messages.append)
    assert messages == [
        f"{scene}: it is uint16 but the model was trained on float32 sources; band 1 scale "
        "0.0001 (training sources: 1); band 2 scale 0.0001 (training sources: 1); band 3 scale "
        "0.0001 (training sources: 1); its values are used as stored and scaled as the training "
        f"rasters' were, so convert them first: `gdal_translate -unscale -ot Float32 {scene} "
        f"{tmp_path / 's2'}_unscaled.tif` applies the scale and offset its bands declare"]


def test_centre_scaled_input_ignores_the_absolute_level(tmp_path):
    """With ``centre`` source scaling (DEM inputs) each window is centred on its own mean, so a
    scene raised by a constant predicts the same; the window rows cross batches (batch 7)."""
    rng = np.random.default_rng(3)
    base = np.clip(rng.normal(100, 20, (1, 150, 211)), 40, 160).astype("float32")
    low = write_scene(tmp_path / "low.tif", 211, 150, count=1, dtype="float32", data=base)
    high = write_scene(tmp_path / "high.tif", 211, 150, count=1, dtype="float32",
                       data=base + 500)
    model = loaded(ConvModel(in_ch=1), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("centre", (-50.0,), (50.0,)))
    outs = [tmp_path / "a.tif", tmp_path / "b.tif"]
    for scene, out in zip((low, high), outs):
        predict(scene, out, model=model, progress=False, batch_size=7)
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        first, second = a.read(1), b.read(1)
    assert np.isfinite(first).all() and first.std() > 0.01
    np.testing.assert_allclose(first, second, atol=1e-5)
    # the percentile scaling of the same model does see the level (the test can fail)
    model = loaded(ConvModel(in_ch=1), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("percentile", (0.0,), (700.0,)))
    for scene, out in zip((low, high), outs):
        predict(scene, out, model=model, progress=False, batch_size=7, overwrite=True)
    with rasterio.open(outs[0]) as a, rasterio.open(outs[1]) as b:
        assert np.abs(a.read(1) - b.read(1)).mean() > 1e-2


class Gradient(torch.nn.Module):
    """The east-west difference of band 1 (zero-sum 3x3 kernel): constant on a tilted plane."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]]]) / 8)

    def forward(self, x):
        return self.conv(x)


def test_centre_scaled_input_is_extrapolated_past_the_scene_edges(tmp_path):
    """A centre-scaled (elevation) source is padded past the scene's edges by point reflection,
    2 * edge - mirror, which continues the terrain's slope as `gdaldem -compute_edges` does: on a
    tilted plane the slope comes out the same on the edge pixels as inside, where the mirror
    would make it flat there (the test can fail: the mirror's edge columns are 0)."""
    rows, cols = np.mgrid[0:90, 0:130]
    plane = (1000 + 0.3 * cols + 0.15 * rows).astype("float32")[None]
    scene = write_scene(tmp_path / "plane.tif", 130, 90, count=1, dtype="float32", data=plane,
                        nodata=None)
    model = loaded(Gradient(), in_ch=1, target_scaling=IDENTITY,
                   source_scaling=Scaling("centre", (-50.0,), (50.0,)))
    predict(scene, tmp_path / "slope.tif", model=model, progress=False, blend="none",
            overlap=0.5)
    with rasterio.open(tmp_path / "slope.tif") as out:
        slope = out.read(1)
    inside = slope[10:-10, 10:-10]
    assert inside.std() < 1e-6 and abs(inside.mean()) > 1e-3
    np.testing.assert_allclose(slope, inside.mean(), atol=1e-5)


def test_point_reflection_extrapolates_past_a_scene_smaller_than_the_padding(tmp_path):
    """Padding wider than the scene (a 4 x 5 scene in 16-pixel windows): the point reflection
    goes on extrapolating the plane (a mirror of a mirror would zig-zag); a pixel computed
    from a void is invalid."""
    rows, cols = np.mgrid[0:4, 0:5]
    plane = (100 + 2.0 * cols + 3.0 * rows).astype("float32")
    scene = write_scene(tmp_path / "tiny.tif", 5, 4, count=1, dtype="float32",
                        data=plane[None], nodata=None)
    with rasterio.open(scene) as dataset:
        strip = read_strip(dataset, [1], -10, [-10, -2, 6], 16)
    data, valid = point_reflect(strip, 4, 5)
    rr, cc = np.mgrid[-10:6, -10:22]
    np.testing.assert_allclose(data[0], 100 + 2.0 * cc + 3.0 * rr)
    assert valid.all()
    voided = plane.copy()
    voided[1, 1] = -9999
    scene = write_scene(tmp_path / "void.tif", 5, 4, count=1, dtype="float32",
                        data=voided[None], nodata=-9999)
    with rasterio.open(scene) as dataset:
        strip = read_strip(dataset, [1], -10, [-10, -2, 6], 16)
    valid = point_reflect(strip, 4, 5)[1]

    def at(pixel: tuple[int, int]) -> bool:  # scene coordinates (the strip starts at -10, -10)
        return bool(valid[pixel[0] + 10, pixel[1] + 10])

    assert not at((1, 1)) and at((0, 0)) and at((2, 2))
    assert not at((-1, 1)) and not at((1, -1))  # 2 * edge - the void
    assert at((-1, 3)) and at((3, -1)) and at((-3, 3))


@pytest.mark.parametrize("height, width, row, cols, size", [
    (37, 45, -12, [-12, 4, 20], 32),  # the first window row: in part inside the scene
    (37, 45, 20, [-12, 4, 20], 32),  # the last: past its bottom and right edges
    (70, 40, -48, [-48, -16], 64),  # padding wider than the strip's part inside the scene
    (70, 40, 40, [-48, 8], 64),  # ... at the bottom and right
    (37, 45, -4, [-4, 12, 28], 16),  # padding narrower than the scene's part in the strip
    (300, 40, 192, [-8, 24], 128),  # a tall scene's last row of windows
    (5, 4, 4, [-12, 2], 16),  # starts inside a scene smaller than its padding
])
def test_point_reflection_is_the_whole_scenes_odd_reflection(tmp_path, height, width, row,
                                                              cols, size):
    """Every strip, wherever it starts, is padded exactly as numpy's odd reflection of the whole
    scene (values and validity; a terrain that is no plane, with voids near the edges)."""
    rng = np.random.default_rng(height)
    rows, columns = np.mgrid[0:height, 0:width]
    scene = (0.05 * (rows - 9.0) ** 2 + 0.03 * columns ** 2 + rng.normal(0, 1, (height, width))
             ).astype("float64")
    valid = np.ones((height, width), bool)
    valid[min(2, height - 1), min(1, width - 1)] = valid[-2, -1] = False
    path = write_scene(tmp_path / "s.tif", width, height, count=1, dtype="float64",
                       data=np.where(valid, scene, -9999)[None], nodata=-9999)
    with rasterio.open(path) as dataset:
        strip = read_strip(dataset, [1], row, cols, size)
    data, got_valid = point_reflect(strip, height, width)
    pad = 3 * size
    whole = np.pad(np.where(valid, scene, np.nan), pad, mode="reflect", reflect_type="odd")
    window = (slice(row + pad, row + pad + size), slice(cols[0] + pad, cols[0] + pad + strip.span))
    expected = whole[window]
    np.testing.assert_array_equal(got_valid, np.isfinite(expected))
    np.testing.assert_allclose(data[0][got_valid], expected[got_valid], rtol=1e-12, atol=1e-9)


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
