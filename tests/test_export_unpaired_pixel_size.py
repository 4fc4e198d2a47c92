"""--pixel-size in an unpaired export: both domains resampled to one ground resolution (in
metres on the ground, `raster.ground`), the values kept where they are on the ground, the
warning when the domains' ground pixels are far apart without it, and a class map resampled
so. Split from test_export_unpaired.py (its helpers)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.settings.export import PAIRED_ONLY
from tests.test_export_unpaired import UTM33, UTM33_FAR, export, index_rows


def test_pixel_size_resamples_both_domains_to_one_ground_size(tmp_path, rng):
    export(tmp_path, rng, pixel_size=20.0)
    out = tmp_path / "chips"
    info = json.loads((out / "dataset.json").read_text())
    assert info["options"]["pixel_size"] == 20.0
    assert all(r["resampled"] for r in info["rasters"])
    source_size = info["rasters"][0]["pixel_size"]
    assert source_size == [20.0, 20.0]
    lon_size, lat_size = info["rasters"][2]["pixel_size"]
    phi = np.radians(46.0 - 0.01)  # the target's centre latitude; metres per degree there:
    per_lon = 111_412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi)  # (WGS84, textbook series)
    per_lat = 111_132.954 - 559.822 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi)
    assert lon_size * per_lon == pytest.approx(20.0, rel=1e-3)
    assert lat_size * per_lat == pytest.approx(20.0, rel=1e-3)
    for r in index_rows(out):
        raster = info["rasters"][r["raster"]]
        with rasterio.open(raster["path"]) as src, \
                rasterio.open(out / r["domain"] / f"{r['id']}.tif") as chip:
            left, top = src.transform.c, src.transform.f  # the cut grid starts at its corner
            size_x, size_y = raster["pixel_size"]
            expected = Affine(size_x, 0, left, 0, -size_y, top) @ \
                Affine.translation(r["col"], r["row"])
            assert chip.transform.almost_equals(expected, precision=1e-9)
            assert chip.crs == src.crs


def test_pixel_sizes_far_apart_are_warned_of_unless_resampled(tmp_path, rng):
    source = write_raster(tmp_path / "s.tif", rng.random((1, 96, 96), dtype=np.float32))
    coarse = Affine(30.0, 0.0, 600000.0, 0.0, -30.0, 5100000.0)
    target = write_raster(tmp_path / "t.tif", rng.random((1, 96, 96), dtype=np.float32),
                          transform=coarse)
    options = dict(unpaired=True, sources=[source], targets=[target], chip_size=32,
                   progress=False, workers=0)
    with pytest.warns(UserWarning, match="30 m"):
        summary = export_chips(out_dir=tmp_path / "a", **options)
    assert any("10 m and the target rasters' 30 m (3.0x apart)" in w and "--pixel-size" in w
               for w in summary.warnings)
    summary = export_chips(out_dir=tmp_path / "b", pixel_size=20.0, **options)
    assert not any("--pixel-size" in w for w in summary.warnings)


def test_pixel_size_resampling_keeps_the_values_where_they_are_on_the_ground(tmp_path):
    rows, cols = np.mgrid[0:128, 0:128] + 0.5
    xs, ys = UTM33 @ (cols, rows)
    ramp = ((xs - 500000.0) * 0.5 + (5200000.0 - ys) * 0.25).astype(np.float32)
    source = write_raster(tmp_path / "s.tif", ramp)
    target = write_raster(tmp_path / "t.tif", ramp, transform=UTM33_FAR)
    export_chips(out_dir=tmp_path / "chips", unpaired=True, sources=[source], targets=[target],
                 chip_size=32, pixel_size=20.0, max_nodata=0.0, progress=False, workers=0)
    chip_path = tmp_path / "chips" / "source" / "p000_r000000_c000032.tif"
    with rasterio.open(chip_path) as chip:  # inside the scene: no edge
        values = chip.read(1)
        r, c = np.mgrid[0:32, 0:32] + 0.5
        x, y = chip.transform @ (c, r)
    assert chip.res == (20.0, 20.0)
    expected = (x - 500000.0) * 0.5 + (5200000.0 - y) * 0.25
    np.testing.assert_allclose(values[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-3)


def test_a_class_map_resampled_to_pixel_size_is_warned_of_and_no_pair_option_recorded(
        tmp_path, rng):
    """An unpaired class map is resampled onto its own grid at --pixel-size (no source's grid
    there), and dataset.json leaves out the options of a target against its source."""
    source = write_raster(tmp_path / "a.tif", rng.integers(1, 4000, (2, 128, 128), dtype=np.uint16))
    target = write_raster(tmp_path / "map.tif", rng.integers(1, 4, (1, 128, 128), dtype=np.uint8),
                          crs="EPSG:32631", photometric="palette")
    with rasterio.open(target, "r+") as dst:
        dst.write_colormap(1, {1: (255, 0, 0, 255), 2: (0, 255, 0, 255), 3: (0, 0, 255, 255)})
    with pytest.warns(UserWarning, match="class map"):
        summary = export_chips(out_dir=tmp_path / "chips", unpaired=True, sources=[source],
                               targets=[target], chip_size=32, pixel_size=20.0, workers=0,
                               progress=False, target_resampling="bilinear")
    said = [w for w in summary.warnings if "class map" in w]
    assert said == [f"the target {target} is a class map (a colour table) resampled onto its "
                    "own grid at --pixel-size 20.0 with --target-resampling bilinear, which "
                    "averages neighbouring codes into codes of other classes or none; re-export "
                    "with --target-resampling nearest"]
    options = json.loads((tmp_path / "chips" / "dataset.json").read_text())["options"]
    assert set(PAIRED_ONLY).isdisjoint(options) and options["pixel_size"] == 20.0
    assert DatasetInfo.load(tmp_path / "chips").options == options
    # the same codes without a colour table: told from a sample of its values
    bare = write_raster(tmp_path / "codes.tif", rng.integers(1, 4, (1, 128, 128), np.uint8),
                        crs="EPSG:32631")
    with pytest.warns(UserWarning, match="looks like a class map"):
        summary = export_chips(out_dir=tmp_path / "bare", unpaired=True, sources=[source],
                               targets=[bare], chip_size=32, pixel_size=20.0, workers=0,
                               progress=False, target_resampling="bilinear")
    assert [w for w in summary.warnings if "class map" in w] == [
        f"the target {bare} looks like a class map (3 integer values in a sample: 1, 2, 3) "
        "resampled onto its own grid at --pixel-size 20.0 with --target-resampling bilinear, "
        "which averages neighbouring codes into codes of other classes or none; if it is one, "
        "re-export with --target-resampling nearest"]


def test_a_class_map_source_resampled_to_pixel_size_is_warned_of(tmp_path, rng):
    """A source is resampled bilinearly at --pixel-size (there is no source option to change
    it), so a class map there (a map -> image CycleGAN) had its codes averaged without a word."""
    codes = write_raster(tmp_path / "codes.tif", rng.integers(1, 4, (1, 128, 128), np.uint8),
                         crs="EPSG:32631")
    image = write_raster(tmp_path / "b.tif", rng.integers(1, 4000, (2, 128, 128), np.uint16))
    with pytest.warns(UserWarning, match="looks like a class map"):
        summary = export_chips(out_dir=tmp_path / "chips", unpaired=True, sources=[codes],
                               targets=[image], chip_size=32, pixel_size=20.0, workers=0,
                               progress=False)
    assert [w for w in summary.warnings if "class map" in w] == [
        f"the source {codes} looks like a class map (3 integer values in a sample: 1, 2, 3) "
        "resampled onto its own grid at --pixel-size 20.0 bilinearly (as --pixel-size resamples "
        "a source), which averages neighbouring codes into codes of other classes or none; if "
        "it is one, resample it to that pixel size with nearest neighbour first (e.g. gdalwarp "
        "-r near), which export-chips then cuts as it is"]
    # on its own grid (already at that pixel size) it is cut as it is: no warning
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_chips(out_dir=tmp_path / "native", unpaired=True, sources=[codes], targets=[image],
                     chip_size=32, pixel_size=10.0, workers=0, progress=False)


def test_one_domain_s_rasters_far_apart_in_pixel_size_are_warned_of(tmp_path, rng):
    """A reviewer's source domain of a 30 m and a 10 m DEM: chips of very different ground,
    and the model file records the first raster's pixel size, so predict warned of the other
    training raster. Without --pixel-size the export says so, naming both."""
    fine = write_raster(tmp_path / "fine.tif", rng.random((1, 96, 96), dtype=np.float32))
    coarse = write_raster(tmp_path / "coarse.tif", rng.random((1, 96, 96), dtype=np.float32),
                          transform=Affine(30.0, 0.0, 600000.0, 0.0, -30.0, 5100000.0))
    target = write_raster(tmp_path / "t.tif", rng.random((1, 96, 96), dtype=np.float32),
                          transform=Affine(20.0, 0.0, 700000.0, 0.0, -20.0, 5100000.0))
    options = dict(unpaired=True, sources=[coarse, fine], targets=[target], chip_size=32,
                   progress=False, workers=0)
    with pytest.warns(UserWarning, match="source rasters have ground pixels"):
        summary = export_chips(out_dir=tmp_path / "a", **options)
    assert [w for w in summary.warnings if "ground pixels from" in w] == [
        f"the source rasters have ground pixels from 10 m ({fine}) to 30 m ({coarse}), 3.0x "
        "apart: their chips cover ground of very different extent; pass --pixel-size METRES "
        "to resample every raster to one ground resolution"]
    summary = export_chips(out_dir=tmp_path / "b", pixel_size=20.0, **options)
    assert not any("--pixel-size" in w for w in summary.warnings)
