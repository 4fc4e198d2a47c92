"""Rasters not stored north-up (bottom-up, rotated, mirrored): models see pixels in their stored
order, so export-chips and predict say so, with the gdalwarp that makes them north-up (a tester's
bottom-up DEM was predicted against north-up training as if flipped: MAE 68 instead of 6)."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from predict_helpers import write_scene

import geopix2pix as g
from geopix2pix.raster.grid import orientation
from tests.conftest import write_raster

NORTH_UP = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
BOTTOM_UP = Affine(10.0, 0.0, 500000.0, 0.0, 10.0, 5198720.0)  # the same ground, rows flipped


@pytest.mark.parametrize("transform, said", [
    (NORTH_UP, None), (BOTTOM_UP, "bottom-up (its rows run from south to north)"),
    (Affine(-10.0, 0.0, 501280.0, 0.0, -10.0, 5200000.0),
     "mirrored (its columns run from east to west)"),
    (NORTH_UP * Affine.rotation(10), "rotated (its geotransform has rotation terms)")])
def test_orientation_names_how_pixels_are_stored(transform, said):
    assert orientation(transform) == said


def test_export_and_predict_warn_of_a_bottom_up_raster(tmp_path, model_file):
    data = np.random.default_rng(0).normal(size=(1, 128, 128)).astype("float32")
    north = write_raster(tmp_path / "north.tif", data, transform=NORTH_UP)
    south = write_raster(tmp_path / "south.tif", data[:, ::-1], transform=BOTTOM_UP)
    expected = (f"{south} is stored bottom-up (its rows run from south to north): its chips are "
                "cut in that order, so a model sees its ground turned against north-up rasters' "
                "(a hillshade's sun, a radar's look direction), and learns or predicts it so; "
                f"warp it north-up first (gdalwarp {south} {tmp_path / 'south'}_northup.tif)")
    summary = g.export_chips(south, north, tmp_path / "chips", chip_size=32, workers=0,
                             progress=False)
    assert expected in summary.warnings
    plain = g.export_chips(north, south, tmp_path / "plain", chip_size=32, workers=0,
                           progress=False)  # a bottom-up target is warped onto the source grid
    assert not any("north-up" in w for w in plain.warnings)
    scene = write_scene(tmp_path / "scene.tif", 40, 40,
                        transform=Affine(30.0, 0.0, 500000.0, 0.0, 30.0, 3_998_800.0))
    said: list[str] = []
    g.predict(scene, tmp_path / "out.tif", model=model_file, progress=False,
              on_warning=said.append)
    assert said == [f"{scene} is stored bottom-up (its rows run from south to north): it is "
                    "predicted in that order, so a model sees its ground turned against north-up "
                    "rasters' (a hillshade's sun, a radar's look direction), and learns or "
                    f"predicts it so; warp it north-up first (gdalwarp {scene} "
                    f"{tmp_path / 'scene'}_northup.tif)"]
