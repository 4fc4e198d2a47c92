"""export-chips --unpaired on generated GeoTIFFs of different CRSs, sizes, bands and dtypes per
domain: chips on each raster's own grid, a split and statistics per domain, --pixel-size, the
warning, ChipDataset's unpaired items, bad input, and an --overwrite that fails."""

from __future__ import annotations

import json
import sqlite3

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from conftest import shared, write_raster
from rasterio.windows import Window

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError

UTM33 = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
UTM33_FAR = Affine(10.0, 0.0, 700000.0, 0.0, -10.0, 5000000.0)  # 200 km away: no overlap
DEGREES = Affine(0.0001, 0.0, 10.0, 0.0, -0.0001, 46.0)  # EPSG:4326, ~7.7 x 11 m at 46 N


def collections(tmp_path, rng):
    """Two uint16 2-band sources (nodata 0, different sizes) in UTM 33N and one float32 3-band
    target in degrees, far from them."""
    a1 = rng.integers(1, 4000, (2, 160, 192), dtype=np.uint16)
    a1[:, :20, :20] = 0  # nodata in one corner
    a2 = rng.integers(1, 4000, (2, 96, 128), dtype=np.uint16)
    b1 = rng.random((3, 200, 224), dtype=np.float32)
    return (write_raster(tmp_path / "a1.tif", a1, nodata=0),
            write_raster(tmp_path / "a2.tif", a2, nodata=0, transform=UTM33_FAR),
            write_raster(tmp_path / "b1.tif", b1, crs="EPSG:4326", transform=DEGREES))


def export(tmp_path, rng, **options):
    a1, a2, b1 = collections(tmp_path, rng)
    options = dict(chip_size=32, progress=False, workers=0, **options)
    return export_chips(out_dir=tmp_path / "chips", unpaired=True, sources=[a1, a2],
                        targets=[b1], **options)


def index_rows(chips_dir):
    with sqlite3.connect(chips_dir / "chips.gpkg") as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM chips ORDER BY fid")]


def test_each_domain_is_cut_bit_exact_on_its_own_rasters_grids(tmp_path, rng):
    summary = export(tmp_path, rng, max_nodata=0.5)
    out = tmp_path / "chips"
    rows = index_rows(out)
    info = json.loads((out / "dataset.json").read_text())
    assert info["paired"] is False and info["pairs"] == []
    assert [(r["domain"], r["resampled"]) for r in info["rasters"]] == [
        ("source", False), ("source", False), ("target", False)]
    for domain, bands, dtype in (("source", 2, "uint16"), ("target", 3, "float32")):
        mine = [r for r in rows if r["domain"] == domain]
        assert len(mine) == info["counts"][domain]["train"] + info["counts"][domain]["val"]
        assert summary.domains[domain]["kept"] == {k: info["counts"][domain][k]
                                                   for k in ("train", "val")}
        assert (info[domain]["bands"], info[domain]["dtype"]) == (list(range(1, bands + 1)),
                                                                  dtype)
        assert {r["path"] for r in mine} == {r["path"] for r in info["rasters"]
                                             if r["domain"] == domain}
    assert {r["raster"] for r in rows} == {0, 1, 2}
    for r in rows:
        with rasterio.open(r["path"]) as raster, \
                rasterio.open(out / r["domain"] / f"{r['id']}.tif") as chip:
            window = Window(r["col"], r["row"], 32, 32)
            assert chip.crs == raster.crs
            assert chip.transform == raster.window_transform(window)  # exactly, no rounding
            assert (chip.count, chip.dtypes[0]) == (raster.count, raster.dtypes[0])
            np.testing.assert_array_equal(chip.read(), raster.read(window=window))
    assert not (out / "source" / "p002_r000000_c000000.tif").exists()  # b1's chips: target/
    assert (out / "target" / "p002_r000000_c000000.tif").exists()


def test_each_domain_has_its_own_split_without_shared_ground(tmp_path, rng):
    export(tmp_path, rng, val_fraction=0.3)
    out = tmp_path / "chips"
    index = gpd.read_file(out / "chips.gpkg")
    info = json.loads((out / "dataset.json").read_text())
    for domain in ("source", "target"):
        mine = index[index.domain == domain]
        assert set(mine.split) == {"train", "val"}
        assert info["counts"][domain]["split_block"] >= 32
        train = shapely.union_all(mine[mine.split == "train"].geometry.values)
        val = shapely.union_all(mine[mine.split == "val"].geometry.values)
        assert shapely.intersection(train, val).area < 1e-12  # edges may touch, no more


def test_statistics_come_from_each_domains_train_chips_only(tmp_path, rng):
    export(tmp_path, rng, val_fraction=0.3)
    out = tmp_path / "chips"
    info = json.loads((out / "dataset.json").read_text())
    rows = index_rows(out)
    for domain in ("source", "target"):
        values = {split: [] for split in ("train", "val")}
        for r in rows:
            if r["domain"] == domain:
                with rasterio.open(out / domain / f"{r['id']}.tif") as chip:
                    data = chip.read(masked=True)
                values[r["split"]].append(data.reshape(data.shape[0], -1))
        train = np.ma.concatenate(values["train"], axis=1)
        everything = np.ma.concatenate(values["train"] + values["val"], axis=1)
        stats = info[domain]["stats"]
        for band, band_stats in enumerate(stats):
            assert band_stats["count"] == train[band].count()
            assert band_stats["min"] == float(train[band].min())
            assert band_stats["max"] == float(train[band].max())
            assert band_stats["mean"] == pytest.approx(float(train[band].mean()), rel=1e-6)
            assert band_stats["count"] < everything[band].count()
    assert info["source"]["scaling_mode"] == "percentile"
    assert info["target"]["scaling_mode"] == "minmax"


def test_chip_dataset_draws_one_chip_per_domain_independently_and_reproducibly(tmp_path, rng):
    export(tmp_path, rng, max_nodata=0.5)
    out = tmp_path / "chips"
    data = ChipDataset(out, "train", unpaired=True, seed=7)
    sources, targets = data.domain_ids["source"], data.domain_ids["target"]
    assert len(data) == max(len(sources), len(targets))
    assert not set(sources) & set(targets)
    item = data[5]
    assert item["source"].shape == (2, 32, 32) and item["target"].shape == (3, 32, 32)
    assert item["source_valid"].shape == item["target_valid"].shape == (1, 32, 32)
    assert item["source_id"] == sources[5 % len(sources)]
    drawn = [data[i]["target_id"] for i in range(len(data))]
    assert len(set(drawn)) > len(targets) // 3  # drawn, not the index order
    again = ChipDataset(out, "train", unpaired=True, seed=7)
    assert [again[i]["target_id"] for i in range(len(data))] == drawn  # a resumed run
    again.set_epoch(1)
    assert [again[i]["target_id"] for i in range(len(data))] != drawn
    with rasterio.open(out / "target" / f"{item['target_id']}.tif") as chip:
        values = chip.read()
    expected = data.target_scaling.forward(values, np.ones(values.shape[1:], bool))
    np.testing.assert_array_equal(item["target"].numpy(), expected)
    with pytest.raises(GeoPix2PixError, match="holds unpaired chips"):
        ChipDataset(out, "train")


def test_a_paired_folder_reads_unpaired_with_its_pairing_ignored(tmp_path, rng):
    source = write_raster(tmp_path / "s.tif", rng.random((2, 96, 96), dtype=np.float32))
    target = write_raster(tmp_path / "t.tif", rng.random((1, 96, 96), dtype=np.float32))
    export_chips(source, target, tmp_path / "chips", chip_size=32, progress=False, workers=0)
    paired = ChipDataset(tmp_path / "chips", None)
    data = ChipDataset(tmp_path / "chips", None, unpaired=True)
    assert data.domain_ids == {"source": paired.ids, "target": paired.ids}
    assert [data[i]["source_id"] for i in range(len(data))] == paired.ids
    assert data[0]["source"].shape[0] == 2 and data[0]["target"].shape[0] == 1


def test_train_refuses_unpaired_chips_in_one_line(tmp_path, rng, capsys):
    export(tmp_path, rng, max_nodata=0.5)
    code = main(["train", str(tmp_path / "chips"), "-o", str(tmp_path / "run"), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "holds unpaired chips" in err and "Pix2Pix" in err


def test_the_cli_reads_a_rasters_csv_relative_to_it_with_workers(tmp_path, rng, capsys):
    collections(tmp_path, rng)
    (tmp_path / "list.csv").write_text("path,domain\na1.tif,source\nb1.tif, Target \n"
                                       "a2.tif,source\n")
    code = main(["export-chips", "--unpaired", "--rasters", str(tmp_path / "list.csv"),
                 "-o", str(tmp_path / "chips"), "--chip-size", "32", "--workers", "2", "-q"])
    assert code == 0
    out = capsys.readouterr().out
    assert "unpaired, source " in out and "; target " in out
    info = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert [(r["path"].rsplit("/", 1)[1], r["domain"]) for r in info["rasters"]] == [
        ("a1.tif", "source"), ("a2.tif", "source"), ("b1.tif", "target")]


@pytest.mark.parametrize("arguments, message", [
    (["--unpaired", "--source", "a1.tif"], "--unpaired needs rasters of both domains and none "
                                            "is of the target domain"),
    (["--source", "a1.tif", "--target", "b1.tif"], "--source/--target list(s) the rasters of "
                                                    "an unpaired export: add --unpaired"),
    (["--unpaired", "a1.tif", "b1.tif"], "--unpaired takes its rasters from --source/--target "
                                         "or --rasters"),
    (["--unpaired", "--rasters", "bad.csv"], "line 3: domain 'optical' is neither source nor "
                                             "target"),
    (["--unpaired", "--source", "a1.tif", "--target", "a1.tif"], "is listed twice (source "
                                                                 "and target)"),
    (["a1.tif", "b1.tif", "--pixel-size", "10"], "--pixel-size 10.0 is for unpaired exports"),
    (["--unpaired", "--source", "a1.tif", "--target", "b1.tif", "--max-shift", "2"],
     "--max-shift 2.0 is for pairs"),
    (["--unpaired", "--source", "a1.tif", "--target", "b1.tif", "--correct-shift"],
     "--correct-shift is for pairs"),
    (["--unpaired", "--source", "a1.tif", "--target", "b1.tif", "--target-mask", "a2.tif"],
     "--target-mask a2.tif is for pairs"),
    (["--unpaired", "--source", "a1.tif", "--target", "empty.tif"],
     "no chip of the target domain kept from"),
    (["--unpaired", "--source", "a1.tif", "--source", "b1.tif", "--target", "empty.tif"],
     "b1.tif: 3 float32 band(s) where the first source has 2 uint16; all source rasters need "
     "the same bands and dtype"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, rng, capsys, monkeypatch, arguments,
                                          message):
    collections(tmp_path, rng)
    write_raster(tmp_path / "empty.tif", np.zeros((1, 64, 64), np.uint8), nodata=0)
    (tmp_path / "bad.csv").write_text("path,domain\na1.tif,source\nb1.tif,optical\n")
    monkeypatch.chdir(tmp_path)
    code = main(["export-chips", *arguments, "-o", "chips", "--chip-size", "32", "-q",
                 "--workers", "0"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "chips").exists()


def test_a_failed_overwrite_keeps_the_earlier_export(tmp_path, rng, capsys):
    export(tmp_path, rng)
    out = tmp_path / "chips"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    write_raster(tmp_path / "empty.tif", np.zeros((1, 64, 64), np.uint8), nodata=0)
    code = main(["export-chips", "--unpaired", "--source", str(tmp_path / "a1.tif"),
                 "--target", str(tmp_path / "empty.tif"), "-o", str(out), "--chip-size", "32",
                 "--overwrite", "-q", "--workers", "0"])
    assert code == 2 and "no chip of the target domain kept" in capsys.readouterr().err
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_sar_of_one_part_and_optical_of_another_part_of_a_real_scene(tmp_path):
    sar = shared("sar_optical_spacenet6_rotterdam", "sar_masked_HH_HV_VH_VV_dB.tif")
    rgb = shared("sar_optical_spacenet6_rotterdam", "rgb_unmasked.tif")
    parts = {}
    for name, path, window in (("sar", sar, Window(0, 0, 200, 100)),
                               ("rgb", rgb, Window(0, 100, 200, 100))):
        with rasterio.open(path) as src:  # the top of the SAR, the bottom of the optical
            profile = dict(src.profile, width=200, height=100,
                           transform=src.window_transform(window))
            parts[name] = tmp_path / f"{name}.tif"
            with rasterio.open(parts[name], "w", **profile) as dst:
                dst.write(src.read(window=window))
    summary = export_chips(out_dir=tmp_path / "chips", unpaired=True, sources=[parts["sar"]],
                           targets=[parts["rgb"]], chip_size=32, max_nodata=0.6,
                           val_fraction=0.25, progress=False, workers=0)
    info = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert (info["source"]["dtype"], len(info["source"]["bands"])) == ("float32", 4)
    assert (info["target"]["dtype"], len(info["target"]["bands"])) == ("uint8", 3)
    assert summary.domains["source"]["kept"]["train"] > 0
    assert summary.domains["target"]["kept"]["train"] > 0
    index = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    sar_ground = shapely.union_all(index[index.domain == "source"].geometry.values)
    rgb_ground = shapely.union_all(index[index.domain == "target"].geometry.values)
    assert shapely.intersection(sar_ground, rgb_ground).area < 1e-12  # no pixel is paired
    item = ChipDataset(tmp_path / "chips", "train", unpaired=True)[0]
    assert item["source"].shape == (4, 32, 32) and item["target"].shape == (3, 32, 32)
    assert float(item["source"].abs().max()) <= 1.0


def test_an_aoi_keeps_each_domains_chips_in_it_and_must_reach_both(tmp_path, rng):
    from rasterio.warp import transform_bounds

    a1, a2, b1 = collections(tmp_path, rng)
    boxes = []
    for path in (a1, b1):
        with rasterio.open(path) as src:
            boxes.append(shapely.box(*transform_bounds(src.crs, "EPSG:4326", *src.bounds)))
    for name, polygons in (("a1", boxes[:1]), ("both", boxes)):
        gpd.GeoDataFrame(geometry=polygons, crs="EPSG:4326").to_file(tmp_path / f"{name}.gpkg")
    options = dict(unpaired=True, sources=[a1, a2], targets=[b1], chip_size=32,
                   max_nodata=0.5, progress=False, workers=0)
    with pytest.raises(GeoPix2PixError, match="no chip of the target rasters intersects its "
                                              "polygons"):
        export_chips(out_dir=tmp_path / "chips", aoi=tmp_path / "a1.gpkg", **options)
    summary = export_chips(out_dir=tmp_path / "chips", aoi=tmp_path / "both.gpkg", **options)
    assert summary.domains["source"]["skipped"]["outside the AOI"] == 3 * 4  # all of a2's
    assert "outside the AOI" not in summary.domains["target"]["skipped"]
    assert {r["raster"] for r in index_rows(tmp_path / "chips")} == {0, 2}


def test_an_aoi_within_that_no_chip_fits_in_says_so_per_domain(tmp_path, rng):
    """The AOI covers the target and a 20 x 30 pixel patch of a source raster: no 32-pixel
    source chip lies within it, which the refusal says (not to check that the AOI covers both)."""
    from rasterio.warp import transform_bounds

    a1, a2, b1 = collections(tmp_path, rng)
    with rasterio.open(b1) as src:
        target = shapely.box(*transform_bounds(src.crs, "EPSG:32633", *src.bounds))
    x, y = UTM33 @ (40, 40)
    patch = shapely.box(x, y - 30 * 10.0, x + 20 * 10.0, y)
    gpd.GeoDataFrame(geometry=[patch, target], crs="EPSG:32633").to_file(tmp_path / "aoi.gpkg")
    with pytest.raises(GeoPix2PixError) as refused:
        export_chips(out_dir=tmp_path / "chips", unpaired=True, sources=[a1, a2], targets=[b1],
                     chip_size=32, aoi=tmp_path / "aoi.gpkg", aoi_mode="within",
                     progress=False, workers=0)
    assert str(refused.value) == (
        f"--aoi {tmp_path / 'aoi.gpkg'}: no 32-px chip of the source rasters lies within its "
        "polygons (the AOI covers up to about 20 x 30 pixels of a raster): use a smaller "
        "--chip-size or --aoi-mode intersects")


@pytest.mark.parametrize("inputs, message", [
    (dict(sources=[1], targets=["b1.tif"]), "sources=[1]: expected a list of raster paths"),
    (dict(rasters=[("a1.tif", "source"), ("b1.tif", "optical")]),
     "rasters[1]=('b1.tif', 'optical'): expected a (path, domain) pair"),
    (dict(rasters=3), "rasters=3: expected a path,domain CSV"),
    (dict(sources=["a1.tif"], targets=["b1.tif"]), "--source/--target list(s) the rasters of an "
                                                   "unpaired export: add --unpaired"),
])
def test_the_python_api_checks_the_unpaired_inputs(tmp_path, inputs, message):
    unpaired = "sources" not in inputs or inputs["sources"] != ["a1.tif"]
    with pytest.raises(GeoPix2PixError) as caught:
        export_chips(out_dir=tmp_path / "chips", unpaired=unpaired, **inputs)
    assert message in str(caught.value)


def test_loader_workers_draw_the_targets_the_dataset_draws(tmp_path, rng):
    from torch.utils.data import DataLoader

    export(tmp_path, rng, max_nodata=0.5)
    data = ChipDataset(tmp_path / "chips", "train", unpaired=True, seed=3)
    data.set_epoch(2)
    loaded = [i for batch in DataLoader(data, batch_size=4, num_workers=2)
              for i in batch["target_id"]]
    assert loaded == [data[i]["target_id"] for i in range(len(data))]


def test_persistent_loader_workers_draw_each_epochs_targets(tmp_path, rng):
    """Training's loader keeps its workers (and their copy of the dataset) across epochs: the
    sampler's (epoch, index) items make them draw each epoch's targets all the same."""
    from geopix2pix.training.data import EpochBatchSampler, make_loader
    from geopix2pix.training.device import device_setup

    export(tmp_path, rng, max_nodata=0.5)
    data = ChipDataset(tmp_path / "chips", "train", unpaired=True, seed=3)
    sampler = EpochBatchSampler(len(data), 4, 0, shuffle=False, with_epoch=True)
    loader = make_loader(data, sampler, 1, device_setup("cpu", False), seed=0)
    drawn = []
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        drawn.append([i for batch in loader for i in batch["target_id"]])
    for epoch, ids in enumerate(drawn):
        data.set_epoch(epoch)
        assert ids == [data[i]["target_id"] for i in range(len(ids))]
    assert drawn[0] != drawn[1]


def test_a_domains_split_does_not_depend_on_the_order_of_its_rasters(tmp_path, rng):
    """A tester's domain of a 4.5 m and a 300 m raster split in the first one's pixels: listed
    first, the fine raster's 256-px blocks made every coarse chip straddle (232 dropped); listed
    second, 8 were. The blocks are now in the coarsest raster's pixels, whatever the order."""
    fine = write_raster(tmp_path / "fine.tif", rng.random((1, 256, 256), dtype=np.float32),
                        transform=Affine(4.5, 0, 500000.0, 0, -4.5, 5200000.0))
    coarse = write_raster(tmp_path / "coarse.tif", rng.random((1, 256, 256), dtype=np.float32),
                          transform=Affine(300.0, 0, 460000.0, 0, -300.0, 5240000.0))
    target = write_raster(tmp_path / "b.tif", rng.random((1, 128, 128), dtype=np.float32),
                          transform=UTM33_FAR)
    kept = {}
    for order in ("fine first", "coarse first"):
        sources = [fine, coarse] if order == "fine first" else [coarse, fine]
        out = tmp_path / order.replace(" ", "_")
        summary = export_chips(out_dir=out, unpaired=True, sources=sources, targets=[target],
                               chip_size=32, progress=False, workers=0)
        with sqlite3.connect(out / "chips.gpkg") as db:
            rows = db.execute("SELECT path, row, col, split FROM chips WHERE domain = 'source'")
            kept[order] = sorted(rows.fetchall())
        straddling = summary.domains["source"]["skipped"].get(
            "straddling the train/val split", 0)
        assert straddling < 20, (order, straddling)
    assert kept["fine first"] == kept["coarse first"]
