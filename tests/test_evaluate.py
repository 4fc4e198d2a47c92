"""`geopix2pix evaluate` on known arrays: formulas, masks, block streaming, warping, classes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from rasterio.transform import from_origin

from geopix2pix import metrics
from geopix2pix.cli import main
from geopix2pix.evaluation.evaluate import evaluate

T = from_origin(500000.0, 4_000_000.0, 10.0, 10.0)


def _write(path, data, nodata=None, transform=T, crs="EPSG:32633"):
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype=data.dtype, crs=crs, transform=transform,
                       nodata=nodata) as dst:
        dst.write(data)
    return str(path)


def _smooth(h=80, w=90, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.sin(xx / 7.0) * 50 + np.cos(yy / 5.0) * 30 + rng.normal(0, 5, (h, w)) + 100


def test_identical_rasters(tmp_path):
    ref = _write(tmp_path / "r.tif", _smooth().astype("float32"))
    report = evaluate(ref, ref, json_path=tmp_path / "e.json")
    band = report.bands[0]
    assert band.mae == 0 and band.rmse == 0 and math.isinf(band.psnr)
    assert band.ssim == pytest.approx(1.0)
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["bands"][0]["psnr"] == "inf" and saved["valid_pixels"] == 80 * 90


def test_uint8_offset_matches_formula_with_dtype_range(tmp_path):
    ref = np.clip(_smooth(), 10, 240).astype("uint8")
    r = _write(tmp_path / "r.tif", ref)
    p = _write(tmp_path / "p.tif", ref + 5)
    report = evaluate(p, r)
    band = report.bands[0]
    assert band.mae == pytest.approx(5) and band.rmse == pytest.approx(5)
    assert band.data_range == 255
    assert band.psnr == pytest.approx(10 * math.log10(255**2 / 25))
    assert "uint8" in report.data_range_rule


def test_float_range_is_references_and_invalid_pixels_ignored(tmp_path):
    ref = _smooth().astype("float32")
    pred = ref + 2.0
    ref_nd = ref.copy()
    ref_nd[:10] = -9999
    pred[70:] = np.nan  # invalid in the prediction (float without nodata: NaN)
    r = _write(tmp_path / "r.tif", ref_nd, nodata=-9999)
    p = _write(tmp_path / "p.tif", pred)
    report = evaluate(p, r)
    band = report.bands[0]
    valid = ref[10:70]
    assert report.valid_pixels == valid.size
    assert band.data_range == pytest.approx(float(valid.max() - valid.min()), rel=1e-6)
    assert band.mae == pytest.approx(2.0, rel=1e-5)
    assert band.psnr == pytest.approx(10 * math.log10(band.data_range**2 / 4), rel=1e-5)


def test_a_constant_float_band_has_a_range_of_1_and_says_so(tmp_path):
    """A tester read 'range 1' for a constant band under a header promising max - min."""
    ref = np.full((64, 64), 6.0, np.float32)
    report = evaluate(_write(tmp_path / "p.tif", ref + 0.5), _write(tmp_path / "r.tif", ref))
    assert report.bands[0].data_range == 1.0
    assert report.data_range_rule.endswith("per band; 1 where a band is constant")
    assert report.bands[0].psnr == pytest.approx(10 * math.log10(1 / 0.25), rel=1e-5)
    varied = evaluate(_write(tmp_path / "q.tif", _smooth().astype("float32")),
                      _write(tmp_path / "s.tif", _smooth().astype("float32")))
    assert "constant" not in varied.data_range_rule


def test_the_table_shows_whole_band_descriptions_in_aligned_columns(tmp_path):
    """A tester read 'hillshade az31' for 'hillshade az315 alt45'."""
    ref = _smooth().astype("float32")
    pred = _write(tmp_path / "p.tif", ref + 1)
    with rasterio.open(pred, "r+") as ds:
        ds.set_band_description(1, "hillshade az315 alt45")
    table = evaluate(pred, _write(tmp_path / "r.tif", ref)).table().splitlines()
    header, band, overall = table[-3:]
    assert band.startswith("1 hillshade az315 alt45 1 ")
    assert len(header) == len(band) == len(overall)  # numbers end under their headers


def test_streamed_ssim_equals_whole_raster_ssim(tmp_path):
    ref = _smooth(70, 75)
    pred = ref + np.random.default_rng(3).normal(0, 8, ref.shape)
    r = _write(tmp_path / "r.tif", np.stack([ref, ref * 2]).astype("float64"))
    p = _write(tmp_path / "p.tif", np.stack([pred, pred * 2]).astype("float64"))
    small = evaluate(p, r, block=16)
    whole = evaluate(p, r, block=1024)
    rng = torch.tensor([b.data_range for b in whole.bands])
    direct = metrics.masked_ssim(torch.from_numpy(np.stack([pred, pred * 2]))[None],
                                 torch.from_numpy(np.stack([ref, ref * 2]))[None], None, rng)
    for a, b, c in zip(small.bands, whole.bands, direct.tolist()):
        assert a.ssim == pytest.approx(b.ssim, abs=1e-9) and b.ssim == pytest.approx(c, abs=1e-7)
        assert 0 < a.ssim < 1
    assert small.overall["mae"] == pytest.approx(whole.overall["mae"])


def test_reference_on_another_grid_is_warped(tmp_path):
    big = _smooth(100, 100).astype("float32")
    r = _write(tmp_path / "r.tif", big)
    # The prediction covers rows/cols 10.. of the reference's grid: an exact pixel offset.
    shifted = from_origin(500000.0 + 100.0, 4_000_000.0 - 100.0, 10.0, 10.0)
    p = _write(tmp_path / "p.tif", big[10:60, 10:70].copy(), transform=shifted)
    report = evaluate(p, r)
    assert report.warped and report.valid_pixels == 50 * 60
    assert report.bands[0].mae == pytest.approx(0, abs=1e-4)


def test_categorical_accuracy_and_iou(tmp_path):
    ref = np.zeros((20, 20), dtype="uint8")
    ref[:, 10:] = 2
    ref[:5] = 255  # nodata
    pred = ref.copy()
    pred[5:10, 5:10] = 2  # 25 class-0 pixels predicted as 2
    r = _write(tmp_path / "r.tif", ref, nodata=255)
    p = _write(tmp_path / "p.tif", pred, nodata=255)
    report = evaluate(p, r, categorical=True)
    assert report.valid_pixels == 300
    assert report.classes == [0.0, 2.0]
    assert report.pixel_accuracy == pytest.approx(275 / 300)
    assert report.iou == pytest.approx([125 / 150, 150 / 175])


def test_categorical_needs_class_codes_not_floats(tmp_path, capsys):
    """A float map would make each of its values a class (thousands of 'classes')."""
    ref = _write(tmp_path / "r.tif", np.arange(400, dtype="uint8").reshape(20, 20) % 4)
    noisy = _write(tmp_path / "p.tif", (np.arange(400).reshape(20, 20) % 4 + 0.3)
                   .astype("float32"))
    assert main(["evaluate", noisy, ref, "--categorical"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"Error: --categorical: {noisy} holds float32 values, not class codes; " \
        "compare class maps of an integer type, or drop --categorical to compare values"
    assert main(["evaluate", noisy, ref]) == 0  # as values: fine


def test_a_16_bit_raster_is_scored_on_its_values_range_as_a_float_one(tmp_path):
    """The same heights with the same 150 m errors, stored as int16 and as float32, get the
    same PSNR and SSIM (int16's dtype range, 65,535, gave 52.8 dB and SSIM 0.994 against the
    float's 27.7 dB and 0.394); a uint8 image keeps 0..255."""
    rng = np.random.default_rng(3)
    dem = np.round(_smooth() * 20).astype(np.int16)
    noisy = (dem + np.round(rng.normal(0, 150, dem.shape))).astype(np.int16)
    scores = {}
    for kind in ("int16", "float32"):
        ref = _write(tmp_path / f"r_{kind}.tif", dem.astype(kind))
        pred = _write(tmp_path / f"p_{kind}.tif", noisy.astype(kind))
        report = evaluate(pred, ref)
        scores[kind] = (report.bands[0].psnr, report.bands[0].ssim, report.bands[0].data_range)
        assert report.data_range_rule.startswith("the reference's max - min over the compared")
    assert scores["int16"] == pytest.approx(scores["float32"])
    assert scores["int16"][2] == float(dem.max() - dem.min())


def test_categorical_refuses_values_with_more_codes_than_classes(tmp_path, capsys):
    """An object-id raster (40,000 distinct int32 values) passed with --categorical would need
    a 40,000 x 40,000 count (12.8 GB): one line instead; 256 codes are still classes."""
    ids = np.arange(40_000, dtype="int32").reshape(200, 200)
    pred, ref = _write(tmp_path / "p.tif", ids), _write(tmp_path / "r.tif", ids)
    assert main(["evaluate", pred, ref, "--categorical"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --categorical: {pred} and {ref} hold more than 256 distinct values on the "
        "compared pixels, which are values (or object ids), not class codes; drop --categorical "
        "to compare them as values")
    codes = _write(tmp_path / "c.tif", (np.arange(40_000) % 256).astype("int32").reshape(200, 200))
    assert len(evaluate(codes, codes, categorical=True).classes) == 256


def test_categorical_codes_of_a_million_print_whole(tmp_path):
    """Codes 1234567 and 1234571 print as such (the table's %g gave 1.23457e+06 for both)."""
    codes = np.where(np.arange(100).reshape(10, 10) < 50, 1234567, 1234571).astype("int32")
    path = _write(tmp_path / "c.tif", codes)
    table = evaluate(path, path, categorical=True).table()
    assert "   1234567   1.0000" in table and "   1234571   1.0000" in table


def test_confusion_matrix_leaves_the_callers_mask_as_it_was():
    pred, ref = torch.tensor([[[[1, 2], [3, 9]]]]), torch.tensor([[[[1, 2], [3, 3]]]])
    valid = torch.ones_like(pred, dtype=torch.bool)
    assert metrics.confusion_matrix(pred, ref, valid, [1, 2, 3]).trace() == 3
    assert valid.all()


def test_a_reference_in_a_local_crs_beside_a_prediction_on_the_earth_is_one_line(tmp_path,
                                                                                  capsys):
    """PROJ cannot relate a local engineering CRS to any other: one line naming the file and
    what to do, not PROJ's 'Cannot find coordinate operations' in JSON; two rasters in one
    local CRS on different grids are still compared (a warp within that CRS)."""
    local = rasterio.crs.CRS.from_wkt('LOCAL_CS["site grid",UNIT["metre",1],'
                                      'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    data = np.clip(_smooth(), 0, 255).astype("uint8")
    pred = _write(tmp_path / "p.tif", data)
    ref = _write(tmp_path / "r.tif", data, crs=local)
    assert main(["evaluate", pred, ref]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: {ref} is in a local engineering CRS, which places it on no map (aligning it "
        f"with {pred}, in another CRS, needs its place on the Earth); assign its real CRS first "
        f"(e.g. gdal_edit.py -a_srs EPSG:<code> {ref})")
    moved = _write(tmp_path / "m.tif", data, crs=local,
                   transform=from_origin(500005.0, 4_000_000.0, 10.0, 10.0))
    assert evaluate(moved, ref).warped


def test_cli_prints_table_and_json(tmp_path, capsys):
    ref = _write(tmp_path / "r.tif", np.clip(_smooth(), 0, 255).astype("uint8"))
    code = main(["evaluate", ref, ref, "--json", str(tmp_path / "e.json")])
    out = capsys.readouterr().out
    assert code == 0 and "PSNR" in out and "overall" in out and "inf" in out
    assert json.loads((tmp_path / "e.json").read_text())["overall"]["mae"] == 0
    two = _write(tmp_path / "two.tif", np.zeros((2, 5, 5), "uint8"))
    assert main(["evaluate", two, ref]) == 2


def test_json_is_not_written_over_a_file_without_overwrite_nor_ever_over_an_input(tmp_path,
                                                                                  capsys):
    ref = _write(tmp_path / "r.tif", np.clip(_smooth(), 0, 255).astype("uint8"))
    before = Path(ref).read_bytes()
    for target in (ref, str(tmp_path / "r.tif")):
        assert main(["evaluate", ref, ref, "--json", str(target), "--overwrite"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "being compared" in err
    assert Path(ref).read_bytes() == before
    notes = tmp_path / "notes.json"
    notes.write_text("mine")
    assert main(["evaluate", ref, ref, "--json", str(notes)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert notes.read_text() == "mine"
    assert main(["evaluate", ref, ref, "--json", str(notes), "--overwrite"]) == 0
    assert json.loads(notes.read_text())["overall"]["mae"] == 0


def _no_valid(path, bands="1"):
    return (f"Error: {path} has no valid pixel in band(s) {bands} (all are nodata, NaN or "
            "masked), so there is nothing to compare; check that it is the right file, and its "
            "nodata value")


@pytest.mark.parametrize("categorical", [False, True])
def test_rasters_without_a_common_valid_pixel_say_which_has_none(tmp_path, capsys, categorical):
    """The rasters overlap: the message names the one without valid pixel, or says that their
    valid pixels never meet, instead of asking to check that they overlap."""
    data = np.clip(_smooth(), 1, 254).astype("uint8")
    ref = _write(tmp_path / "r.tif", data, nodata=0)
    empty = _write(tmp_path / "e.tif", np.zeros(data.shape, "uint8"), nodata=0)  # all nodata
    left, right = data.copy(), data.copy()
    left[:, 45:], right[:, :45] = 0, 0
    left, right = _write(tmp_path / "left.tif", left, 0), _write(tmp_path / "right.tif", right, 0)
    far = _write(tmp_path / "far.tif", data, nodata=0,
                 transform=from_origin(600000.0, 4_000_000.0, 10.0, 10.0))
    flag = ["--categorical"] if categorical else []
    for pred, reference, message in [
        (empty, ref, _no_valid(empty)), (ref, empty, _no_valid(empty)),
        (left, right, f"Error: {left} and {right} have no valid pixel in common: each has valid "
                      "pixels, but never where the other does; check their nodata values and "
                      "masks"),
        (ref, far, f"Error: {far} has no valid pixel within the extent of {ref}; check that "
                   "they overlap"),
    ]:
        assert main(["evaluate", pred, reference, *flag]) == 2
        assert capsys.readouterr().err.strip() == message


def test_categorical_codes_absent_from_the_reference_are_a_warning(tmp_path, capsys):
    """A regressed class map (codes 0, 107..131, 255) against a {0, 255} reference."""
    ref = np.zeros((30, 30), "uint8")
    ref[:, 15:] = 255
    pred = ref.copy()
    pred[:25, :10] = (107 + np.arange(25))[:, None]  # 250 of the 900 pixels
    r, p = _write(tmp_path / "r.tif", ref), _write(tmp_path / "p.tif", pred)
    report = evaluate(p, r, categorical=True)
    assert report.classes == [0, *range(107, 132), 255]
    warning = (f"{p} holds 25 class code(s) that {r} does not (107-131), on 27.8% of the "
               "compared pixels, all counted as errors; check that both rasters use the same "
               "class codes")
    assert report.warnings == [warning]
    assert main(["evaluate", p, r, "--categorical"]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"warning: {warning}"]
    assert "pixel accuracy" in captured.out
    assert evaluate(r, p, categorical=True).warnings == []  # codes the prediction misses: fine
    assert evaluate(p, r).warnings == []  # values: no classes


def test_code_text_groups_runs():
    from geopix2pix.evaluation.evaluate import _code_text

    assert _code_text([0, 107, 108, 109, 255]) == "0, 107-109, 255"
    assert _code_text(list(range(0, 20, 2))) == "0, 2, 4, 6, 8, 10, ..."


def test_json_class_codes_are_integers(tmp_path):
    ref = np.zeros((10, 10), "uint16")
    ref[:, 5:] = 1000
    r = _write(tmp_path / "r.tif", ref)
    report = evaluate(r, r, categorical=True, json_path=tmp_path / "e.json")
    text = (tmp_path / "e.json").read_text()
    assert '"classes": [\n    0,\n    1000\n  ],' in text
    assert all(type(c) is int for c in report.classes)
    assert report.warnings == []


def test_rasters_storing_different_kinds_of_values_get_a_warning(tmp_path, capsys):
    data = np.random.default_rng(7).random((1, 20, 20)).astype("float32")
    ref = str(write_raster(tmp_path / "r.tif", data))
    pred = str(write_raster(tmp_path / "p.tif", (data * 255).astype("uint8")))
    assert main(["evaluate", pred, ref]) == 0
    assert capsys.readouterr().err == (f"warning: {pred} is uint8 but {ref} is float32: values "
                                       "are compared as stored, so check that both are in the "
                                       "same units\n")
    as_float64 = str(write_raster(tmp_path / "d.tif", data.astype("float64")))
    assert evaluate(as_float64, ref).warnings == []


def test_rasters_whose_values_mean_other_quantities_get_a_warning(tmp_path):
    data = np.random.default_rng(8).integers(0, 5000, (1, 20, 20)).astype("uint16")
    pred = str(write_raster(tmp_path / "p.tif", data))
    ref = str(write_raster(tmp_path / "r.tif", data))
    with rasterio.open(pred, "r+") as ds:
        ds.scales = (2e-4,)
    assert evaluate(pred, ref).warnings == [
        f"{pred}: band 1 scale 0.0002 ({ref}: 1): values are compared as stored, so check "
        "that both are in the same units"]


def test_bands_compared_in_order_but_described_differently_get_a_warning(tmp_path):
    data = np.random.default_rng(9).integers(100, 5000, (2, 20, 20)).astype("uint16")
    pred = str(write_raster(tmp_path / "p.tif", data, descriptions=("B04", "B03")))
    ref = str(write_raster(tmp_path / "r.tif", data, descriptions=("B02", "B03")))
    assert evaluate(pred, ref).warnings == [
        "bands compared in order are described differently: 1 (B04) with 1 (B02); choose "
        "the reference's with --reference-bands"]
    assert evaluate(pred, ref, reference_bands=[1, 2]).warnings == []  # as asked


def test_class_maps_compared_as_numbers_get_a_hint_to_pass_categorical(tmp_path):
    """Two paletted rasters (a categorical model's prediction and its land cover reference)
    compared without --categorical: told to pass it, since MAE of class codes means nothing."""
    codes = np.random.default_rng(0).choice([10, 20, 40], (1, 32, 32)).astype("uint8")
    paths = [write_raster(tmp_path / f"{name}.tif", codes) for name in ("pred", "ref")]
    for path in paths:
        with rasterio.open(path, "r+") as dst:
            dst.write_colormap(1, {10: (255, 0, 0, 255), 20: (0, 255, 0, 255),
                                   40: (0, 0, 255, 255)})
    hint = "look like class maps (integers, one with a colour table): their codes are " \
           "compared as numbers; pass --categorical for pixel accuracy and per-class IoU"
    assert any(hint in w for w in evaluate(*paths).warnings)
    assert not any(hint in w for w in evaluate(*paths, categorical=True).warnings)
    plain = write_raster(tmp_path / "plain.tif", codes)  # a land cover map without colours
    assert any(hint in w for w in evaluate(paths[0], plain).warnings)
    values = write_raster(tmp_path / "values.tif", codes.astype("float32"))  # values: no hint
    assert not any(hint in w for w in evaluate(paths[0], values).warnings)
    assert not any(hint in w for w in evaluate(plain, plain).warnings)  # no colour table

