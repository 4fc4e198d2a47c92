"""--aoi in another CRS selects the chips its polygons meet as drawn in their own CRS: long edges
(a parallel in degrees) are curves on a UTM grid, not chords, and an AOI far wider than the
rasters (the whole world) keeps every chip it covers. A file of several layers is read by the
layer that holds polygons, or the one --aoi-layer names."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from conftest import write_raster

import geopix2pix as g
from geopix2pix.chips.footprints import SLIVER
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError

# 256 x 256 pixels of 30 m in UTM 18S, about 46.5 degrees south (the Exploradores glacier)
UTM18S = Affine(30.0, 0.0, 600000.0, 0.0, -30.0, 4850000.0)
PARALLEL = -46.53  # crosses the grid: a box north of it has a 34-degree-long edge along it


def export(tmp_path, name, aoi=None):
    rng = np.random.default_rng(0)
    source = write_raster(tmp_path / "s.tif", rng.normal(size=(1, 256, 256)).astype("float32"),
                          crs="EPSG:32718", transform=UTM18S)
    target = write_raster(tmp_path / "t.tif", rng.normal(size=(1, 256, 256)).astype("float32"),
                          crs="EPSG:32718", transform=UTM18S)
    g.export_chips(source, target, tmp_path / name, chip_size=32, val_fraction=0,
                   max_nodata=1.0, aoi=aoi, shift_check=False, workers=0, progress=False)
    return gpd.read_file(tmp_path / name / "chips.gpkg")


def aoi_file(tmp_path, name, polygon) -> str:
    path = tmp_path / f"{name}.geojson"
    gpd.GeoDataFrame(geometry=[polygon], crs="EPSG:4326").to_file(path, driver="GeoJSON")
    return str(path)


def test_a_long_edge_along_a_parallel_selects_as_drawn(tmp_path):
    every = export(tmp_path, "all")
    north = shapely.box(-90.0, PARALLEL, -56.0, -20.0)
    kept = export(tmp_path, "north", aoi_file(tmp_path, "north", north))
    # footprints in EPSG:4326 (the index): those sharing more than a sliver of their area
    shares = every.intersection(north).area / every.area
    expected = set(every[shares > SLIVER].id)
    assert ((shares > 0) & (shares <= SLIVER)).any()  # (a chip the edge only grazes is out)
    assert 0 < len(expected) < len(every)
    assert set(kept.id) == expected


def test_a_world_wide_aoi_keeps_every_chip(tmp_path):
    every = export(tmp_path, "all")
    world = export(tmp_path, "world", aoi_file(tmp_path, "world",
                                               shapely.box(-180.0, -90.0, 180.0, 90.0)))
    assert set(world.id) == set(every.id)


def test_a_geopackage_of_several_layers_reads_its_polygons_or_the_layer_named(tmp_path,
                                                                             capsys):
    """A tester's aoi.gpkg held a point layer first: only it was read (with pyogrio's raw
    warning), and the refusal said the file held no polygons."""
    every = export(tmp_path, "all")
    lon, lat = -73.65, -46.53
    gpkg = tmp_path / "aoi.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.Point(lon, lat)], crs="EPSG:4326").to_file(
        gpkg, layer="gauges")
    west = shapely.box(-74.0, -47.0, lon, -46.0)
    gpd.GeoDataFrame(geometry=[west], crs="EPSG:4326").to_file(gpkg, layer="fields")
    kept = export(tmp_path, "fields", str(gpkg))  # the only layer of polygons
    assert set(kept.id) == set(every[every.intersects(west)].id) != set(every.id)
    east = shapely.box(lon, -47.0, -73.0, -46.0)
    gpd.GeoDataFrame(geometry=[east], crs="EPSG:4326").to_file(gpkg, layer="other")
    source, target = (str(tmp_path / name) for name in ("s.tif", "t.tif"))
    args = ["export-chips", source, target, "--chip-size", "32", "--val-fraction", "0",
            "--max-nodata", "1", "--no-shift-check", "--workers", "0", "-q", "--aoi", str(gpkg)]
    assert main([*args, "-o", str(tmp_path / "two")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --aoi {gpkg} holds polygons in 2 layers (fields, other); choose one with "
        "--aoi-layer")
    assert main([*args, "-o", str(tmp_path / "none"), "--aoi-layer", "roads"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --aoi-layer roads: {gpkg} has no such layer; its layers: gauges, fields, other")
    assert main([*args, "-o", str(tmp_path / "east"), "--aoi-layer", "other"]) == 0
    assert set(gpd.read_file(tmp_path / "east" / "chips.gpkg").id) == \
        set(every[every.intersects(east)].id)
    assert main([*args, "-o", str(tmp_path / "pts"), "--aoi-layer", "gauges"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --aoi {gpkg} layer gauges holds no polygons; pass polygon features")


def test_an_aoi_layer_needs_an_aoi(tmp_path):
    with pytest.raises(GeoPix2PixError, match="--aoi-layer fields needs --aoi"):
        g.export_chips(tmp_path / "s.tif", tmp_path / "t.tif", tmp_path / "c", aoi_layer="fields")


def test_an_aoi_across_the_antimeridian_reaches_grids_past_or_across_it():
    """A reviewer's AOIs stored in -180..180 lost their part east of 180 once clipped to a grid
    defined past it (lon 179..181), and a world-wide AOI kept nothing of a UTM grid across it."""
    from pyproj import Transformer
    from rasterio.crs import CRS

    from geopix2pix.chips.footprints import aoi_filter
    from geopix2pix.chips.layout import ChipWindow
    from geopix2pix.raster.grid import Grid

    past = Grid(CRS.from_epsg(4326), Affine(0.01, 0, 179.0, 0, -0.01, -51.0), 200, 100)
    both_sides = shapely.MultiPolygon([shapely.box(179.0, -52, 180.0, -51),
                                       shapely.box(-180.0, -52, -179.0, -51)])
    chips = [ChipWindow(0, 0, c, 50) for c in range(0, 200, 50)]  # 179..181, 0.5 degrees each
    for crs in ("EPSG:4326", "EPSG:4269"):  # WGS 84, and NAD83 (another geographic CRS)
        aoi = gpd.GeoDataFrame(geometry=[both_sides], crs=crs)
        assert aoi_filter(chips, past, aoi, "intersects").tolist() == [True] * 4, crs
    x, y = Transformer.from_crs(4326, 32760, always_xy=True).transform(179.9, -45.0)
    across = Grid(CRS.from_epsg(32760), Affine(100, 0, x, 0, -100, y), 256, 64)  # to -179.78
    chips = [ChipWindow(0, 0, c, 32) for c in range(0, 256, 32)]
    for area in (shapely.box(-180, -90, 180, 90), shapely.box(-180, -60, 180, -30)):
        aoi = gpd.GeoDataFrame(geometry=[area], crs="EPSG:4326")
        assert aoi_filter(chips, across, aoi, "intersects").all()
    east = gpd.GeoDataFrame(geometry=[shapely.box(-180, -60, -179.9, -30)], crs="EPSG:4326")
    # chips from 179.9, 179.941, 179.981, -179.978, -179.938, -179.897, ... degrees east
    assert aoi_filter(chips, across, east, "intersects").tolist() == [False, False, True, True,
                                                                      True, False, False, False]


def test_a_geopackage_with_a_table_and_a_self_intersecting_polygon_is_read(tmp_path):
    """QGIS saves its layer styles as a table beside the layers (it was read as a layer and
    failed), and a hand-drawn bow tie is no valid polygon (its union failed, a traceback)."""
    import pandas as pd
    import pyogrio

    every = export(tmp_path, "all")
    lon = -73.65
    gpkg = tmp_path / "aoi.gpkg"
    bow_tie = shapely.Polygon([(-74.0, -47.0), (lon, -46.0), (lon, -47.0), (-74.0, -46.0)])
    gpd.GeoDataFrame(geometry=[bow_tie], crs="EPSG:4326").to_file(gpkg, layer="fields")
    pyogrio.write_dataframe(pd.DataFrame({"styleName": ["s"], "styleQML": ["<qgis/>"]}), gpkg,
                            layer="layer_styles", driver="GPKG")
    kept = export(tmp_path, "kept", str(gpkg))
    valid = shapely.make_valid(bow_tie)
    assert set(kept.id) == set(every[every.intersects(valid)].id) != set(every.id)


def test_an_aoi_smaller_than_a_chip_within_says_no_chip_fits_not_that_it_misses(tmp_path,
                                                                                 capsys):
    """A tester's AOI lay inside the rasters but was smaller than a chip: --aoi-mode within
    kept nothing and the refusal said to check that the AOI covers the rasters, which it did."""
    export(tmp_path, "all")
    x, y = UTM18S @ (50, 40)  # 60 x 100 pixels from column 50, row 40
    inside = gpd.GeoDataFrame(geometry=[shapely.box(x, y - 100 * 30.0, x + 60 * 30.0, y)],
                              crs="EPSG:32718")
    inside.to_file(tmp_path / "inside.gpkg")
    inside.translate(1e6, 0).to_file(tmp_path / "away.gpkg")
    args = ["export-chips", str(tmp_path / "s.tif"), str(tmp_path / "t.tif"), "--chip-size",
            "64", "--val-fraction", "0", "--no-shift-check", "--workers", "0", "-q",
            "--aoi-mode", "within", "-o", str(tmp_path / "out")]
    assert main([*args, "--aoi", str(tmp_path / "inside.gpkg")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --aoi {tmp_path / 'inside.gpkg'}: no 64-px chip of the pair(s) lies within its "
        "polygons (the AOI covers up to about 60 x 100 pixels of the raster): use a smaller "
        "--chip-size or --aoi-mode intersects")
    assert main([*args, "--aoi", str(tmp_path / "away.gpkg")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: --aoi {tmp_path / 'away.gpkg'}: no chip of the pair(s) within its polygons; "
        "check that the AOI covers the rasters")
    assert main([*args, "--aoi", str(tmp_path / "inside.gpkg"), "--chip-size", "32"]) == 0
    # 70 px wide from column 50: a 64-px chip fits, but none of the lattice at stride 64 does
    wide = gpd.GeoDataFrame(geometry=[shapely.box(x, y - 100 * 30.0, x + 70 * 30.0, y)],
                            crs="EPSG:32718")
    wide.to_file(tmp_path / "wide.gpkg")
    assert main([*args, "--aoi", str(tmp_path / "wide.gpkg")]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "(the AOI covers up to about 70 x 100 pixels of the raster): use a smaller --stride "
        "(chips laid closer, one may then fall inside), a smaller --chip-size or --aoi-mode "
        "intersects")
    assert main([*args, "--aoi", str(tmp_path / "wide.gpkg"), "--stride", "8",
                 "--overwrite"]) == 0


def test_an_aoi_drawn_on_the_chips_grid_keeps_the_chips_inside_not_those_touching_it(tmp_path):
    """Four chips' outline as the AOI: intersects kept the twelve chips around it too, which
    share no pixel with it (only an edge or a corner)."""
    every = export(tmp_path, "all")
    x0, y0 = UTM18S.c, UTM18S.f
    four = shapely.box(x0, y0 - 64 * 30.0, x0 + 64 * 30.0, y0)  # chips (0, 0) to (1, 1)
    path = tmp_path / "four.gpkg"
    gpd.GeoDataFrame(geometry=[four], crs="EPSG:32718").to_file(path, driver="GPKG")
    kept = export(tmp_path, "four", str(path))
    inside = every.to_crs("EPSG:32718")
    inside = inside[inside.intersection(four).area > 0.5 * 32 * 32 * 900]
    assert len(kept) == len(inside) == 4 and set(kept.id) == set(inside.id)


def test_a_grid_turned_90_degrees_takes_an_aoi_in_another_crs(tmp_path):
    """Its transform has no a or e term: the AOI's surroundings were sized from them (0) and
    shapely refused the 0 tolerance with a traceback."""
    turned = Affine(0.0, 30.0, 600000.0, -30.0, 0.0, 4850000.0)
    rng = np.random.default_rng(0)
    paths = [write_raster(tmp_path / f"{name}.tif",
                          rng.normal(size=(1, 128, 128)).astype("float32"), crs="EPSG:32718",
                          transform=turned) for name in ("s", "t")]
    world = aoi_file(tmp_path, "world", shapely.box(-180.0, -90.0, 180.0, 90.0))
    summary = g.export_chips(*paths, tmp_path / "chips", chip_size=32, val_fraction=0,
                             max_nodata=1.0, aoi=world, shift_check=False, workers=0,
                             progress=False)
    assert summary.kept["train"] == 16


def test_an_aoi_drawn_on_chips_gpkg_keeps_the_chips_it_covers(tmp_path):
    """The footprints of four chips from chips.gpkg (EPSG:4326) as the AOI: reprojected onto the
    grid, its edges leave slivers of area with the chips around, which kept six more."""
    every = export(tmp_path, "all")
    chosen = every[every.id.isin(sorted(every.id)[:2]) | every.id.isin(sorted(every.id)[8:10])]
    path = tmp_path / "four.gpkg"
    gpd.GeoDataFrame(geometry=[chosen.union_all()], crs=every.crs).to_file(path, driver="GPKG")
    kept = export(tmp_path, "four", str(path))
    assert set(kept.id) == set(chosen.id) and len(kept) == 4


@pytest.mark.parametrize("mode", ["intersects", "within"])
def test_large_chips_drawn_on_chips_gpkg_and_a_tiny_aoi_keep_what_they_cover(tmp_path, mode):
    """128 px chips of 30 m: chips.gpkg's footprints, straight in degrees, bow by metres on the
    UTM grid, so four of them as the AOI shared whole pixels with the chips around (six kept),
    and `within` kept none of the four; a 5 m plot inside one chip kept none."""
    rng = np.random.default_rng(0)
    paths = [write_raster(tmp_path / f"{n}.tif", rng.normal(size=(1, 512, 512)).astype("float32"),
                          crs="EPSG:32718", transform=UTM18S) for n in ("s", "t")]

    def kept(name, aoi):
        g.export_chips(*paths, tmp_path / name, chip_size=128, val_fraction=0, max_nodata=1.0,
                       aoi=aoi, aoi_mode=mode, shift_check=False, workers=0, progress=False)
        return set(gpd.read_file(tmp_path / name / "chips.gpkg").id)

    assert len(kept("all", None)) == 16
    every = gpd.read_file(tmp_path / "all" / "chips.gpkg")
    block = every[every.id.isin({"p000_r000128_c000128", "p000_r000128_c000256",
                                 "p000_r000256_c000128", "p000_r000256_c000256"})]
    path = tmp_path / "block.gpkg"
    gpd.GeoDataFrame(geometry=[block.union_all()], crs=every.crs).to_file(path, driver="GPKG")
    assert kept("block", str(path)) == set(block.id)
    x, y = UTM18S.c + 200 * 30.0, UTM18S.f - 200 * 30.0  # inside chip (128, 128)
    plot = tmp_path / "plot.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.box(x, y - 5, x + 5, y)], crs="EPSG:32718").to_file(plot)
    if mode == "intersects":
        assert kept("plot", str(plot)) == {"p000_r000128_c000128"}
    else:
        with pytest.raises(GeoPix2PixError, match="no 128-px chip"):
            kept("plot", str(plot))


@pytest.mark.parametrize("crs, step", [("EPSG:32718", 30.0), ("EPSG:4326", 0.0003)])
def test_plots_smaller_than_a_sliver_keep_the_chips_they_lie_in(tmp_path, crs, step):
    """Four 20 m plots as one AOI, in four chips: the tiny-AOI rule took the whole AOI's area
    (and on a grid in degrees three times it, with its copies a turn away) and kept none."""
    grid = Affine(step, 0, 600000.0 if crs != "EPSG:4326" else -72.0, 0, -step,
                  4850000.0 if crs != "EPSG:4326" else -46.0)
    rng = np.random.default_rng(0)
    paths = [write_raster(tmp_path / f"{n}.tif", rng.normal(size=(1, 512, 512)).astype("float32"),
                          crs=crs, transform=grid) for n in ("s", "t")]
    side = step * 20 / 30.0  # 20 m (or its width in degrees)
    plots = [shapely.Point(*(grid * (c, r))).buffer(side / 2, cap_style="square")
             for r, c in ((64, 64), (64, 320), (320, 64), (320, 320))]
    path = tmp_path / "plots.gpkg"
    gpd.GeoDataFrame(geometry=[shapely.union_all(plots)], crs=crs).to_file(path, driver="GPKG")
    g.export_chips(*paths, tmp_path / "chips", chip_size=128, val_fraction=0, max_nodata=1.0,
                   aoi=str(path), shift_check=False, workers=0, progress=False)
    kept = set(gpd.read_file(tmp_path / "chips" / "chips.gpkg").id)
    assert kept == {"p000_r000000_c000000", "p000_r000000_c000256", "p000_r000256_c000000",
                    "p000_r000256_c000256"}
