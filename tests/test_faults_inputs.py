"""Fault battery, inputs: rasters placed nowhere, damaged chips, pipes and devices, an export
with no train chip, scenes without a valid pixel, and library warnings on a correct run (band
lists naming no band: test_faults_band_lists; a signal while GDAL blocks in an open:
test_faults_signals_in_opens).

Each case: the exit status, one line naming the file or option (no traceback), and nothing
partial left behind, in-process through `geopix2pix.cli.main`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import shared, write_raster
from predict_helpers import write_scene
from rasterio.errors import NotGeoreferencedWarning

from geopix2pix import GeoPix2PixError, GeoPix2PixWarning, evaluate, export_chips, predict
from geopix2pix.chips.dataset import ChipDataset, ChipReadError, chip_ids
from geopix2pix.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--max-steps", "1", "--ngf", "8", "--ndf", "8", "--batch-size", "2", "--workers", "0",
        "--device", "cpu"]


def one_line(capsys, args, code: int = 2, after_progress: bool = False) -> str:
    """Run the CLI; expect `code` and exactly one line on stderr, without traceback (with
    `after_progress`, the last line, after train's header and progress bar)."""
    assert main([str(a) for a in args]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and (after_progress or len(err.splitlines()) == 1), err
    return err.rstrip("\n").splitlines()[-1]


# --- rasters placed nowhere -------------------------------------------------------------------

PLACEMENT = {"crs_only.tif": "has a CRS (EPSG:32633) but no geotransform",
             "nowhere.tif": "has no CRS and no geotransform"}


@pytest.mark.parametrize("name", list(PLACEMENT))
@pytest.mark.parametrize("side", ["source", "target"])
def test_export_refuses_a_raster_placed_nowhere(inputs, tmp_path, capsys, name, side):
    pair = [inputs / "s.tif", inputs / "t.tif"]
    pair[side == "target"] = inputs / name
    err = one_line(capsys, ["export-chips", *pair, "-o", tmp_path / "chips"])
    assert err.startswith(f"Error: {inputs / name} {PLACEMENT[name]}") and "gdal_edit.py" in err
    assert "do not overlap" not in err and not (tmp_path / "chips").exists()


@pytest.mark.parametrize("name", list(PLACEMENT))
def test_predict_refuses_a_scene_placed_nowhere(inputs, tmp_path, capsys, name):
    out = tmp_path / "out.tif"
    err = one_line(capsys, ["predict", inputs / name, out, "-m", inputs / "model.safetensors",
                            "-q"])
    assert err.startswith(f"Error: {inputs / name} {PLACEMENT[name]}")
    assert err.endswith("or pass --allow-no-crs to predict on its pixels")
    assert "pixel size" not in err and not out.exists() and list(tmp_path.iterdir()) == []


def test_predict_with_allow_no_crs_predicts_a_crs_only_scene_on_its_pixels(inputs, tmp_path,
                                                                          capsys):
    out = tmp_path / "out.tif"
    assert main(["predict", str(inputs / "crs_only.tif"), str(out), "-m",
                 str(inputs / "model.safetensors"), "-q", "--allow-no-crs"]) == 0
    assert "pixel size" not in capsys.readouterr().err  # there is none to compare
    with warnings.catch_warnings():  # the API too (rasterio warns of pixel coordinates)
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        predict(inputs / "crs_only.tif", tmp_path / "api.tif", model=inputs / "model.safetensors",
                allow_no_crs=True, progress=False)
    for path in (out, tmp_path / "api.tif"):
        with rasterio.open(path) as dst:
            assert dst.transform.is_identity and dst.shape == (96, 96)
            assert dst.crs == "EPSG:32633"  # kept, as the scene has it


@pytest.mark.parametrize("name", list(PLACEMENT))
def test_evaluate_refuses_to_align_a_raster_placed_nowhere(inputs, tmp_path, capsys, name):
    json_path = tmp_path / "report.json"
    err = one_line(capsys, ["evaluate", inputs / "s.tif", inputs / name, "--json", json_path])
    assert err.startswith(f"Error: {inputs / 's.tif'} and {inputs / name} are on different "
                          "grids, which cannot be aligned:")
    assert PLACEMENT[name] in err and not json_path.exists()


# --- damaged chips ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chips(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("chips") / "chips"
    export_chips(inputs / "s.tif", inputs / "t.tif", out, chip_size=32, val_fraction=0.3,
                 split_block=32, workers=0, progress=False)
    return out


def _copy(chips: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "chips"
    shutil.copytree(chips, copy)
    return copy


@pytest.mark.parametrize("side", ["source", "target"])
@pytest.mark.parametrize("keep", [0, 8, 200, 0.5, 0.97, None])
def test_a_truncated_or_missing_chip_is_said_damaged(chips, tmp_path, side, keep):
    """Truncated anywhere (before the header, in its tags, in its tiles) or missing: a chip
    the export wrote whole is said damaged, never "has no CRS"."""
    copy = _copy(chips, tmp_path)
    chip = copy / side / f"{chip_ids(copy, 'train')[0]}.tif"
    if keep is None:
        chip.unlink()
    else:
        size = chip.stat().st_size
        os.truncate(chip, int(keep * size) if isinstance(keep, float) else keep)
    with pytest.raises(ChipReadError) as caught:
        ChipDataset(copy, "train")[0]
    message = str(caught.value)
    assert message.startswith(f"chip {chip} is {'missing' if keep is None else 'damaged'}")
    assert message.endswith("rerun the export that made it (geopix2pix export-chips with "
                            "--overwrite)") and "\n" not in message
    assert "has no CRS" not in message and "gdal_edit" not in message


def test_train_names_a_chip_that_lost_its_georeferencing(chips, tmp_path, capsys):
    copy = _copy(chips, tmp_path)
    for chip_id in chip_ids(copy, "train"):  # what a truncated chip may read as: no CRS
        with rasterio.open(copy / "source" / f"{chip_id}.tif") as src:
            profile, data = src.profile, src.read()
        with rasterio.open(copy / "source" / f"{chip_id}.tif", "w",
                           **{**profile, "crs": None}) as dst:
            dst.write(data)
    err = one_line(capsys, ["train", copy, "-o", tmp_path / "run", *TINY], after_progress=True)
    assert re.fullmatch(rf"Error: chip {re.escape(str(copy))}/source/p\d+_r\d+_c\d+\.tif is "
                        r"damaged \(it opens without its CRS\); rerun the export that made it "
                        r"\(geopix2pix export-chips with --overwrite\)", err), err
    assert not (tmp_path / "run" / "model.safetensors").exists()


# --- pipes, devices and folders ---------------------------------------------------------------

@pytest.fixture
def fifo(tmp_path):
    """A named pipe called scene.tif. Should anything open it for reading, a thread opens it
    for writing after a while, so the test fails instead of hanging."""
    path = tmp_path / "scene.tif"
    os.mkfifo(path)
    done = threading.Event()

    def unblock() -> None:
        if not done.wait(30):
            with open(path, "wb"):
                pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()
    yield path
    done.set()


def _not_files(fifo: Path) -> list[tuple[Path, str]]:
    return [(fifo, "is a named pipe (FIFO), not a raster file"),
            (Path("/dev/null"), "is a character device, not a raster file")]


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("command", ["export-chips", "predict", "evaluate"])
def test_a_pipe_or_device_is_refused_before_gdal_opens_it(inputs, fifo, tmp_path, capsys, which,
                                                          command):
    path, what = _not_files(fifo)[which]
    out = tmp_path / "out"
    args = {"export-chips": ["export-chips", path, inputs / "t.tif", "-o", out],
            "predict": ["predict", path, out / "o.tif", "-m", inputs / "model.safetensors"],
            "evaluate": ["evaluate", path, inputs / "s.tif", "--json", out]}[command]
    start = time.monotonic()
    err = one_line(capsys, args)
    assert time.monotonic() - start < 25  # refused, not opened (the pipe unblocks at 30 s)
    assert f"{path} {what}" in err and "save the data to a file first" in err
    assert not out.exists()


def test_a_folder_is_not_a_raster(inputs, tmp_path):
    """(The command line refuses folders as arguments; the API says it in its own words.)"""
    folder = tmp_path / "tiles"
    folder.mkdir()
    with pytest.raises(GeoPix2PixError) as caught:
        export_chips(folder, inputs / "t.tif", tmp_path / "c", progress=False)
    assert str(caught.value) == (f"{folder} is a folder, not a raster GDAL can read; pass the "
                                 f"rasters in it (e.g. {folder / '*.tif'})")
    assert not (tmp_path / "c").exists()


def test_gdal_names_still_open(inputs, tmp_path):
    """A /vsi name is GDAL's to resolve: it is not checked as a file."""
    import zipfile

    archive = tmp_path / "s.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(inputs / "s.tif", "s.tif")
    report = evaluate(f"/vsizip/{archive}/s.tif", inputs / "s.tif")
    assert report.valid_pixels > 0


# --- an export with no train chip -------------------------------------------------------------

def test_an_export_with_no_train_chip_is_refused_with_advice(tmp_path, capsys):
    """A small AOI cut into big --split-block blocks: its chips are in val or straddle it."""
    import geopandas as gpd
    import shapely

    rng = np.random.default_rng(0)
    source = write_raster(tmp_path / "s.tif", rng.integers(1, 255, (1, 32, 128), np.uint8))
    target = write_raster(tmp_path / "t.tif", rng.integers(1, 255, (1, 32, 128), np.uint8))
    aoi = tmp_path / "aoi.gpkg"  # from column 48: one chip straddles, three lie in block 1
    gpd.GeoDataFrame(geometry=[shapely.box(500480, 5199680, 501280, 5200000)],
                     crs="EPSG:32633").to_file(aoi)
    err = one_line(capsys, ["export-chips", source, target, "-o", tmp_path / "chips",
                            "--chip-size", "32", "--stride", "16", "--split-block", "64",
                            "--val-fraction", "0.5", "--seed", "3", "--aoi", aoi,
                            "--aoi-mode", "within", "--workers", "0", "-q"])
    assert err == ("Error: no train chip: 3 chip(s) in val and none in train (skipped: 3 outside "
                   "the AOI; 1 straddling the train/val split) with --split-block blocks of 64 px "
                   "and --val-fraction 0.5; there would be nothing to train on: use a smaller "
                   "--split-block (down to the chip size, 32) or a smaller --val-fraction")
    assert not (tmp_path / "chips").exists()


def test_an_export_whose_train_chips_are_all_invalid_is_split_again(tmp_path, capsys):
    """The split gives train chips, but every one holds too many invalid pixels: this was
    refused ('no train chip'); the valid chips are now split again on their own."""
    import sqlite3

    rng = np.random.default_rng(1)
    data = rng.integers(1, 255, (1, 160, 160), np.uint8)
    target = write_raster(tmp_path / "t.tif", data)
    args = ["--chip-size", "32", "--split-block", "64", "--workers", "0", "-q"]
    first = tmp_path / "first"
    assert main(["export-chips", str(write_raster(tmp_path / "s.tif", data, nodata=0)),
                 str(target), "-o", str(first), *args]) == 0
    with sqlite3.connect(first / "chips.gpkg") as db:
        val = db.execute("SELECT row, col FROM chips WHERE split = 'val'").fetchall()
    valid = np.zeros_like(data)
    for row, col in val:  # only the val chips keep their pixels
        valid[:, row:row + 32, col:col + 32] = data[:, row:row + 32, col:col + 32]
    source = write_raster(tmp_path / "s2.tif", valid, nodata=0)
    capsys.readouterr()
    assert main(["export-chips", str(source), str(target), "-o", str(tmp_path / "chips"),
                 *args[:-1]]) == 0
    out = capsys.readouterr().out
    assert f"split again without the {25 - len(val)} chips with too many invalid pixels" in out
    with sqlite3.connect(tmp_path / "chips" / "chips.gpkg") as db:
        kept = db.execute("SELECT row, col, split FROM chips").fetchall()
    assert sorted((r, c) for r, c, _ in kept) == sorted(val)  # the valid chips, all kept
    assert {s for _, _, s in kept} == {"train", "val"}


@pytest.mark.parametrize("older, expected", [
    ("no train chips", "has no train chips (3 val chips): nothing to train on; re-export"),
    ("null statistics", "dataset.json has no statistics of the train chips (none has a valid "
                        "pixel); re-export"),
])
def test_train_refuses_a_folder_without_train_chips(chips, tmp_path, capsys, older, expected):
    """Folders an older export wrote: all chips in val, or train statistics all null."""
    copy = _copy(chips, tmp_path)
    info = json.loads((copy / "dataset.json").read_text())
    if older == "no train chips":
        info["counts"].update(train=0, val=3)
    for stats in info["source"]["stats"] + info["target"]["stats"]:
        stats.update(min=None, max=None, p01=None, p99=None, mean=None, std=None)
    (copy / "dataset.json").write_text(json.dumps(info))
    err = one_line(capsys, ["train", copy, "-o", tmp_path / "run", *TINY])
    assert err.startswith("Error: ") and expected in err
    assert "--split-block" in err and "--val-fraction" in err
    assert not (tmp_path / "run").exists()


# --- scenes without a valid pixel -------------------------------------------------------------

TEN_METRES = Affine(10, 0, 500000, 0, -10, 5200000)  # the model's pixel size


def _empty_scene(path: Path, kind: str) -> str:
    if kind == "nodata":
        return write_scene(path, 64, 64, data=np.zeros((3, 64, 64), np.uint8), nodata=0,
                           transform=TEN_METRES)
    return write_scene(path, 64, 64, dtype="float32", nodata=None, transform=TEN_METRES,
                       data=np.full((3, 64, 64), np.nan, np.float32))


@pytest.mark.parametrize("kind", ["nodata", "nan"])
def test_predict_warns_of_a_scene_without_a_valid_pixel(inputs, tmp_path, capsys, kind):
    scene = _empty_scene(tmp_path / f"{kind}.tif", kind)
    out = tmp_path / "out.tif"
    assert main(["predict", scene, str(out), "-m", str(inputs / "model.safetensors"), "-q"]) == 0
    err = capsys.readouterr().err
    expected = (f"warning: {scene}: no pixel is valid in band(s) 1,2,3 (all nodata, NaN or "
                f"masked), so its output {out} is all nodata")
    assert expected in err and "Traceback" not in err
    with rasterio.open(out) as dst:
        assert not dst.dataset_mask().any() or (dst.read(1) == dst.nodata).all()


def test_predict_api_warns_per_scene_in_a_group(inputs, tmp_path):
    """Small scenes predicted together: only the empty one is warned of, in its result."""
    empty = _empty_scene(tmp_path / "empty.tif", "nodata")
    full = write_scene(tmp_path / "full.tif", 64, 64, transform=TEN_METRES)
    with pytest.warns(GeoPix2PixWarning, match="no pixel is valid") as caught:
        results = predict([empty, full], out_dir=tmp_path / "out",
                          model=inputs / "model.safetensors", progress=False)
    assert [r.warnings for r in results] == [[
        f"{empty}: no pixel is valid in band(s) 1,2,3 (all nodata, NaN or masked), so its "
        f"output {tmp_path / 'out' / 'empty.tif'} is all nodata; check the scene, its nodata "
        "value and --bands"], []]
    assert sum("no pixel is valid" in str(w.message) for w in caught) == 1


# --- a correct run on real data prints no library warning ---------------------------------------

def test_a_real_run_issues_no_library_warning(tmp_path, capsys):
    """export, train, predict and evaluate on real rasters with every warning but ours made an
    error (rasterio's `Affine *` PendingDeprecationWarning among them)."""
    folder = shared("dem_hillshade_exploradores")
    dem = folder / "exploradores_aster_dem_30m.tif"
    shade = folder / "exploradores_aster_hillshade_gdal_az315_alt45.tif"
    chips, run, out = tmp_path / "chips", tmp_path / "run", tmp_path / "pred.tif"
    steps = [["export-chips", dem, shade, "-o", chips, "--chip-size", "64", "--max-nodata", "0.2",
              "--workers", "0", "-q"],
             ["train", chips, "-o", run, *TINY],
             ["predict", dem, out, "-m", run / "model.safetensors", "-q"],
             ["evaluate", out, shade, "--json", tmp_path / "report.json"]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("default", category=GeoPix2PixWarning)
        for args in steps:
            assert main([str(a) for a in args]) == 0, capsys.readouterr().err
            err = capsys.readouterr().err
            assert "Warning" not in err and "Affine" not in err, err
    assert json.loads((tmp_path / "report.json").read_text())["valid_pixels"] > 0
