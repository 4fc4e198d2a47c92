"""Pixel sizes in metres on the ground (`raster.ground`), not in CRS units: a tester's Web
Mercator raster (EPSG:3857, 1.62 units per ground metre at 51.9 degrees north) was cut at
--pixel-size 6 into 3.7 m ground pixels, warned of as 2.2x a 4.5 m UTM domain (1.37x on the
ground), and predict misjudged its pixel size against the training's the same way."""

from __future__ import annotations

import json
import math

import numpy as np
import pyproj
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from rasterio.crs import CRS

from geopix2pix.chips.export import export_chips
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.prediction.checks import pixel_size_ratios
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.ground import ground_pixel_size
from tests.predict_helpers import metadata

LON, LAT = 4.4, 51.9  # Rotterdam
GEOD = pyproj.Geod(ellps="WGS84")


def mercator_origin() -> tuple[float, float]:
    return pyproj.Transformer.from_crs(4326, 3857, always_xy=True).transform(LON, LAT)


def utm_origin() -> tuple[float, float]:
    return pyproj.Transformer.from_crs(4326, 32631, always_xy=True).transform(LON, LAT)


def geodesic_width(path) -> float:
    """Metres on the ground along a raster's top edge."""
    with rasterio.open(path) as ds:
        left, top = ds.transform @ (0, 0)
        right, _ = ds.transform @ (ds.width, 0)
        to_lonlat = pyproj.Transformer.from_crs(ds.crs.to_wkt(), 4326, always_xy=True)
        (lon0, lon1), (lat0, lat1) = to_lonlat.transform([left, right], [top, top])
    return GEOD.inv(lon0, lat0, lon1, lat1)[2]


PHI = math.radians(LAT)  # metres per degree there (textbook series for WGS84)
PER_DEGREE_LON = 111_412.84 * math.cos(PHI) - 93.5 * math.cos(3 * PHI)
PER_DEGREE_LAT = 111_132.954 - 559.822 * math.cos(2 * PHI) + 1.175 * math.cos(4 * PHI)


@pytest.mark.parametrize("crs, size, expected", [
    ("EPSG:32631", 10.0, (10.0, 10.0)),  # UTM: its units exactly (scale 0.9997 is within 1 %)
    ("EPSG:3857", 10.0, (10 * math.cos(PHI),) * 2),
    ("EPSG:4326", 1e-4, (1e-4 * PER_DEGREE_LON, 1e-4 * PER_DEGREE_LAT)),
    ("+proj=utm +zone=31 +units=us-ft", 10.0, (10 * 0.3048006,) * 2),
    # equidistant cylindrical: true along meridians, stretched 1 / cos(latitude) along parallels
    ("EPSG:4087", 10.0, (10 * math.cos(PHI), 10.0)),
])
def test_a_pixel_is_measured_in_metres_on_the_ground(crs, size, expected):
    crs = CRS.from_user_input(crs)
    if crs.to_epsg() in (3857, 4087):
        x, y = pyproj.Transformer.from_crs(4326, crs.to_wkt(), always_xy=True).transform(
            LON, LAT)
    elif crs.is_geographic:
        x, y = LON, LAT
    else:
        x, y = utm_origin()
    ground = ground_pixel_size(Grid(crs, Affine(size, 0, x, 0, -size, y), 4, 4))
    assert ground == pytest.approx(expected, rel=4e-3)
    assert ground_pixel_size(Grid(None, Affine(size, 0, x, 0, -size, y), 4, 4)) is None
    local = CRS.from_wkt('LOCAL_CS["x",UNIT["unknown",1]]')  # not on the Earth: no ground
    assert ground_pixel_size(Grid(local, Affine(size, 0, x, 0, -size, y), 4, 4)) is None


def mercator_raster(path, ground_metres: float, size: int = 256, rng=None):
    """A Web Mercator raster at 51.9 N whose pixels are `ground_metres` on the ground (on the
    sphere: on the WGS84 ellipsoid, within 0.3 %, Web Mercator being spherical)."""
    units = ground_metres / math.cos(math.radians(LAT))
    x, y = mercator_origin()
    data = (rng or np.random.default_rng(0)).random((3, size, size), dtype=np.float32)
    return write_raster(path, data, crs="EPSG:3857", transform=Affine(units, 0, x, 0, -units, y))


def utm_raster(path, metres: float, size: int = 256, bands: int = 2):
    x, y = utm_origin()
    data = np.random.default_rng(1).random((bands, size, size), dtype=np.float32)
    return write_raster(path, data, crs="EPSG:32631", transform=Affine(metres, 0, x, 0, -metres, y))


def test_unpaired_pixel_size_is_ground_metres_in_web_mercator_too(tmp_path):
    sar = utm_raster(tmp_path / "sar.tif", 4.5)
    optical = mercator_raster(tmp_path / "optical.tif", 4.5)
    out = tmp_path / "chips"
    summary = export_chips(out_dir=out, unpaired=True, sources=[sar], targets=[optical],
                           pixel_size=6.0, chip_size=32, progress=False, workers=1)
    for domain in ("source", "target"):
        chip = next((out / domain).glob("*.tif"))
        assert geodesic_width(chip) == pytest.approx(32 * 6.0, rel=0.01), domain
    with rasterio.open(next((out / "source").glob("*.tif"))) as ds:
        assert ds.res == (6.0, 6.0)  # UTM: exactly the units asked
    info = json.loads((out / "dataset.json").read_text())
    assert [r["ground_pixel_size"] for r in info["rasters"]] == [
        pytest.approx([6.0, 6.0], rel=5e-3)] * 2
    assert not any("apart" in w for w in summary.warnings)


def test_domains_are_compared_on_the_ground(tmp_path):
    """10 Web Mercator units at 51.9 N are 6.2 m: 1.37x a 4.5 m domain, no warning; 20 m
    ground pixels are 4.4x and are warned of, in ground metres."""
    sar = utm_raster(tmp_path / "sar.tif", 4.5)
    near = mercator_raster(tmp_path / "near.tif", 10 * math.cos(math.radians(LAT)))
    far = mercator_raster(tmp_path / "far.tif", 20.0)
    options = dict(unpaired=True, chip_size=32, progress=False, workers=1)
    quiet = export_chips(out_dir=tmp_path / "a", sources=[sar], targets=[near], **options)
    assert not any("apart" in w for w in quiet.warnings)
    with pytest.warns(UserWarning, match=r"4.5 m and the target rasters' 20 m \(4.[45]x apart\)"):
        export_chips(out_dir=tmp_path / "b", sources=[sar], targets=[far], **options)


def test_predict_compares_a_scene_with_the_training_on_the_ground(tmp_path):
    """A model trained on 4.5 m UTM pixels and a Web Mercator scene of 7.29 units (4.5 m on the
    ground): the same pixels, so no warning and no resampling; 15 m ground pixels are 3.3x."""
    trained = ModelMetadata.from_dict(metadata(pixel_size=(4.5, 4.5), crs="EPSG:32631",
                                               ground_pixel_size=[4.5, 4.5]))
    same = mercator_raster(tmp_path / "same.tif", 4.5)
    coarse = mercator_raster(tmp_path / "coarse.tif", 15.0)
    with rasterio.open(same) as a, rasterio.open(coarse) as b:
        assert pixel_size_ratios(Grid.of(a), trained) == (1.0, 1.0)
        assert pixel_size_ratios(Grid.of(b), trained) == pytest.approx((15 / 4.5,) * 2, rel=3e-3)
    # a file from before the ground size: CRS units as before (7.29 units, 1.62x)
    old = ModelMetadata.from_dict(metadata(pixel_size=(4.5, 4.5), crs="EPSG:32631"))
    with rasterio.open(same) as a:
        assert pixel_size_ratios(Grid.of(a), old) == pytest.approx((1.62, 1.62), rel=0.01)


@pytest.mark.parametrize("bad", [[-1, 2], [float("nan"), 1], [1], "x"])
def test_a_model_files_ground_pixel_size_is_checked(bad):
    from geopix2pix.models.schema import SchemaError

    data = metadata(ground_pixel_size=[4.5, 4.5])
    data["ground_pixel_size"] = bad
    with pytest.raises(SchemaError, match="ground_pixel_size"):
        ModelMetadata.from_dict(data)


def test_a_trained_model_file_records_the_chips_ground_pixel_size(tmp_path):
    from geopix2pix import load_model, train

    source = mercator_raster(tmp_path / "s.tif", 4.5, size=128)
    target = write_raster(tmp_path / "t.tif", np.ones((1, 128, 128), np.float32),
                          crs="EPSG:3857", transform=rasterio.open(source).transform)
    export_chips(source, target, tmp_path / "chips", chip_size=32, progress=False, workers=1)
    info = json.loads((tmp_path / "chips" / "dataset.json").read_text())
    assert info["ground_pixel_size"] == pytest.approx([4.5, 4.5], rel=5e-3)
    run = train(tmp_path / "chips", tmp_path / "run", max_steps=1, ngf=8, ndf=8, batch_size=2,
                workers=0, quiet=True, device="cpu")
    meta = ModelMetadata.of(load_model(run.model_path))
    assert meta.ground_pixel_size == pytest.approx((4.5, 4.5), rel=5e-3)


def test_the_trainings_own_pixel_size_in_its_own_crs_is_the_same_anywhere(tmp_path):
    """The reviewer's case: a model of 0.0001 degree pixels at 10 N and a scene of the same
    pixels at 50 N were 0.83x apart on the ground (x alone shrinks), so --resample-to-model
    rescaled both axes; the training's own grid units are taken as the same pixels."""
    trained = ModelMetadata.from_dict(metadata(pixel_size=(1e-4, 1e-4), crs="EPSG:4326",
                                               ground_pixel_size=[10.96, 11.06]))
    scene = Grid(CRS.from_epsg(4326), Affine(1e-4, 0, 4.0, 0, -1e-4, 50.0), 64, 64)
    assert pixel_size_ratios(scene, trained) == (1.0, 1.0)


def test_resample_to_model_scales_each_axis_to_the_training_s_ground_size(tmp_path,
                                                                          monkeypatch):
    """A scene of 0.0001 degree pixels at 60 N (5.6 x 11.1 m on the ground) and a 10 m model:
    one ratio for both axes (0.84) predicted it on 6.7 x 13.3 m pixels, squashed 2:1; each axis
    now gets its own, so the model sees 10 x 10 m pixels."""
    from geopix2pix.prediction.resample import model_grid

    trained = ModelMetadata.from_dict(metadata(pixel_size=(10, 10), crs="EPSG:32633",
                                               ground_pixel_size=[10.0, 10.0]))
    scene = Grid(CRS.from_epsg(4326), Affine(1e-4, 0, 10.0, 0, -1e-4, 60.05), 1000, 1000)
    ratios = pixel_size_ratios(scene, trained)
    assert ratios[0] == pytest.approx(0.558, rel=0.01) and ratios[1] == pytest.approx(1.11,
                                                                                     rel=0.01)
    assert ground_pixel_size(model_grid(scene, ratios)) == pytest.approx((10.0, 10.0), rel=2e-3)
    assert pixel_size_ratios(Grid(CRS.from_epsg(32633), Affine(10, 0, 5e5, 0, -10, 5e6), 64, 64),
                             trained) == (1.0, 1.0)
    # end to end: predicted on that grid, said, and written back on the scene's, exactly
    from geopix2pix import predict
    from geopix2pix.prediction import resample
    from tests.predict_helpers import unet_file, write_scene

    model = unet_file(tmp_path / "m.safetensors", pixel_size=(30, 30),
                      ground_pixel_size=[30.0, 30.0])
    path = write_scene(tmp_path / "north.tif", 96, 80, crs="EPSG:4326",
                       transform=Affine(3e-4, 0, 10.0, 0, -3e-4, 70.05))  # 11.4 x 33.4 m
    grids: list[Grid] = []
    original = resample.model_grid

    def recorded(grid, ratios):
        grids.append(original(grid, ratios))
        return grids[-1]

    monkeypatch.setattr(resample, "model_grid", recorded)
    said: list[str] = []
    predict(path, tmp_path / "o.tif", model=model, progress=False, resample_to_model=True,
            on_warning=said.append)
    assert ground_pixel_size(grids[-1]) == pytest.approx((30.0, 30.0), rel=5e-3)
    # the x axis is 2.6x finer, the mean of the two (0.75x) within 2x: warned of all the same
    assert [w for w in said if "differs" in w][0].split("differs ")[1].startswith(
        "0.381x along x and 1.12x along y from the training pixel size")
    with rasterio.open(path) as src, rasterio.open(tmp_path / "o.tif") as out:
        assert (out.crs, out.transform, out.width, out.height) == \
            (src.crs, src.transform, src.width, src.height)
