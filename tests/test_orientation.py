"""Rasters not stored north-up (bottom-up, rotated, mirrored): models see pixels in their stored
order, so export-chips and predict say so, with the gdalwarp that makes them north-up (a tester's
bottom-up DEM was predicted against north-up training as if flipped: MAE 68 instead of 6)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import safetensors.torch
from affine import Affine
from conftest import write_raster
from predict_helpers import unet_file, write_scene
from safetensors import safe_open

import geopix2pix as g
from geopix2pix.raster.grid import orientation

NORTH_UP = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
BOTTOM_UP = Affine(10.0, 0.0, 500000.0, 0.0, 10.0, 5198720.0)  # the same ground, rows flipped


@pytest.mark.parametrize("transform, said", [
    (NORTH_UP, None), (BOTTOM_UP, "bottom-up (its rows run from south to north)"),
    (Affine(-10.0, 0.0, 501280.0, 0.0, -10.0, 5200000.0),
     "mirrored (its columns run from east to west)"),
    (NORTH_UP * Affine.rotation(10), "rotated (its geotransform has rotation terms)")])
def test_orientation_names_how_pixels_are_stored(transform, said):
    assert orientation(transform) == said


def test_rotation_terms_of_rounding_are_no_rotation():
    """A reviewer's 10 m grid with rotation terms of 1e-13 (rasterio prints -0.00) was warned
    of as rotated."""
    noise = Affine(10.0, 1e-13, 500000.0, -1e-13, -10.0, 5200000.0)
    assert orientation(noise, 10_000, 10_000) is None
    tilted = Affine(10.0, 0.001, 500000.0, 0.0, -10.0, 5200000.0)  # 1 m over 1000 rows
    assert orientation(tilted, 1000, 1000) == "rotated (its geotransform has rotation terms)"


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


@pytest.mark.parametrize("augment", ["d4", "flip"])
def test_a_model_that_learnt_flips_is_not_warned_of_a_bottom_up_scene(tmp_path, augment):
    """--augment d4 and flip train on flipped chips (both draw the horizontal and vertical
    flips): a bottom-up scene is one of them (a reviewer's d4 model was warned of it, and the
    residual recipe's flip models were); a rotated one is not."""
    model = unet_file(tmp_path / "d4.safetensors", descriptions=["elevation"])
    with safe_open(model, "pt") as f:
        meta = json.loads(f.metadata()["geopix2pix"])
    meta["training"] = {"augment": augment}
    del meta["weights_sha256"]  # an edited file: the digest would refuse it
    safetensors.torch.save_file(safetensors.torch.load_file(model), model,
                                {"geopix2pix": json.dumps(meta)})
    said: list[str] = []
    for name, transform in (("flipped", Affine(30.0, 0.0, 500000.0, 0.0, 30.0, 3_998_800.0)),
                            ("turned", Affine(30.0, 0.0, 500000.0, 0.0, -30.0, 4_000_000.0)
                             * Affine.rotation(20))):
        scene = write_scene(tmp_path / f"{name}.tif", 40, 40, transform=transform)
        g.predict(scene, tmp_path / f"{name}_out.tif", model=model, progress=False,
                  on_warning=said.append)
    assert [w.split(" is stored ")[1].split(" (")[0] for w in said] == ["rotated"]
