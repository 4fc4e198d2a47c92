"""export-chips on generated pairs: alignment, bit-exact copies, validity, AOI, split, pairs."""

from __future__ import annotations

import json
import sqlite3

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from rasterio.warp import transform as warp_transform
from shapely.geometry import box

from geopix2pix.chips.dataset import ChipDataset, chip_ids
from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError

UTM = "EPSG:32633"
ORIGIN = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)


def ramp(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A linear function of UTM coordinates: bilinear resampling reproduces it exactly."""
    return ((xs - 500000.0) * 0.5 + (5200000.0 - ys) * 0.25).astype(np.float32)


def utm_ramp_raster(path, size=256, transform=ORIGIN):
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    xs, ys = transform @ (cols, rows)
    return write_raster(path, ramp(xs, ys), crs=UTM, transform=transform)


def geographic_ramp_raster(path, utm_transform=ORIGIN, size=256):
    """The same ramp sampled on an EPSG:4326 grid of 0.0001 degrees covering the UTM scene."""
    left, top = utm_transform @ (0, 0)
    right, bottom = utm_transform @ (size, size)
    lons, lats = warp_transform(UTM, "EPSG:4326", [left, right, left, right],
                                [top, top, bottom, bottom])
    res = 0.0001
    west, north = min(lons) - 5 * res, max(lats) + 5 * res
    width = int((max(lons) - west) / res) + 10
    height = int((north - min(lats)) / res) + 10
    transform = Affine(res, 0, west, 0, -res, north)
    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    lon, lat = transform @ (cols, rows)
    xs, ys = warp_transform("EPSG:4326", UTM, lon.ravel(), lat.ravel())
    values = ramp(np.asarray(xs), np.asarray(ys)).reshape(height, width)
    return write_raster(path, values, crs="EPSG:4326", transform=transform)


def read(path):
    with rasterio.open(path) as ds:
        return ds.read(), ds.profile, ds.descriptions


def index_rows(chips_dir):
    with sqlite3.connect(chips_dir / "chips.gpkg") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM chips ORDER BY fid")]


def test_identical_grids_give_bit_exact_chips_with_exact_georeferencing(tmp_path, rng):
    source = rng.integers(0, 4000, (3, 200, 300), dtype=np.uint16)
    target = rng.integers(0, 255, (1, 200, 300), dtype=np.uint8)
    src = write_raster(tmp_path / "s.tif", source, nodata=0, descriptions=["B2", "B3", "B4"])
    tgt = write_raster(tmp_path / "t.tif", target, descriptions=["class"])
    out = tmp_path / "chips"
    summary = export_chips(src, tgt, out, chip_size=64, max_nodata=1.0, val_fraction=0.25,
                           split_block=128, progress=False, workers=1)
    assert summary.kept["train"] + summary.kept["val"] == len(index_rows(out))
    rows = index_rows(out)
    # the lattice covers 300 columns with chips at 0, 64, ..., 192 and one moved back to end at 236
    assert sorted({r["col"] for r in rows}) == [0, 64, 128, 192, 236]
    for r in rows:
        s, sp, sd = read(out / "source" / f"{r['id']}.tif")
        t, tp, td = read(out / "target" / f"{r['id']}.tif")
        window = (slice(r["row"], r["row"] + 64), slice(r["col"], r["col"] + 64))
        valid = (source[:, window[0], window[1]] != 0).all(0)
        expected = source[:, window[0], window[1]].copy()
        expected[:, ~valid] = 0
        np.testing.assert_array_equal(s, expected)
        np.testing.assert_array_equal(t[:, valid], target[:, window[0], window[1]][:, valid])
        assert sp["transform"] == ORIGIN @ Affine.translation(r["col"], r["row"])
        assert tp["transform"] == sp["transform"]
        assert sp["crs"] == tp["crs"] == rasterio.crs.CRS.from_string(UTM)
        assert (sp["width"], sp["height"], sp["dtype"], tp["dtype"]) == (64, 64, "uint16", "uint8")
        assert sp["nodata"] == 0 and sp["count"] == 3
        assert sd == ("B2", "B3", "B4") and td == ("class",)


def test_target_in_another_crs_and_resolution_is_aligned_to_a_fraction_of_a_pixel(tmp_path):
    src = utm_ramp_raster(tmp_path / "s.tif")
    tgt = geographic_ramp_raster(tmp_path / "t.tif")
    out = tmp_path / "chips"
    export_chips(src, tgt, out, chip_size=64, target_resampling="bilinear", max_nodata=0.0,
                 val_fraction=0.0, progress=False, workers=1)
    rows = index_rows(out)
    assert len(rows) >= 9
    # one source pixel shifts the ramp by 5 (x) or 2.5 (y) units. GDAL's bilinear kernel, widened
    # for downsampling, moves single pixels by up to ~0.05 pixel; a misregistration moves all.
    for r in rows:
        s, sp, _ = read(out / "source" / f"{r['id']}.tif")
        t, tp, _ = read(out / "target" / f"{r['id']}.tif")
        assert tp["transform"] == sp["transform"] and tp["crs"] == sp["crs"]
        assert np.abs(s - t).max() < 0.5, r["id"]  # 0.1 pixel
        assert abs(float((s - t).mean())) < 0.1, r["id"]  # 0.02 pixel


def test_nodata_and_nan_make_pixels_invalid_in_their_own_chip_and_for_the_loss(tmp_path):
    source = np.full((1, 128, 128), 5.0, dtype=np.float32)
    source[0, 10:20, 10:20] = np.nan  # 100 px in chip (0, 0)
    target = np.full((1, 128, 128), 100.0, dtype=np.float32)
    target[0, 70:80, 70:74] = -9999  # 40 px in chip (64, 64)
    target[0, 0:64, 64:128] = -9999  # chip (0, 64) entirely invalid
    src = write_raster(tmp_path / "s.tif", source)
    tgt = write_raster(tmp_path / "t.tif", target, nodata=-9999)
    out = tmp_path / "chips"
    summary = export_chips(src, tgt, out, chip_size=64, max_nodata=0.05, val_fraction=0,
                           progress=False, workers=1)
    assert summary.skipped == {"too many invalid pixels": 1}
    rows = {(r["row"], r["col"]): r for r in index_rows(out)}
    assert set(rows) == {(0, 0), (64, 0), (64, 64)}
    assert rows[(0, 0)]["valid_fraction"] == pytest.approx(1 - 100 / 4096)
    assert rows[(64, 64)]["valid_fraction"] == pytest.approx(1 - 40 / 4096)
    s, sp, _ = read(out / "source" / f"{rows[(0, 0)]['id']}.tif")
    t, tp, _ = read(out / "target" / f"{rows[(0, 0)]['id']}.tif")
    assert np.isnan(sp["nodata"]) and tp["nodata"] == -9999
    assert np.isnan(s[0, 10:20, 10:20]).all() and np.isnan(s).sum() == 100
    assert (t == 100).all()  # the target keeps its values under the source's voids
    s, _, _ = read(out / "source" / f"{rows[(64, 64)]['id']}.tif")
    t, _, _ = read(out / "target" / f"{rows[(64, 64)]['id']}.tif")
    assert (s == 5).all()  # and the source under the target's
    assert (t[0, 6:16, 6:10] == -9999).all() and (t == -9999).sum() == 40
    data = ChipDataset(out, split="train")
    for (row, col), count in (((0, 0), 100), ((64, 64), 40)):  # the loss: both sides valid
        item = data[data.ids.index(rows[(row, col)]["id"])]
        assert item["valid"].shape == (1, 64, 64) and int((~item["valid"]).sum()) == count
    assert float(data[data.ids.index(rows[(0, 0)]["id"])]["source"][0, 10:20, 10:20]
                 .abs().max()) == 0.0


def test_integer_rasters_without_nodata_get_an_internal_mask(tmp_path, rng):
    source = rng.integers(1, 255, (3, 64, 64), dtype=np.uint8)
    target = np.full((1, 64, 64), 7.0, dtype=np.float32)
    masked = np.zeros((64, 64), np.uint8)
    masked[:4] = 1  # the source's own invalid pixels (a mask: a uint8 raster has no NaN)
    src = write_raster(tmp_path / "s.tif", source)
    tgt = write_raster(tmp_path / "t.tif", target)
    mask = write_raster(tmp_path / "mask.tif", masked)
    out = tmp_path / "chips"
    export_chips(src, tgt, out, chip_size=64, max_nodata=0.1, val_fraction=0, progress=False,
                 source_mask=mask)
    chip = out / "source" / f"{index_rows(out)[0]['id']}.tif"
    with rasterio.open(chip) as ds:
        assert ds.nodata is None
        mask = ds.dataset_mask()
        np.testing.assert_array_equal(ds.read(), source)
    assert (mask[:4] == 0).all() and (mask[4:] == 255).all()


def test_aoi_in_another_crs_keeps_only_intersecting_chips(tmp_path):
    src = utm_ramp_raster(tmp_path / "s.tif")
    tgt = utm_ramp_raster(tmp_path / "t.tif")
    # AOI: the UTM box of rows/cols -5..100 (reaching into chip (64, 64)), stored in EPSG:4326
    left, top = ORIGIN @ (-5, -5)
    right, bottom = ORIGIN @ (100, 100)
    aoi = gpd.GeoDataFrame(geometry=[box(left, bottom, right, top)], crs=UTM).to_crs(4326)
    aoi.to_file(tmp_path / "aoi.geojson")
    out = tmp_path / "chips"
    export_chips(src, tgt, out, chip_size=64, aoi=tmp_path / "aoi.geojson", val_fraction=0,
                 progress=False, workers=1, max_nodata=1)
    assert {(r["row"], r["col"]) for r in index_rows(out)} == {(0, 0), (0, 64), (64, 0), (64, 64)}
    export_chips(src, tgt, out, chip_size=64, aoi=tmp_path / "aoi.geojson", aoi_mode="within",
                 val_fraction=0, progress=False, workers=1, overwrite=True, max_nodata=1)
    assert {(r["row"], r["col"]) for r in index_rows(out)} == {(0, 0)}
    index = gpd.read_file(out / "chips.gpkg")
    assert index.crs.to_epsg() == 4326 and list(index["crs"]) == [UTM]


def test_split_has_no_shared_pixel_and_is_deterministic(tmp_path, rng):
    data = rng.random((1, 512, 512), dtype=np.float32)
    src = write_raster(tmp_path / "s.tif", data)
    tgt = write_raster(tmp_path / "t.tif", data * 2)
    kwargs = dict(chip_size=64, stride=32, split_block=128, val_fraction=0.3, progress=False,
                  max_nodata=0)
    export_chips(src, tgt, tmp_path / "a", seed=3, workers=1, **kwargs)
    export_chips(src, tgt, tmp_path / "b", seed=3, workers=2, **kwargs)
    export_chips(src, tgt, tmp_path / "c", seed=4, workers=1, **kwargs)
    rows = index_rows(tmp_path / "a")
    covered = {"train": np.zeros((512, 512), bool), "val": np.zeros((512, 512), bool)}
    for r in rows:
        covered[r["split"]][r["row"]:r["row"] + 64, r["col"]:r["col"] + 64] = True
    assert covered["train"].any() and covered["val"].any()
    assert not (covered["train"] & covered["val"]).any()
    n_val = sum(r["split"] == "val" for r in rows)
    assert 0.15 < n_val / len(rows) < 0.45
    strip = lambda rs: [(r["id"], r["split"], r["valid_fraction"]) for r in rs]  # noqa: E731
    assert strip(rows) == strip(index_rows(tmp_path / "b"))
    assert strip(rows) != strip(index_rows(tmp_path / "c"))
    info_a = json.loads((tmp_path / "a" / "dataset.json").read_text())
    info_b = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert info_a["source"]["stats"] == info_b["source"]["stats"]
    assert info_a["counts"]["skipped"]["straddling the train/val split"] > 0


@pytest.mark.parametrize("second", ["same grid", "shifted 40 px", "other crs and pixel size"])
def test_pairs_over_the_same_ground_share_their_split(tmp_path, rng, second):
    """Several dates of one place (or overlapping scenes in other CRSs): no ground is in a val
    chip of one pair and a train chip of another (the blocks are shared, not per scene)."""
    data = rng.random((1, 384, 384), dtype=np.float32)
    first = write_raster(tmp_path / "date1.tif", data)
    if second == "same grid":
        other = write_raster(tmp_path / "date2.tif", data)
    elif second == "shifted 40 px":
        other = write_raster(tmp_path / "date2.tif", data,
                             transform=ORIGIN @ Affine.translation(40, 40))
    else:  # UTM 32N at 15 m over the same ground, rotated by the zone change
        lon, lat = warp_transform(UTM, "EPSG:32632", [500000.0], [5200000.0])
        other = write_raster(tmp_path / "date2.tif", data, crs="EPSG:32632",
                             transform=Affine(15.0, 0, lon[0] - 300, 0, -15.0, lat[0] + 300))
    out = tmp_path / "chips"
    export_chips(pairs=[(first, first), (other, other)], out_dir=out, chip_size=32,
                 split_block=64, val_fraction=0.4, seed=5, progress=False, workers=1)
    index = gpd.read_file(out / "chips.gpkg").to_crs(UTM)
    val = index[index.split == "val"].geometry.union_all()
    train = index[index.split == "train"].geometry.union_all()
    assert set(index.pair) == {0, 1} and val.area > 0 and train.area > 0
    assert val.intersection(train).area < 1e-3 * 320 ** 2  # edges may touch, nothing more
    if second == "same grid":  # the same chip of both dates: the same split
        splits = index.pivot(index=["row", "col"], columns="pair", values="split").dropna()
        assert len(splits) == len(index) / 2 and (splits[0] == splits[1]).all()


def test_a_pair_the_first_pairs_crs_cannot_hold_gets_blocks_of_its_own():
    """An orthographic first scene cannot place a scene on the far side of the Earth (PROJ
    refuses the points): that pair's chips are split on their own blocks, not lumped as one."""
    from rasterio.crs import CRS

    from geopix2pix.chips.layout import ChipWindow, assign_splits, split_extents
    from geopix2pix.raster.grid import Grid

    ortho = Grid(CRS.from_proj4("+proj=ortho +lat_0=0 +lon_0=0 +datum=WGS84"),
                 Affine(10, 0, 0, 0, -10, 0), 512, 512)
    far = Grid(CRS.from_epsg(4326), Affine(0.001, 0, 179, 0, -0.001, 1), 512, 512)
    chips = [ChipWindow(p, r, c, 64) for p in (0, 1) for r in range(0, 512, 64)
             for c in range(0, 512, 64)]
    extents = split_extents(chips, {0: ortho, 1: far}, (0, 0))
    assert np.isfinite(extents).all()
    np.testing.assert_array_equal(extents[:64], extents[64:] - [2, 0, 0, 0, 0])  # frame 2
    splits = assign_splits(extents, 128, 0.25, 0)
    assert {"train", "val"} <= set(splits[:64]) and {"train", "val"} <= set(splits[64:])
    assert None not in splits  # 64-px chips in 128-px blocks: none straddles, in either frame


def test_statistics_come_from_train_chips_only(tmp_path, rng):
    data = rng.normal(100, 20, (2, 256, 256)).astype(np.float32)
    data[:, :128] += 1000  # the top half is very different
    src = write_raster(tmp_path / "s.tif", data)
    tgt = write_raster(tmp_path / "t.tif", data[:1])
    out = tmp_path / "chips"
    export_chips(src, tgt, out, chip_size=64, split_block=128, val_fraction=0.5, seed=1,
                 progress=False, workers=1)
    train = [r for r in index_rows(out) if r["split"] == "train"]
    pixels = np.concatenate([data[:, r["row"]:r["row"] + 64, r["col"]:r["col"] + 64]
                             .reshape(2, -1) for r in train], axis=1)
    stats = json.loads((out / "dataset.json").read_text())["source"]["stats"]
    for band in range(2):
        assert stats[band]["count"] == pixels.shape[1]
        assert stats[band]["min"] == pytest.approx(pixels[band].min())
        assert stats[band]["max"] == pytest.approx(pixels[band].max())
        assert stats[band]["mean"] == pytest.approx(pixels[band].mean(), rel=1e-6)
        assert stats[band]["std"] == pytest.approx(pixels[band].std(), rel=1e-5)
        assert stats[band]["p01"] == pytest.approx(np.percentile(pixels[band], 1), rel=0.02)
        assert stats[band]["p99"] == pytest.approx(np.percentile(pixels[band], 99), rel=0.02)


@pytest.mark.parametrize("dtype, nodata", [("uint8", 255), ("int16", -1), ("uint16", 0)])
def test_a_class_map_target_gets_its_exact_class_table(tmp_path, rng, dtype, nodata):
    """The train chips' per-code pixel counts of an integer target, exact (not sampled), with
    nodata left out: the class table `train --categorical` learns."""
    codes = np.array([1, 5, 7, 300 if dtype != "uint8" else 200])
    target = codes[rng.integers(0, 4, (1, 256, 256))].astype(dtype)
    target[0, :10, :] = nodata
    source = rng.random((2, 256, 256), dtype=np.float32)
    out = tmp_path / "chips"
    export_chips(write_raster(tmp_path / "s.tif", source),
                 write_raster(tmp_path / "t.tif", target, nodata=nodata), out, chip_size=64,
                 split_block=128, val_fraction=0.5, seed=1, progress=False, workers=2,
                 sample_size=100)  # a small sample: the counts must not come from it
    train = [r for r in index_rows(out) if r["split"] == "train"]
    pixels = np.concatenate([target[0, r["row"]:r["row"] + 64, r["col"]:r["col"] + 64].ravel()
                             for r in train])
    values, counts = np.unique(pixels[pixels != nodata], return_counts=True)
    info = json.loads((out / "dataset.json").read_text())
    assert info["target"]["stats"][0]["classes"] == [[int(v), int(n)]
                                                    for v, n in zip(values, counts)]
    assert "classes" not in info["source"]["stats"][0] or \
        info["source"]["stats"][0]["classes"] is None


def test_a_continuous_target_has_no_class_table(tmp_path, rng):
    dem = (rng.random((1, 128, 128)) * 3000).astype("int16")  # integers, thousands of values
    out = tmp_path / "chips"
    export_chips(write_raster(tmp_path / "s.tif", rng.random((1, 128, 128), dtype=np.float32)),
                 write_raster(tmp_path / "t.tif", dem), out, chip_size=64, progress=False,
                 workers=1)
    assert json.loads((out / "dataset.json").read_text())["target"]["stats"][0]["classes"] \
        is None


def test_pairs_csv_with_scenes_in_different_crss(tmp_path, rng):
    a = rng.random((1, 128, 128), dtype=np.float32)
    mercator = Affine(20.0, 0, 1_000_000.0, 0, -20.0, 6_000_000.0)
    (tmp_path / "scenes").mkdir()
    write_raster(tmp_path / "scenes" / "s1.tif", a)
    write_raster(tmp_path / "scenes" / "t1.tif", a)
    write_raster(tmp_path / "scenes" / "s2.tif", a, crs="EPSG:3857", transform=mercator)
    write_raster(tmp_path / "scenes" / "t2.tif", a, crs="EPSG:3857", transform=mercator)
    (tmp_path / "pairs.csv").write_text(
        "source,target\nscenes/s1.tif,scenes/t1.tif\nscenes/s2.tif,scenes/t2.tif\n")
    out = tmp_path / "chips"
    assert main(["export-chips", "--pairs", str(tmp_path / "pairs.csv"), "-o", str(out),
                 "--chip-size", "64", "--val-fraction", "0", "-q"]) == 0
    index = gpd.read_file(out / "chips.gpkg")
    assert index.crs.to_epsg() == 4326
    assert sorted(index.groupby("pair")["crs"].first()) == ["EPSG:32633", "EPSG:3857"]
    assert len(index) == 8
    west_utm = index[index.pair == 0].total_bounds[0]
    west_merc = index[index.pair == 1].total_bounds[0]
    assert 14 < west_utm < 16 and 8.9 < west_merc < 9.0  # UTM 33N near 15 E; x=1e6 m is 8.98 E
    info = json.loads((out / "dataset.json").read_text())
    assert [p["crs"] for p in info["pairs"]] == ["EPSG:32633", "EPSG:3857"]
    assert len(chip_ids(out, "train")) == 8


def test_dataset_scales_to_unit_range_and_augments_pairs_identically(tmp_path, rng):
    data = rng.normal(0, 1, (1, 128, 128)).astype(np.float32)
    src = write_raster(tmp_path / "s.tif", data)
    tgt = write_raster(tmp_path / "t.tif", data)
    out = tmp_path / "chips"
    export_chips(src, tgt, out, chip_size=64, val_fraction=0, progress=False,
                 source_scaling="minmax", target_scaling="minmax")
    for augment in ("none", "flip", "d4"):
        dataset = ChipDataset(out, "train", augment=augment)
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["source"].abs().max() <= 1.0
            assert torch_equal(item["source"], item["target"])
    assert ChipDataset(out, "val").__len__() == 0
    for split in ("test", "Train"):  # not an empty dataset: a mistake to say
        with pytest.raises(GeoPix2PixError, match=f"split '{split}': use 'train', 'val' or None"):
            ChipDataset(out, split)


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_class_counts_merge_and_give_up_past_256_codes():
    """ClassCounts: exact per-code pixels of integer bands, merged across workers; a band of
    floats, or one past 256 codes (also only once merged), is no class map (None)."""
    from geopix2pix.chips.stats import MAX_CLASSES, ClassCounts

    a, b, empty = ClassCounts(2), ClassCounts(2), ClassCounts(2)
    a.add(np.array([[-3, 5, 5, 70000], [1, 1, 2, 2]], dtype=np.int32))
    b.add(np.array([[5, -3], [2, 9]], dtype=np.int32))
    a.merge(b)
    a.merge(empty)  # a worker that saw no val chip
    assert a.tables() == [[[-3, 2], [5, 3], [70000, 1]], [[1, 2], [2, 3], [9, 1]]]
    floats = ClassCounts(1)
    floats.add(np.array([[0.5, 1.0]], dtype=np.float32))
    assert floats.tables() == [None]
    low, high = ClassCounts(1), ClassCounts(1)
    low.add(np.arange(200, dtype=np.uint16)[None])
    high.add(np.arange(150, 350, dtype=np.uint16)[None])  # 350 codes only together
    assert low.table(0) is not None and high.table(0) is not None
    low.merge(high)
    assert low.table(0) is None and MAX_CLASSES == 256
    none_band = ClassCounts(1)
    none_band.merge(floats)  # None spreads through a merge
    assert none_band.tables() == [None]


def test_a_dataset_json_from_before_val_class_counts_loads(tmp_path, rng):
    src = write_raster(tmp_path / "s.tif", rng.random((1, 64, 64), dtype=np.float32))
    tgt = write_raster(tmp_path / "t.tif", rng.integers(0, 3, (1, 64, 64)).astype("uint8"))
    out = tmp_path / "chips"
    export_chips(src, tgt, out, chip_size=32, progress=False, workers=0)
    manifest = json.loads((out / "dataset.json").read_text())
    del manifest["target"]["val_classes"], manifest["source"]["val_classes"]
    (out / "dataset.json").write_text(json.dumps(manifest))
    from geopix2pix.chips.manifest import DatasetInfo

    assert DatasetInfo.load(out).target.val_classes == []
