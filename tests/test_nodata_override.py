"""A nodata value declared for a raster that has none (or a wrong one): export-chips'
--source-nodata/--target-nodata, predict's --source-nodata, evaluate's --nodata and
--reference-nodata read the raster exactly as if its file carried that tag; an untagged raster
that holds a common fill value is warned of (predict's side: test_nodata_override_predict)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import write_raster

import geopix2pix as g
from geopix2pix.cli import main
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import open_raster, read_window, warped_view
from geopix2pix.raster.nodata import Override

VOID = (slice(10, 40), slice(70, 110))  # 30 x 40 pixels of a 128 x 128 DEM
VOID_SHARE = "7.32"  # 1200 / 16384 pixels, in %


def _dem() -> np.ndarray:
    y, x = np.mgrid[0:128, 0:128]
    dem = (500 + 3 * x + 2 * y + 10 * np.sin(x / 7)).astype("float32")
    dem[VOID] = -9999
    return dem


def _pair(folder: Path, nodata=None, name="dem") -> tuple[Path, Path]:
    """A float32 DEM with a -9999 void (tagged `nodata`) and a uint8 shading of it (tagged 0)."""
    dem = _dem()
    shade = np.clip((dem - 400) / 3, 1, 250).astype("uint8")
    shade[VOID] = 0
    source = write_raster(folder / f"{name}.tif", dem, nodata=nodata)
    target = folder / "shade.tif"
    if not target.exists():
        write_raster(target, shade, nodata=0)
    return source, target


def _export(source, target, out, **options):
    return g.export_chips(source, target, out, chip_size=64, max_nodata=0.5, workers=0,
                          progress=False, **options)


def _chips(folder: Path) -> dict[str, tuple]:
    """Each chip file: (nodata tag, values, GDAL's mask)."""
    found = {}
    for path in sorted(folder.rglob("*.tif")):
        with rasterio.open(path) as chip:
            found[str(path.relative_to(folder))] = (chip.nodata, chip.read(), chip.read_masks())
    return found


def _fill_warning(path, option="--source-nodata", share=VOID_SHARE, value="-9999",
                  why="a common fill value") -> str:
    return (f"{path} has no nodata value, but {share} % of its pixels are {value}, {why}: if "
            f"those are voids, pass {option} {value}")


def test_an_untagged_dem_given_its_fill_value_gives_the_chips_of_the_tagged_dem(tmp_path):
    tagged, target = _pair(tmp_path, nodata=-9999, name="tagged")
    untagged, _ = _pair(tmp_path, name="untagged")
    one = _export(tagged, target, tmp_path / "one")
    two = _export(untagged, target, tmp_path / "two", source_nodata=-9999)
    assert one.warnings == two.warnings == [] and one.kept == two.kept
    first, second = _chips(tmp_path / "one"), _chips(tmp_path / "two")
    assert first.keys() == second.keys() and len(first) == 8
    for name, (nodata, values, mask) in first.items():
        assert second[name][0] == nodata
        assert np.array_equal(second[name][1], values)
        assert np.array_equal(second[name][2], mask)
    nodata, values, mask = second["source/p000_r000000_c000064.tif"]  # the void's chip
    assert nodata == -9999 and (mask == 0).sum() == 1200 and (values == -9999).sum() == 1200
    infos = [json.loads((tmp_path / n / "dataset.json").read_text()) for n in ("one", "two")]
    assert infos[0]["source"] == infos[1]["source"]  # nodata, statistics: all the same
    assert infos[1]["source"]["nodata"] == -9999 and infos[1]["source"]["stats"][0]["min"] > 0
    assert infos[1]["options"]["source_nodata"] == -9999
    assert infos[1]["options"]["target_nodata"] is None
    assert (infos[1]["pairs"][0]["source_nodata"], infos[1]["pairs"][0]["target_nodata"]) == (
        -9999, 0)


def test_the_same_through_worker_processes_and_the_command_line(tmp_path, capsys):
    tagged, target = _pair(tmp_path, nodata=-9999, name="tagged")
    untagged, _ = _pair(tmp_path, name="untagged")
    _export(tagged, target, tmp_path / "one")
    assert main(["export-chips", str(untagged), str(target), "-o", str(tmp_path / "two"),
                 "--chip-size", "64", "--max-nodata", "0.5", "--workers", "2", "-q",
                 "--source-nodata", "-9999"]) == 0
    assert "warning" not in capsys.readouterr().err
    first, second = _chips(tmp_path / "one"), _chips(tmp_path / "two")
    assert first.keys() == second.keys()
    assert all(np.array_equal(first[n][1], second[n][1]) and first[n][0] == second[n][0]
               for n in first)


def test_an_untagged_dem_with_a_fill_value_is_warned_of_once_per_command(tmp_path, capsys):
    untagged, target = _pair(tmp_path, name="untagged")
    with pytest.warns(g.GeoPix2PixWarning) as caught:
        summary = _export(untagged, target, tmp_path / "one")
    assert summary.warnings == [_fill_warning(untagged)]
    assert [str(w.message) for w in caught] == [_fill_warning(untagged)]
    with rasterio.open(tmp_path / "one" / "source" / "p000_r000000_c000064.tif") as chip:
        assert np.isnan(chip.nodata) and (chip.read() == -9999).sum() == 1200  # as it was
    assert main(["export-chips", str(untagged), str(target), "-o", str(tmp_path / "two"),
                 "--chip-size", "64", "--max-nodata", "0.5", "--workers", "0", "-q"]) == 0
    assert capsys.readouterr().err.splitlines() == [f"warning: {_fill_warning(untagged)}"]


@pytest.mark.parametrize("dtype, fill, option", [
    ("uint16", 0, "--target-nodata"), ("uint16", 65535, "--target-nodata"),
    ("int16", -32768, "--target-nodata"), ("float32", -3.4028234663852886e+38, "--target-nodata"),
])
def test_other_common_fill_values_are_warned_of_naming_the_option(tmp_path, dtype, fill, option):
    source, _ = _pair(tmp_path, nodata=-9999)
    data = np.full((128, 128), 300, dtype)
    data[:2, :] = fill  # 256 pixels: 1.56 %
    data[2, :10] = fill  # and 10 more: 1.62 %
    target = write_raster(tmp_path / "t.tif", data)
    with pytest.warns(g.GeoPix2PixWarning):
        summary = _export(source, target, tmp_path / "out")
    shown = "-3.4028235e+38" if dtype == "float32" else str(fill)
    assert summary.warnings == [_fill_warning(target, option, "1.62", shown)]
    again = _export(source, target, tmp_path / "again", **{option[2:].replace("-", "_"): float(
        shown)})  # the value as the warning writes it
    assert again.warnings == []
    with rasterio.open(tmp_path / "again" / "target" / "p000_r000000_c000000.tif") as chip:
        assert (chip.read_masks() == 0).sum() == 2 * 64 + 10


def test_uint8_zeros_and_a_small_share_are_not_warned_of(tmp_path):
    source, _ = _pair(tmp_path, nodata=-9999)
    rgb = np.full((3, 128, 128), 120, "uint8")
    rgb[:, :64] = 0  # half black, half 255: real values of an RGB image
    rgb[:, 100:] = 255
    target = write_raster(tmp_path / "rgb.tif", rgb)
    assert _export(source, target, tmp_path / "one").warnings == []
    few = np.full((128, 128), 300, "int16")
    few.flat[:80] = -9999  # 0.49 %: under the share warned of
    target = write_raster(tmp_path / "few.tif", few)
    assert _export(source, target, tmp_path / "two").warnings == []


@pytest.mark.parametrize("dtype, value, says", [
    ("uint8", "-9999", "uint8 (whole numbers 0..255), which cannot hold -9999"),
    ("uint8", "nan", "uint8 (whole numbers 0..255), which cannot hold NaN"),
    ("int16", "1.5", "int16 (whole numbers -32768..32767), which cannot hold 1.5"),
])
def test_a_value_the_dtype_cannot_hold_is_refused_in_one_line(tmp_path, capsys, dtype, value,
                                                              says):
    source, _ = _pair(tmp_path, nodata=-9999)
    target = write_raster(tmp_path / "t.tif", np.ones((128, 128), dtype))
    out = tmp_path / "out"
    assert main(["export-chips", str(source), str(target), "-o", str(out), "--chip-size", "64",
                 "-q", "--target-nodata", value]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"Error: --target-nodata {value}: {target} is {says}; give its fill value within that "
        "range, or leave the option out"]
    assert not out.exists()


def test_a_float_value_past_the_dtype_is_refused(tmp_path, capsys):
    source, target = _pair(tmp_path)
    assert main(["export-chips", str(source), str(target), "-o", str(tmp_path / "out"),
                 "--chip-size", "64", "-q", "--source-nodata", "1e40"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"Error: --source-nodata 1e+40: {source} is float32, which cannot hold 1e+40; give a "
        "value within -3.40282347e+38..3.40282347e+38, or nan"]


def test_a_value_replacing_the_file_s_own_tag_is_used_and_noted(tmp_path):
    dem = _dem()
    dem[100:110, :] = -32768  # a wrong tag: -32768 is a real (if odd) value here
    _, target = _pair(tmp_path)
    source = write_raster(tmp_path / "wrong.tif", dem, nodata=-32768)
    with pytest.warns(g.GeoPix2PixWarning):
        summary = _export(source, target, tmp_path / "out", source_nodata=-9999)
    assert summary.warnings == [f"{source}: its nodata value -32768 is replaced by "
                                "--source-nodata -9999, as given"]
    with rasterio.open(tmp_path / "out" / "source" / "p000_r000064_c000000.tif") as chip:
        assert chip.nodata == -9999 and (chip.read_masks() == 0).sum() == 0
        assert (chip.read() == -32768).sum() == 10 * 64  # valid values now
    with rasterio.open(tmp_path / "out" / "source" / "p000_r000000_c000064.tif") as chip:
        assert (chip.read_masks() == 0).sum() == 1200


def test_an_unpaired_export_takes_each_domain_s_value(tmp_path):
    untagged, _ = _pair(tmp_path, name="untagged")
    tagged, _ = _pair(tmp_path, nodata=-9999, name="tagged")
    other = np.full((128, 128), 5, "uint16")
    other[:8] = 65535
    target = write_raster(tmp_path / "other.tif", other)
    g.export_chips(sources=[tagged], targets=[target], out_dir=tmp_path / "one", unpaired=True,
                   chip_size=64, max_nodata=0.5, workers=0, progress=False, target_nodata=65535)
    summary = g.export_chips(sources=[untagged], targets=[target], out_dir=tmp_path / "two",
                             unpaired=True, chip_size=64, max_nodata=0.5, workers=0,
                             progress=False, source_nodata=-9999, target_nodata=65535)
    assert summary.warnings == []
    first, second = _chips(tmp_path / "one"), _chips(tmp_path / "two")
    assert first.keys() == second.keys()
    for name, (nodata, values, mask) in first.items():
        assert second[name][0] == nodata and np.array_equal(second[name][1], values)
        assert np.array_equal(second[name][2], mask)
    with rasterio.open(tmp_path / "two" / "target" / "p001_r000000_c000000.tif") as chip:
        assert chip.nodata == 65535 and (chip.read_masks() == 0).sum() == 8 * 64
    info = json.loads((tmp_path / "two" / "dataset.json").read_text())
    assert [r["nodata"] for r in info["rasters"]] == [-9999, 65535]
    assert info["target"]["nodata"] == 65535


def test_a_target_warped_onto_the_source_grid_leaves_its_declared_voids_out(tmp_path):
    """GDAL's warper is given the declared value as the target's source nodata: a void pixel
    is not blended into its valid neighbours (-9999 averaged into heights)."""
    source = write_raster(tmp_path / "src.tif", np.full((128, 128), 7, "uint16"), nodata=0)
    moved = rasterio.Affine(10.0, 0.0, 500003.3, 0.0, -10.0, 5199996.1)  # off the pixel lattice
    tagged = write_raster(tmp_path / "tagged.tif", _dem(), transform=moved, nodata=-9999)
    untagged = write_raster(tmp_path / "untagged.tif", _dem(), transform=moved)
    one = _export(source, tagged, tmp_path / "one", val_fraction=0.0)
    two = _export(source, untagged, tmp_path / "two", target_nodata=-9999,
                  val_fraction=0.0)
    assert one.warnings == two.warnings == []
    first, second = _chips(tmp_path / "one"), _chips(tmp_path / "two")
    assert first.keys() == second.keys()
    for name, (nodata, values, mask) in first.items():
        assert second[name][0] == nodata and np.array_equal(second[name][1], values)
        assert np.array_equal(second[name][2], mask)
    nodata, values, mask = second["target/p000_r000001_c000064.tif"]  # on the overlap
    valid = values[0][mask[0] > 0]
    assert nodata == -9999 and (mask == 0).sum() >= 1200 and valid.min() > 400


def test_a_retagged_raster_reads_warps_and_masks_as_the_tagged_file(tmp_path):
    tagged, _ = _pair(tmp_path, nodata=-9999, name="tagged")
    untagged, _ = _pair(tmp_path, name="untagged")
    coarse = Grid.of(rasterio.open(tagged)).moved(0.37, 0.61)
    with open_raster(tagged) as a, open_raster(untagged, nodata=Override(-9999, "--x")) as b:
        assert (b.nodata, b.nodatavals, b.mask_flag_enums) == (
            a.nodata, a.nodatavals, a.mask_flag_enums)
        assert np.array_equal(a.read_masks(1), b.read_masks(1))
        window = rasterio.windows.Window(60, 0, 64, 64)
        for got, want in zip(read_window(b, [1], window), read_window(a, [1], window)):
            assert np.array_equal(got, want)
        with warped_view(a, coarse) as va, warped_view(b, coarse) as vb:
            assert vb.nodata == -9999
            whole = rasterio.windows.Window(0, 0, 128, 128)
            got, want = read_window(vb, [1], whole), read_window(va, [1], whole)
            assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
            assert (~got[1]).sum() > 1200  # the void, spread by the shift's resampling


def test_evaluate_reads_an_untagged_reference_as_tagged(tmp_path, capsys):
    tagged, _ = _pair(tmp_path, nodata=-9999, name="tagged")
    untagged, _ = _pair(tmp_path, name="untagged")
    dem = _dem()
    dem[dem != -9999] += 1
    pred = write_raster(tmp_path / "pred.tif", dem)  # untagged too
    want = g.evaluate(pred, tagged, nodata=-9999)
    got = g.evaluate(pred, untagged, nodata=-9999, reference_nodata=-9999)
    assert got.valid_pixels == want.valid_pixels == 128 * 128 - 1200
    assert got.overall == want.overall and got.overall["mae"] == pytest.approx(1.0)
    assert got.warnings == want.warnings == []
    assert main(["evaluate", str(pred), str(untagged)]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {_fill_warning(pred, '--nodata')}",
        f"warning: {_fill_warning(untagged, '--reference-nodata')}"]
    assert main(["evaluate", str(pred), str(untagged), "--reference-nodata", "nan",
                 "--nodata", "-9999"]) == 0
    assert capsys.readouterr().err == ""  # given: no warning, NaN its (absent) voids
    assert main(["evaluate", str(tagged), str(untagged), "--nodata", "0.5"]) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"warning: {tagged}: its nodata value -9999 is replaced by --nodata 0.5, as given",
        f"warning: {_fill_warning(untagged, '--reference-nodata')}"]


def test_a_class_map_s_zero_is_a_class_not_a_fill_value(tmp_path):
    """uint16 class codes with many 0s: evaluate --categorical and a map with a colour table
    are not warned of their dtype's ends; the same codes compared as values are."""
    codes = np.zeros((64, 64), "uint16")
    codes[:, 32:] = 1000
    plain = write_raster(tmp_path / "plain.tif", codes)
    assert g.evaluate(plain, plain, categorical=True).warnings == []
    with pytest.warns(g.GeoPix2PixWarning):
        assert g.evaluate(plain, plain).warnings == [
            _fill_warning(plain, "--nodata", "50", "0"),
            _fill_warning(plain, "--reference-nodata", "50", "0")]
    with rasterio.open(tmp_path / "palette.tif", "w", driver="GTiff", width=64, height=64,
                       count=1, dtype="uint16", crs="EPSG:32633",
                       transform=rasterio.Affine(10, 0, 500000, 0, -10, 5200000)) as dst:
        dst.write(codes, 1)
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1000: (0, 255, 0, 255)})
    with pytest.warns(g.GeoPix2PixWarning, match="look like class maps") as caught:
        g.evaluate(tmp_path / "palette.tif", tmp_path / "palette.tif")
    assert len(caught) == 1  # that one alone: no fill value
