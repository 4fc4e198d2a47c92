"""export-chips on the real pairs in ../shared/data (skipped when the folder is absent)."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import rasterio
from affine import Affine
from conftest import shared
from rasterio.windows import Window

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.export import export_chips


def index_rows(chips_dir):
    with sqlite3.connect(chips_dir / "chips.gpkg") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM chips ORDER BY fid")]


def test_spacenet6_sar_to_rgb_on_slightly_different_grids(tmp_path):
    sar = shared("sar_optical_spacenet6_rotterdam", "sar_masked_HH_HV_VH_VV_dB.tif")
    rgb = shared("sar_optical_spacenet6_rotterdam", "rgb_unmasked.tif")
    out = tmp_path / "chips"
    export_chips(sar, rgb, out, chip_size=64, stride=32, max_nodata=0.6, split_block=96,
                 val_fraction=0.25, progress=False, workers=1)
    rows = index_rows(out)
    assert rows and {r["split"] for r in rows} == {"train", "val"}
    with rasterio.open(sar) as ds:
        sar_transform, sar_data = ds.transform, ds.read()
    voids = 0
    for r in rows:
        with rasterio.open(out / "source" / f"{r['id']}.tif") as s, \
                rasterio.open(out / "target" / f"{r['id']}.tif") as t:
            assert s.transform == t.transform == sar_transform @ Affine.translation(r["col"],
                                                                                    r["row"])
            assert s.crs == t.crs == "EPSG:32631" and t.dtypes[0] == "uint8" and t.count == 3
            window = sar_data[:, r["row"]:r["row"] + 64, r["col"]:r["col"] + 64]
            nan = np.isnan(window).any(0)
            np.testing.assert_array_equal(np.isnan(s.read()).any(0), nan)
            # the optical chip keeps its pixels under SAR's NaN: only its own would be masked
            assert t.nodata is None and (t.dataset_mask() == 255).all()
            voids += int(nan.any())
            assert r["valid_fraction"] == np.float64(1 - nan.mean()).round(6)
    assert voids  # chips with SAR voids were checked
    info = json.loads((out / "dataset.json").read_text())
    assert info["source"]["nodata"] == "nan" and len(info["source"]["stats"]) == 4
    assert -40 < info["source"]["stats"][0]["p01"] < info["source"]["stats"][0]["p99"] < 40
    item = ChipDataset(out, "val")[0]
    assert item["source"].shape == (4, 64, 64) and item["target"].shape == (3, 64, 64)


def test_exploradores_dem_hillshade_utm_south_is_copied_bit_exact(tmp_path):
    dem = shared("dem_hillshade_exploradores", "exploradores_aster_dem_30m.tif")
    shade = shared("dem_hillshade_exploradores",
                   "exploradores_aster_hillshade_gdal_az315_alt45.tif")
    out = tmp_path / "chips"
    export_chips(dem, shade, out, chip_size=128, max_nodata=0.05, source_scaling="centre",
                 split_block=256, progress=False, workers=2)
    rows = index_rows(out)
    assert len(rows) > 10
    with rasterio.open(dem) as d, rasterio.open(shade) as h:
        for r in rows:
            w = Window(r["col"], r["row"], 128, 128)
            dem_win, shade_win = d.read(window=w), h.read(window=w)
            valid = (dem_win != -9999).all(0) & (shade_win != 0).all(0)
            with rasterio.open(out / "source" / f"{r['id']}.tif") as s, \
                    rasterio.open(out / "target" / f"{r['id']}.tif") as t:
                assert s.crs == t.crs == "EPSG:32718"
                assert s.transform == d.window_transform(w)
                assert (s.nodata, t.nodata, t.dtypes[0]) == (-9999, 0, "uint8")
                np.testing.assert_array_equal(s.read()[:, valid], dem_win[:, valid])
                np.testing.assert_array_equal(t.read()[:, valid], shade_win[:, valid])
                assert (s.read()[:, ~valid] == -9999).all() and (t.read()[:, ~valid] == 0).all()
    info = json.loads((out / "dataset.json").read_text())
    assert info["source"]["scaling_mode"] == "centre"
    assert 0 < info["source"]["stats"][0]["abs_dev_p99"] < 1500


def test_slovenia_sentinel2_to_land_cover_keeps_classes(tmp_path):
    s2 = shared("image_map_eolearn_slovenia", "s2_l1c_2015-07-11_clear.tif")
    lulc = shared("image_map_eolearn_slovenia", "lulc.tif")
    out = tmp_path / "chips"
    export_chips(s2, lulc, out, chip_size=32, stride=16, target_resampling="nearest",
                 max_nodata=0.5, split_block=64, progress=False, workers=1)
    with rasterio.open(lulc) as ds:
        classes = set(np.unique(ds.read()).tolist())
    rows = index_rows(out)
    assert rows
    for r in rows:
        with rasterio.open(out / "target" / f"{r['id']}.tif") as t, \
                rasterio.open(out / "source" / f"{r['id']}.tif") as s:
            assert set(np.unique(t.read()).tolist()) <= classes
            assert s.count == 13 and s.dtypes[0] == "float32"
    covered = {"train": np.zeros((101, 100), bool), "val": np.zeros((101, 100), bool)}
    for r in rows:
        covered[r["split"]][r["row"]:r["row"] + 32, r["col"]:r["col"] + 32] = True
    assert not (covered["train"] & covered["val"]).any()
