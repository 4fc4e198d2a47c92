"""Band metadata along export-chips -> train -> predict: units, scales, offsets, colour
interpretation and colour table of real GeoTIFFs reach the chips (both sides), dataset.json, the
model file and the prediction (GeoTIFF, COG and --resample-to-model) exactly; model files and
chips folders written before these keys existed still work, with none."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import write_raster
from rasterio.enums import ColorInterp
from rasterio.io import MemoryFile

from geopix2pix.chips.export import export_chips
from geopix2pix.chips.manifest import MANIFEST, DatasetInfo
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import load_model, save_model
from geopix2pix.prediction import predict
from geopix2pix.raster.band_metadata import KEYS, BandMetadata
from geopix2pix.training import train

SIZE = 128
TINY = dict(ngf=4, ndf=4, batch_size=2, workers=0, quiet=True, device="cpu", max_steps=1,
            epochs=1, decay_epochs=0)
CLASSES = {0: (34, 139, 34, 255), 1: (0, 0, 255, 255), 2: (200, 200, 0, 255),
           3: (128, 64, 0, 255)}


def _relief() -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    return (100 + 30 * np.sin(x / 17.0) + 25 * np.cos(y / 23.0)).astype("float32")


def _source(folder: Path) -> Path:
    """Two float32 bands with their own units, scales and offsets."""
    dem = _relief()
    path = write_raster(folder / "source.tif", np.stack([dem, dem * 2]), nodata=-9999.0)
    with rasterio.open(path, "r+") as ds:
        ds.units = ("metre", "foot")
        ds.scales = (2.0, 0.5)
        ds.offsets = (5.0, -1.0)
    return path


def _dem_target(folder: Path) -> Path:
    path = write_raster(folder / "dem.tif", _relief() * 1.5, nodata=-9999.0,
                        descriptions=["elevation"])
    with rasterio.open(path, "r+") as ds:
        ds.units = ("metre",)
    return path


def _s2_target(folder: Path) -> Path:
    """uint16 L2A-style DNs: reflectance = DN * 1e-4 - 0.1, bands 4, 3, 2 as red, green, blue."""
    dem = _relief()
    dns = np.stack([dem * 10, dem * 20, dem * 30]).astype("uint16")
    path = write_raster(folder / "s2.tif", dns, nodata=0)
    with rasterio.open(path, "r+") as ds:
        ds.scales = (1e-4,) * 3
        ds.offsets = (-0.1,) * 3
        ds.units = ("reflectance",) * 3
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue]
    return path


def _landcover_target(folder: Path) -> Path:
    """A paletted uint8 class map, 255 = nodata."""
    classes = (_relief().astype(int) // 10 % 4).astype("uint8")
    path = write_raster(folder / "landcover.tif", classes, nodata=255)
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, CLASSES)
    return path


TARGETS = {"dem": _dem_target, "s2": _s2_target, "landcover": _landcover_target}


def band_metadata(path) -> dict:
    """What QGIS reads of a raster's bands besides the values."""
    with rasterio.open(path) as ds:
        paletted = ds.count == 1 and ds.colorinterp[0] == ColorInterp.palette
        return dict(units=ds.units, scales=ds.scales, offsets=ds.offsets,
                    colorinterp=ds.colorinterp, colormap=ds.colormap(1) if paletted else None)


@pytest.fixture(scope="module", params=sorted(TARGETS))
def run(request, tmp_path_factory) -> dict:
    """Export, train (one step) and the paths of each: one per kind of target."""
    folder = tmp_path_factory.mktemp(request.param)
    source, target = _source(folder), TARGETS[request.param](folder)
    export_chips(source, target, folder / "chips", chip_size=64, stride=32, split_block=64,
                 target_resampling="nearest", workers=1, progress=False)
    result = train(folder / "chips", folder / "run", **TINY)
    return dict(kind=request.param, folder=folder, source=source, target=target,
                chips=folder / "chips", model=result.model_path)


def test_chips_carry_their_rasters_band_metadata(run):
    for side in ("source", "target"):
        expected = band_metadata(run[side])
        chips = sorted((run["chips"] / side).glob("*.tif"))
        assert chips
        for chip in chips:
            assert band_metadata(chip) == expected, chip


def test_dataset_json_and_model_file_record_the_band_metadata(run):
    info = DatasetInfo.load(run["chips"])
    model = load_model(run["model"])
    for side in ("source", "target"):
        meta = band_metadata(run[side])
        recorded = getattr(info, side).band_metadata
        assert recorded.units == meta["units"]
        assert recorded.scales == meta["scales"] and recorded.offsets == meta["offsets"]
        assert recorded.colorinterp == tuple(ci.name for ci in meta["colorinterp"])
        stored = model.metadata[side]
        assert {k: stored[k] for k in KEYS} == recorded.to_dict()
        assert json.loads(json.dumps(stored)) == stored  # plain JSON
    if run["kind"] == "landcover":
        colormap = band_metadata(run["target"])["colormap"]
        assert model.metadata["target"]["colormap"] == [list(colormap[i])
                                                        for i in range(len(colormap))]
    else:
        assert model.metadata["target"]["colormap"] is None


def _coarse_scene(source: Path, folder: Path) -> Path:
    """The source at twice the pixel size: --resample-to-model predicts at the training one."""
    with rasterio.open(source) as ds:
        data, transform = ds.read()[:, ::2, ::2], ds.transform @ Affine.scale(2)
    return write_raster(folder / "coarse.tif", data, transform=transform, nodata=-9999.0)


@pytest.mark.parametrize("mode", ["gtiff", "cog", "resample-to-model"])
def test_prediction_carries_the_targets_band_metadata(run, mode, tmp_path):
    scene = _coarse_scene(run["source"], tmp_path) if mode == "resample-to-model" \
        else run["source"]
    out = tmp_path / "prediction.tif"
    predict(scene, out, model=run["model"], progress=False, cog=mode == "cog",
            resample_to_model=mode == "resample-to-model")
    assert band_metadata(out) == band_metadata(run["target"])
    with rasterio.open(out) as pred, rasterio.open(run["target"]) as target:
        assert pred.dtypes == target.dtypes and pred.nodata == target.nodata
        assert pred.descriptions == target.descriptions
        if mode == "cog":
            assert pred.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"


def test_a_model_file_without_band_metadata_still_predicts_the_same_values(run, tmp_path):
    model = load_model(run["model"])
    old = {side: {k: v for k, v in model.metadata[side].items() if k not in KEYS}
           for side in ("source", "target")}
    save_model(tmp_path / "old.safetensors", model.generator, model.spec,
               {**model.metadata, **old})
    new_out, old_out = tmp_path / "new.tif", tmp_path / "old.tif"
    predict(run["source"], new_out, model=run["model"], progress=False)
    predict(run["source"], old_out, model=tmp_path / "old.safetensors", progress=False)
    with rasterio.open(new_out) as new, rasterio.open(old_out) as before:
        np.testing.assert_array_equal(before.read(), new.read())
        assert before.nodata == new.nodata and before.descriptions == new.descriptions
        assert before.units == (None,) * before.count
        assert before.scales == (1.0,) * before.count
        assert before.offsets == (0.0,) * before.count
        assert ColorInterp.palette not in before.colorinterp


def test_a_chips_folder_without_band_metadata_loads_with_none(run, tmp_path):
    data = json.loads((run["chips"] / MANIFEST).read_text())
    for side in ("source", "target"):
        data[side] = {k: v for k, v in data[side].items() if k not in KEYS}
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    info = DatasetInfo.load(tmp_path)
    assert info.source.band_metadata == info.target.band_metadata == BandMetadata()
    assert info.target.to_dict()["units"] == [] and info.target.to_dict()["colormap"] is None


def test_a_model_file_with_a_damaged_colour_table_is_refused_in_one_line(run, tmp_path):
    model = load_model(run["model"])
    bad = {**model.metadata["target"], "colormap": [[1, 2, 3]]}
    save_model(tmp_path / "bad.safetensors", model.generator, model.spec,
               {**model.metadata, "target": bad})
    with pytest.raises(GeoPix2PixError, match="model metadata"):
        predict(run["source"], tmp_path / "out.tif", model=tmp_path / "bad.safetensors",
                progress=False)
    assert not (tmp_path / "out.tif").exists()


def _written_with(metadata: BandMetadata, dtype: str) -> tuple:
    """(colour interpretation, colour table or None) of a one-band GeoTIFF of `dtype` written
    with `metadata`."""
    profile = dict(driver="GTiff", width=16, height=16, count=1, crs="EPSG:32633",
                   transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0))
    with MemoryFile() as memory:
        with memory.open(dtype=dtype, **profile) as dst:
            metadata.apply(dst)
            dst.write(np.zeros((1, 16, 16), dtype))
        with memory.open() as ds:
            try:
                table = ds.colormap(1)
            except ValueError:  # none
                table = None
            return ds.colorinterp, table


def test_a_colour_table_is_written_only_where_a_geotiff_can_hold_one():
    palette = BandMetadata(colorinterp=("palette",), colormap=((1, 2, 3, 255), (4, 5, 6, 255)))
    assert _written_with(palette, "float32") == ((ColorInterp.gray,), None)
    interp, table = _written_with(palette, "uint16")
    assert interp == (ColorInterp.palette,) and table[1] == (4, 5, 6, 255)
    assert palette.fitted(3) == BandMetadata(colorinterp=("palette", "undefined", "undefined"))
