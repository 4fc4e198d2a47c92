"""The inputs of the fault battery's bad-input cases (tests/test_faults_bad_inputs.py): a good
pair, scene, model, prediction and chips folder, and every kind of bad file beside them, all
small and written with rasterio."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from conftest import write_damaged, write_raster
from predict_helpers import unet_file, write_scene

from geopix2pix.chips.export import export_chips

FAR = Affine(10.0, 0.0, 900000.0, 0.0, -10.0, 5200000.0)


def make_inputs(w: Path) -> Path:
    """Write every input into the folder `w`; returns it."""
    _rasters(w)
    _vectors(w)
    _chips(w)
    return w


def _rasters(w: Path) -> None:
    """The good pair, scene, model and prediction, and every kind of bad raster."""
    data = np.random.default_rng(0).random((2, 128, 128), dtype=np.float32)
    write_raster(w / "src.tif", data)
    write_raster(w / "tgt.tif", data[:1])
    write_raster(w / "nocrs.tif", data, crs=None)
    write_raster(w / "tiny.tif", data[:, :1, :1])
    write_raster(w / "nodata.tif", np.full((2, 128, 128), -9999, np.float32), nodata=-9999)
    write_raster(w / "nan.tif", np.full((2, 128, 128), np.nan, np.float32))
    write_damaged(w / "damaged.tif", bands=3, size=128)
    (w / "empty.tif").write_bytes(b"")
    (w / "text.tif").write_text("not a raster\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
        with rasterio.open(w / "plain.png", "w", driver="PNG", width=64, height=64, count=3,
                           dtype="uint8") as png:  # no georeferencing at all
            png.write(np.full((3, 64, 64), 100, np.uint8))
    (w / "adir").mkdir()
    write_scene(w / "scene.tif", 96, 96)
    write_scene(w / "scene_nocrs.tif", 96, 96, crs=None)
    write_scene(w / "scene_tiny.tif", 1, 1)
    unet_file(w / "model.safetensors", descriptions=["elevation"])
    (w / "model_text.safetensors").write_text("not a model\n")
    (w / "model_empty.safetensors").write_bytes(b"")
    raw = (w / "model.safetensors").read_bytes()
    (w / "model_cut.safetensors").write_bytes(raw[:len(raw) // 2])
    pred = np.random.default_rng(1).random((1, 128, 128), dtype=np.float32)
    write_raster(w / "pred.tif", pred)
    write_raster(w / "ref.tif", pred + 0.1)
    write_raster(w / "pred_nan.tif", np.full((1, 128, 128), np.nan, np.float32))
    write_raster(w / "pred_far.tif", pred, transform=FAR)
    write_raster(w / "mask_u8.tif", np.zeros((128, 128), np.uint8))  # a validity mask


def _vectors(w: Path) -> None:
    (w / "aoi_text.gpkg").write_text("not a vector\n")
    (w / "aoi_empty.gpkg").write_bytes(b"")
    (w / "pairs_missing.csv").write_text("source,target\nnope.tif,tgt.tif\n")
    (w / "pairs_empty_raster.csv").write_text("source,target\nsrc.tif,empty.tif\n")
    (w / "pairs_dir.csv").mkdir()


def _edited(edit):
    """A breakage that edits a chips folder's dataset.json with `edit(data)`."""
    def breaking(chips: Path) -> None:
        data = json.loads((chips / "dataset.json").read_text())
        edit(data)
        (chips / "dataset.json").write_text(json.dumps(data))
    return breaking


def _chips(w: Path) -> None:
    """A good chips folder and damaged copies of it."""
    chips = w / "chips"
    export_chips(w / "src.tif", w / "tgt.tif", chips, chip_size=32, split_block=64, workers=0,
                 progress=False)
    first = sorted((chips / "source").glob("*.tif"))[0].name
    breakages = {
        "chips_nojson": lambda c: (c / "dataset.json").unlink(),
        "chips_json_empty": lambda c: (c / "dataset.json").write_bytes(b""),
        "chips_json_text": lambda c: (c / "dataset.json").write_text("not json\n"),
        "chips_json_list": lambda c: (c / "dataset.json").write_text("[]\n"),
        "chips_chip_missing": lambda c: (c / "source" / first).unlink(),
        "chips_chip_empty": lambda c: (c / "source" / first).write_bytes(b""),
        "chips_chip_text": lambda c: (c / "target" / first).write_text("not a raster\n"),
        # edited dataset.json (tracebacks once training began, or model files predict refused)
        "chips_json_bands": _edited(lambda d: d["source"].update(bands=[1, 2, 3, 4, 5, 6, 7])),
        "chips_json_mode": _edited(lambda d: d["source"].update(scaling_mode="zzz")),
        "chips_json_pixel": _edited(lambda d: d.update(pixel_size=[-5, 0])),
        "chips_json_dtype": _edited(lambda d: d["target"].update(dtype="complex64")),
        "chips_json_nodata": _edited(lambda d: d["source"].update(nodata="abc")),
        "chips_json_stats": _edited(lambda d: d["source"]["stats"][0].update(
            p01=1e308, p99=-1e308)),
        "chips_json_size": _edited(lambda d: d.update(chip_size=64)),
    }
    for name, breaking in breakages.items():
        shutil.copytree(chips, w / name)
        breaking(w / name)
    (w / "chips_empty").mkdir()
