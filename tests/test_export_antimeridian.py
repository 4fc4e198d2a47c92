"""Scenes at the antimeridian (Fiji, Kamchatka, the Aleutians) and near a pole: a grid in
degrees defined past 180 and a UTM grid across it pair with each other (as do two grids in
degrees written 360 apart), AOIs reach them, the chips.gpkg footprints are split at 180 degrees
instead of spanning the globe the other way, and a scene inside a polar target pairs with it."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from affine import Affine
from conftest import write_raster
from rasterio.crs import CRS
from rasterio.warp import transform

import geopix2pix as g

DEGREES = Affine(0.005, 0, 179.6, 0, -0.005, -16.0)  # 179.6 .. 180.24 E, 128 px
UTM60S = Affine(320, 0, 770000, 0, -320, 8236000)  # 82 km wide across 180 E near 16 S


def field(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """A smooth field of position, continuous across the antimeridian (period 1.8 degrees)."""
    return (100 + 40 * np.sin(np.radians(lon) * 200) + 40 * np.cos(np.radians(lat) * 150)
            ).astype(np.float32)


def write_field(path, crs: str, grid: Affine, size: int):
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    xs, ys = grid @ (cols.ravel(), rows.ravel())
    lon, lat = transform(crs, "EPSG:4326", xs, ys) if crs != "EPSG:4326" else (xs, ys)
    values = field(np.asarray(lon), np.asarray(lat)).reshape(size, size)
    return write_raster(path, values, crs=crs, transform=grid)


def chip_pairs(chips_dir):
    import rasterio

    index = gpd.read_file(chips_dir / "chips.gpkg")
    for chip_id in index["id"]:
        with rasterio.open(chips_dir / "source" / f"{chip_id}.tif") as s, \
                rasterio.open(chips_dir / "target" / f"{chip_id}.tif") as t:
            yield s.read(1), t.read(1)


def test_degrees_past_180_pair_with_a_utm_target(tmp_path):
    source = write_field(tmp_path / "s.tif", "EPSG:4326", DEGREES, 128)
    target = write_field(tmp_path / "t.tif", "EPSG:32760", UTM60S, 256)
    summary = g.export_chips(source, target, tmp_path / "chips", chip_size=32, val_fraction=0,
                             progress=False)
    assert summary.kept["train"] == 16  # the whole scene: the target covers it
    errors = [np.abs(s - t).mean() for s, t in chip_pairs(tmp_path / "chips")]
    assert max(errors) < 1.0, errors  # aligned: the field spans 20..180 units
    index = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    bounds = index.geometry.bounds
    assert bounds.minx.min() >= -180 and bounds.maxx.max() <= 180
    # chips past 180 E come back at -180..-179.76, as two parts for the chip across 180
    parts = [len(getattr(geom, "geoms", [geom])) for geom in index.geometry]
    assert (bounds.maxx < -179.7).sum() == 4 and parts.count(2) == 4
    assert index.geometry.area.sum() == pytest.approx(0.64 * 0.64, rel=1e-9)


def test_an_aoi_reaches_a_grid_defined_past_180(tmp_path):
    source = write_field(tmp_path / "s.tif", "EPSG:4326", DEGREES, 128)
    aoi = tmp_path / "aoi.gpkg"
    east_of_180 = shapely.box(-179.9, -16.5, -179.85, -16.1)  # as any GIS stores it
    gpd.GeoDataFrame(geometry=[east_of_180], crs="EPSG:4326").to_crs("EPSG:32760").to_file(aoi)
    summary = g.export_chips(source, source, tmp_path / "chips", chip_size=32, val_fraction=0,
                             aoi=aoi, progress=False)
    index = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    assert summary.kept["train"] == len(index) > 0
    assert (index["col"] == 96).all()  # only chips of the column 180.08 .. 180.24 E


def test_utm_footprints_across_180_are_split_there(tmp_path):
    scene = write_field(tmp_path / "s.tif", "EPSG:32760", UTM60S, 256)
    g.export_chips(scene, scene, tmp_path / "chips", chip_size=64, val_fraction=0,
                   progress=False)
    index = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    widths = [max(p.bounds[2] - p.bounds[0] for p in getattr(geom, "geoms", [geom]))
              for geom in index.geometry]
    assert max(widths) < 0.25  # 20 km chips: no part spans the globe
    assert any(len(getattr(geom, "geoms", [])) == 2 for geom in index.geometry)
    assert index.total_bounds[0] == pytest.approx(-180) or index.total_bounds[0] < -179


def test_grids_in_degrees_written_360_apart_pair_bit_exactly(tmp_path):
    data = np.random.default_rng(0).random((1, 128, 128)).astype("float32")
    east = write_raster(tmp_path / "east.tif", data, crs="EPSG:4326", transform=DEGREES)
    west = write_raster(tmp_path / "west.tif", data * 2, crs="EPSG:4326",
                        transform=Affine(0.005, 0, 179.6 - 360, 0, -0.005, -16.0))
    summary = g.export_chips(east, west, tmp_path / "chips", chip_size=32, val_fraction=0.25,
                             split_block=32, progress=False)
    assert summary.kept["train"] + summary.kept["val"] == 16
    for s, t in chip_pairs(tmp_path / "chips"):
        np.testing.assert_array_equal(s * 2, t)  # the same pixels, not a warp


def test_a_scene_inside_a_polar_target_pairs_with_it(tmp_path):
    """Svalbard in degrees inside an Arctic polar stereographic target: the target's outline
    is a ring around the pole, in degrees far south of the scene, yet the scene is inside."""
    svalbard = write_raster(tmp_path / "s.tif", np.ones((1, 256, 256), np.float32),
                            crs="EPSG:4326", transform=Affine(0.002, 0, 15.0, 0, -0.002, 78.5))
    arctic = write_raster(tmp_path / "t.tif", np.ones((1, 600, 600), np.float32),
                          crs="EPSG:3413", transform=Affine(10000, 0, -3e6, 0, -10000, 3e6))
    summary = g.export_chips(svalbard, arctic, tmp_path / "chips", chip_size=64,
                             split_block=64, progress=False)
    assert summary.kept["train"] + summary.kept["val"] == 16  # the whole scene


def test_a_target_in_degrees_past_180_is_read_east_of_180_too(tmp_path):
    """GDAL's warper maps each source pixel back into the target: east of 180 it found -179.9,
    outside a target written 179.6..180.24, and those chips came out empty."""
    source = write_field(tmp_path / "s.tif", "EPSG:32760", UTM60S, 256)
    target = write_field(tmp_path / "t.tif", "EPSG:4326", DEGREES, 128)
    g.export_chips(source, target, tmp_path / "chips", chip_size=32, val_fraction=0,
                   max_nodata=1.0, progress=False)
    index = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    box = index.geometry.bounds  # chips wholly east of 180 and inside the target (to 180.24)
    east = index[(box.minx > -180) & (box.maxx < -179.76) & (box.miny > -16.64) &
                 (box.maxy < -16.0)]
    assert len(east) >= 2 and (east.valid_fraction == 1).all()
    errors = [np.abs(s - t).mean() for s, t in chip_pairs(tmp_path / "chips")
              if not np.isnan(t).any()]
    assert len(errors) >= len(east) and max(errors) < 1.0


def test_footprints_are_drawn_beside_a_scene_defined_past_180(tmp_path):
    source = write_field(tmp_path / "s.tif", "EPSG:4326", DEGREES, 128)
    g.export_chips(source, source, tmp_path / "chips", chip_size=32, val_fraction=0,
                   progress=False)
    figure = g.plot_footprints(tmp_path / "chips", scene=source)
    left, right = figure.axes[0].get_xlim()
    assert 179.5 < left < 179.7 and 180.2 < right < 180.3  # not -180 .. 180


def test_a_target_over_part_of_the_scene_bounds_the_chips_exactly(tmp_path):
    """The polar case's extra source points must not widen an ordinary partial overlap: a
    target over the left half gives chips there and no chip half outside it."""
    data = np.random.default_rng(1).random((1, 256, 256)).astype("float32")
    source = write_raster(tmp_path / "s.tif", data)
    target = write_raster(tmp_path / "t.tif", data[:, :, :128])  # the same grid's left half
    summary = g.export_chips(source, target, tmp_path / "chips", chip_size=32, val_fraction=0,
                             max_nodata=1.0, progress=False)
    index = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    assert summary.kept["train"] == 32 and sorted(set(index["col"])) == [0, 32, 64, 96]
    assert (index.valid_fraction == 1).all()


@pytest.mark.parametrize("step", [0.01, 0.02])  # the map's pixels; twice them: warped
def test_a_scene_past_180_takes_a_world_target_east_of_180_too(tmp_path, step):
    """A scene 179.68..180.32 E against a world map in -180..180: at the same pixel size the
    direct read ran past the map's right edge (a broadcast traceback); warped, every pixel east
    of 180 was sought past that edge and the chips there came out empty."""
    import rasterio

    columns = np.arange(36000)  # the map's, 0.01 degrees each from -180: codes 1..200
    world = np.broadcast_to((columns % 200 + 1).astype("uint8"), (1, 64, 36000))
    target = write_raster(tmp_path / "world.tif", world, crs="EPSG:4326", nodata=0,
                          transform=Affine(0.01, 0, -180.0, 0, -0.01, -16.0))
    size, west = round(0.64 / step), 179.68 - (step - 0.01) / 2  # (centres on the map's)
    scene = write_raster(tmp_path / "scene.tif", np.ones((1, size, size), np.float32),
                         crs="EPSG:4326", transform=Affine(step, 0, west, 0, -step, -16.0))
    summary = g.export_chips(scene, target, tmp_path / "chips", chip_size=32, val_fraction=0,
                             max_nodata=0.0, shift_check=False, target_resampling="nearest",
                             progress=False)
    assert summary.kept["train"] == (size // 32) ** 2  # none dropped as empty
    for _, chip in gpd.read_file(tmp_path / "chips" / "chips.gpkg").iterrows():
        with rasterio.open(tmp_path / "chips" / "target" / f"{chip['id']}.tif") as t:
            codes = t.read(1)
        lons = west + (chip["col"] + np.arange(32) + 0.5) * step  # past 180 on the right
        expected = np.floor(((lons + 180) % 360) / 0.01).astype(int) % 200 + 1
        np.testing.assert_array_equal(codes, np.broadcast_to(expected, (32, 32)))


def test_a_grid_past_180_in_another_datum_is_read_in_place(tmp_path):
    """A Fiji (EPSG:4748) map warped onto a 4748 grid past 180: its CRS rebuilt from PROJ's
    string carries a +towgs84 that EPSG's own transformation does not, and the read came out
    4 pixels (400 m) off."""
    from geopix2pix.raster.grid import Grid
    from geopix2pix.raster.io import open_raster, warped_view

    codes = np.broadcast_to((np.arange(1000) % 250 + 1).astype("uint8"), (1, 8, 1000))
    path = write_raster(tmp_path / "fiji.tif", codes, crs="EPSG:4748", nodata=0,
                        transform=Affine(0.001, 0, 179.0, 0, -0.001, -17.0))
    grid = Grid(CRS.from_epsg(4748), Affine(0.001, 0, 179.5, 0, -0.001, -17.0), 1000, 8)
    with open_raster(path) as dataset, warped_view(dataset, grid, "nearest") as view:
        np.testing.assert_array_equal(view.read(1)[0, :500], codes[0, 0, 500:])


def test_a_scene_east_of_0_reads_a_world_target_directly(tmp_path):
    """The world map's origin, -180, is +180 seen from a scene east of 0: its offset pointed a
    turn away, off the map (chips came out empty); it is taken a turn back, and read as it is."""
    from geopix2pix.raster.grid import Grid

    world = Grid(CRS.from_epsg(4326), Affine(0.01, 0, -180.0, 0, -0.01, -16.0), 36000, 64)
    for west, col in ((10.0, -19000), (-20.0, -16000), (-179.99, -1)):
        scene = Grid(CRS.from_epsg(4326), Affine(0.01, 0, west, 0, -0.01, -16.0), 64, 64)
        assert world.integer_offset(scene) == (0, col)
    past = Grid(CRS.from_epsg(4326), Affine(0.01, 0, 179.68, 0, -0.01, -16.0), 64, 64)
    assert world.integer_offset(past) is None  # (runs past the map's edge: warped)



def test_a_grid_past_180_whose_unit_is_spelt_degree_is_wrapped_too(tmp_path):
    """An Esri .prj says UNIT["Degree", ...]: the unit's name was compared, not its size, and
    the ground east of 180 was lost again."""
    from geopix2pix.raster.grid import Grid
    from geopix2pix.raster.io import open_raster, warped_view

    esri = CRS.from_wkt('GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",'
                        '6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],'
                        'UNIT["Degree",0.0174532925199433]]')
    codes = np.broadcast_to((np.arange(3600) % 250 + 1).astype("uint8"), (1, 4, 3600))
    world = write_raster(tmp_path / "world.tif", codes, crs="EPSG:4326", nodata=0,
                         transform=Affine(0.1, 0, -180.0, 0, -0.1, -16.0))
    grid = Grid(esri, Affine(0.1, 0, 179.8, 0, -0.1, -16.0), 4, 4)  # 179.8 .. 180.2
    with open_raster(world) as dataset, warped_view(dataset, grid, "nearest") as view:
        np.testing.assert_array_equal(view.read(1)[0], codes[0, 0, [3598, 3599, 0, 1]])
