"""A scene tagged AREA_OR_POINT=Point gives an output tagged Point on the same transform: its
output came out tagged Area, which a reader with GTIFF_POINT_GEO_IGNORE=TRUE placed half a
pixel off the scene."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from conftest import write_raster
from predict_helpers import unet_file

import geopix2pix as g


def scene(path, point: bool = True) -> str:
    data = np.random.default_rng(2).integers(1, 250, (3, 64, 64)).astype("uint8")
    write_raster(path, data)
    if point:
        with rasterio.open(path, "r+") as dst:
            dst.update_tags(AREA_OR_POINT="Point")
    return str(path)


def placed(path, ignore_point: bool):
    """(AREA_OR_POINT tag, transform) as GDAL reads them, with GTIFF_POINT_GEO_IGNORE."""
    with rasterio.Env(GTIFF_POINT_GEO_IGNORE=ignore_point), rasterio.open(path) as src:
        return src.tags().get("AREA_OR_POINT"), src.transform


@pytest.mark.filterwarnings("ignore::UserWarning")  # the model's pixel size, resampled to
@pytest.mark.parametrize("options", [{}, {"cog": True}, {"resample_to_model": True}])
def test_a_point_scenes_output_is_point_on_the_same_transform(tmp_path, options):
    source = scene(tmp_path / "scene.tif")
    assert placed(source, False)[1] != placed(source, True)[1]  # half a pixel apart
    model = unet_file(tmp_path / "m.safetensors", pixel_size=(20, 20)
                      if options.get("resample_to_model") else (10, 10))
    g.predict(source, tmp_path / "out.tif", model=model, progress=False, **options)
    for ignore_point in (False, True):
        tag, transform = placed(tmp_path / "out.tif", ignore_point)
        assert (tag, transform) == ("Point", placed(source, ignore_point)[1])


def test_an_area_scenes_output_stays_area(tmp_path):
    source = scene(tmp_path / "scene.tif", point=False)
    model = unet_file(tmp_path / "m.safetensors", pixel_size=(10, 10))
    g.predict(source, tmp_path / "out.tif", model=model, progress=False)
    assert placed(tmp_path / "out.tif", True) == ("Area", placed(source, True)[1])
