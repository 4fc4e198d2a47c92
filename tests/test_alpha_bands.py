"""A raster with an alpha band of its own (an RGBA ortho, a WorldView product) warped onto another
grid: GDAL warps its alpha, which marks the pixels under it and outside its footprint invalid
(asking GDAL for a second alpha band failed export-chips, evaluate and predict
--resample-to-model with "The VRT already has an alpha band")."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from predict_helpers import unet_file

import geopix2pix as g
from geopix2pix.chips.dataset import ChipDataset

SIZE = 128
GRID = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
OTHER = Affine(9.0, 0.0, 500003.0, 0.0, -9.0, 5199997.0)  # 9 m pixels, 3 m off


def rgba(path, transform, size=SIZE, hole=40) -> str:
    """uint8 RGB with alpha 0 over the top-left `hole` x `hole` pixels."""
    rng = np.random.default_rng(5)
    data = rng.integers(1, 255, (4, size, size)).astype(np.uint8)
    data[3] = 255
    data[3, :hole, :hole] = 0
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=4,
                       dtype="uint8", crs="EPSG:32633", transform=transform, photometric="RGB",
                       alpha="YES") as dst:
        dst.write(data)
    return str(path)


def test_export_warps_a_targets_own_alpha_band(tmp_path):
    source = write_raster(tmp_path / "s.tif",
                          np.random.default_rng(1).normal(size=(2, SIZE, SIZE)).astype("float32"),
                          transform=GRID)
    target = rgba(tmp_path / "t.tif", OTHER)
    g.export_chips(source, target, tmp_path / "chips", chip_size=32, val_fraction=0,
                   max_nodata=1.0, workers=0, progress=False)
    chips = ChipDataset(tmp_path / "chips", "train")
    assert chips.info.target.bands == [1, 2, 3]  # the alpha is a mask, not data
    with rasterio.open(target) as t:
        hole_east, hole_south = t.transform @ (40, 40)
    seen = {"hole": 0, "clear": 0}
    for i in range(len(chips)):
        item = chips[i]
        bounds = rasterio.open(tmp_path / "chips" / "target" / f"{chips.ids[i]}.tif").bounds
        valid = item["target_valid"][0].numpy()
        if bounds.right <= hole_east - 10 and bounds.bottom >= hole_south + 10:
            assert not valid.any()  # wholly under alpha 0
            seen["hole"] += 1
        if bounds.left >= hole_east + 10 or bounds.top <= hole_south - 10:
            assert valid.all()  # clear of the hole, inside the footprint: alpha 255
            seen["clear"] += 1
    assert seen["hole"] and seen["clear"] > 4


def test_evaluate_aligns_a_reference_with_its_own_alpha_band(tmp_path):
    prediction = write_raster(tmp_path / "p.tif",
                              np.full((3, SIZE, SIZE), 100, np.uint8), transform=GRID)
    reference = rgba(tmp_path / "r.tif", OTHER)
    report = g.evaluate(prediction, reference)
    # its footprint covers about 115 x 115 of the 128 x 128 pixels, its alpha hole 36 x 36
    assert abs(report.valid_pixels - (115 ** 2 - 36 ** 2)) < 300


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_predict_resamples_a_scene_with_its_own_alpha_band_to_the_model(tmp_path):
    model = unet_file(tmp_path / "m.safetensors", descriptions=["elevation"],
                      pixel_size=(10, 10))
    scene = rgba(tmp_path / "scene.tif", Affine(7.0, 0.0, 500000.0, 0.0, -7.0, 5200000.0))
    out = tmp_path / "out.tif"
    g.predict(scene, out, model=model, resample_to_model=True, progress=False)
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert (dst.crs, dst.transform, dst.shape) == (src.crs, src.transform, src.shape)
        valid = dst.read_masks(1) > 0
    assert not valid[:36, :36].any() and valid[60:, 60:].all()  # alpha 0 stays invalid
