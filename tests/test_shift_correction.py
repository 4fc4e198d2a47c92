"""export-chips --correct-shift (issue 20): known sub-pixel and whole-pixel shifts of generated
pairs and of the real DEM -> hillshade pair are measured first and corrected, leaving a residual
under 0.2 px; dataset.json records what was applied; it changes exactly the chips it should
(the corrected pairs' targets), and a pair it cannot measure is cut as it is."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import shared, write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.raster.grid import Grid
from tests.test_export_shift import CHIP, ORIGIN, SIZE, chip_bytes, index, make_pair

RESIDUAL = 0.2  # px: the accuracy for DEM -> hillshade


def pair_info(out, pair=0) -> dict:
    return json.loads((out / "dataset.json").read_text())["pairs"][pair]


def assert_corrected(out, shift) -> None:
    """The first pass found `shift`, applied it, and the corrected chips hold none."""
    info = pair_info(out)
    applied = info["shift_correction"]["applied"]
    assert abs(applied["dx"] - shift[0]) < RESIDUAL and abs(applied["dy"] - shift[1]) < RESIDUAL
    assert info["shift_correction"]["measured"]["confident"] >= 3
    residual = info["shift"]
    assert residual["confident"] >= 3
    assert math.hypot(residual["dx"], residual["dy"]) < RESIDUAL
    assert info["target_resampled"] is any(shift)


@pytest.mark.parametrize("shift", [(0.7, -0.4), (3.0, -2.0)])
def test_a_known_shift_of_a_generated_pair_is_corrected(tmp_path, shift):
    pair = make_pair(tmp_path, shift)
    summary = export_chips(*pair, tmp_path / "chips", chip_size=CHIP, workers=0,
                           progress=False, correct_shift=True)
    assert_corrected(tmp_path / "chips", shift)
    moved = [line for line in summary.lines() if "--correct-shift moved" in line]
    assert len(moved) == 1 and moved[0].startswith("pair 0: --correct-shift moved the target by")
    assert not [w for w in summary.warnings if "check the co-registration" in w]
    with rasterio.open(tmp_path / "chips" / "target" / f"{index(tmp_path / 'chips').id[0]}.tif") \
            as chip, rasterio.open(pair[0]) as source:
        assert chip.crs == source.crs  # the chips stay on the source grid, exactly
        row, col = (int(x[1:]) for x in chip.name.split("/")[-1][:-4].split("_")[1:])
        assert chip.transform == Grid.of(source).window_transform(
            rasterio.windows.Window(col, row, CHIP, CHIP))


@pytest.mark.parametrize("shift", [(0.6, -0.3), (2.0, -3.0), (0.0, 0.0)])
def test_a_known_shift_of_the_real_dem_hillshade_pair_is_corrected(tmp_path, shift):
    dem = shared("dem_hillshade_exploradores", "exploradores_aster_dem_30m.tif")
    shade = shared("dem_hillshade_exploradores",
                   "exploradores_aster_hillshade_gdal_az315_alt45.tif")
    with rasterio.open(shade) as src:
        profile = src.profile | dict(transform=src.transform @ Affine.translation(*shift))
        with rasterio.open(tmp_path / "shifted.tif", "w", **profile) as dst:
            dst.write(src.read())
    for name, correct in (("chips", True), ("plain", False)):
        export_chips(dem, tmp_path / "shifted.tif", tmp_path / name, chip_size=64,
                     max_nodata=0.05, workers=0, progress=False, correct_shift=correct)
    assert_corrected(tmp_path / "chips", shift)
    same = chip_bytes(tmp_path / "chips") == chip_bytes(tmp_path / "plain")
    assert same is not any(shift)  # the unshifted pair's shift is measured as (0, 0): copied


def test_correct_shift_changes_only_the_corrected_pairs_targets(tmp_path):
    make_pair(tmp_path, (0.7, -0.4))
    noise = np.random.default_rng(9).normal(size=(SIZE, SIZE)).astype(np.float32)
    write_raster(tmp_path / "noise.tif", noise, transform=ORIGIN)  # nothing to match
    (tmp_path / "pairs.csv").write_text("source,target\nsource.tif,target.tif\n"
                                        "source.tif,noise.tif\n")
    runs = {}
    for name, extra in (("plain", []), ("corrected", ["--correct-shift"])):
        assert main(["export-chips", "--pairs", str(tmp_path / "pairs.csv"), "-o",
                     str(tmp_path / name), "--chip-size", str(CHIP), "--workers", "0", "-q",
                     *extra]) == 0
        runs[name] = chip_bytes(tmp_path / name)
    plain, corrected = runs["plain"], runs["corrected"]
    assert plain.keys() == corrected.keys()
    changed = {name for name in plain if plain[name] != corrected[name]}
    assert changed == {name for name in plain if name.startswith("target/p000_")}
    assert pair_info(tmp_path / "corrected", 1)["shift_correction"]["applied"] is None
    assert "shift_correction" not in pair_info(tmp_path / "plain", 0)
    options = json.loads((tmp_path / "corrected" / "dataset.json").read_text())["options"]
    assert options["correct_shift"] is True


def test_an_unmeasurable_pair_is_warned_about_and_cut_as_it_is(tmp_path, capsys):
    make_pair(tmp_path)
    noise = np.random.default_rng(9).normal(size=(SIZE, SIZE)).astype(np.float32)
    write_raster(tmp_path / "noise.tif", noise)
    assert main(["export-chips", str(tmp_path / "source.tif"), str(tmp_path / "noise.tif"),
                 "-o", str(tmp_path / "chips"), "--chip-size", str(CHIP), "--workers", "0",
                 "-q", "--correct-shift"]) == 0
    warning = [x for x in capsys.readouterr().err.splitlines() if "--correct-shift" in x]
    assert len(warning) == 1 and "left the target" in warning[0] and "noise.tif" in warning[0]
    assert pair_info(tmp_path / "chips")["target_resampled"] is False


def test_worker_processes_give_the_same_corrected_and_masked_chips(tmp_path):
    pair = make_pair(tmp_path, (0.7, -0.4))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[:40, :200] = 1
    write_raster(tmp_path / "mask.tif", mask)
    for name, workers in (("one", 0), ("two", 2)):
        export_chips(*pair, tmp_path / name, chip_size=CHIP, workers=workers, progress=False,
                     correct_shift=True, target_mask=tmp_path / "mask.tif", max_nodata=0.5)
    assert chip_bytes(tmp_path / "two") == chip_bytes(tmp_path / "one")
    assert pair_info(tmp_path / "two") == pair_info(tmp_path / "one")
    assert_corrected(tmp_path / "two", (0.7, -0.4))
    assert (index(tmp_path / "one").valid_fraction < 1).sum() >= 2  # the mask is applied


def test_a_target_mask_is_moved_with_the_target_it_shares_the_misregistration_of(tmp_path):
    """A mask on the target's grid (its SCL, its cloud mask) lies where the target does: the
    correction moved the target but warped the mask onto the source grid as it was, so the
    masked pixels came out 3 px and 2 px off the cloud they mark."""
    shift = (3.0, -2.0)
    pair = make_pair(tmp_path, shift)
    cloud = np.zeros((SIZE, SIZE), np.uint8)
    cloud[150:200, 150:200] = 1  # the target's own pixels, on its own grid
    with rasterio.open(pair[1]) as target:
        mask = write_raster(tmp_path / "mask.tif", cloud, transform=target.transform)
    export_chips(*pair, tmp_path / "chips", chip_size=CHIP, workers=0, progress=False,
                 correct_shift=True, target_mask=mask, max_nodata=1.0, val_fraction=0)
    assert_corrected(tmp_path / "chips", shift)
    expected = np.zeros((SIZE + CHIP, SIZE + CHIP), bool)
    expected[150:200, 150:200] = True  # the same pixels of the source grid, corrected
    masked = 0
    for path in sorted((tmp_path / "chips" / "target").glob("*.tif")):
        row, col = (int(x[1:]) for x in path.stem.split("_")[1:])
        with rasterio.open(path) as chip:
            invalid = np.isnan(chip.read(1))
        assert (invalid == expected[row:row + CHIP, col:col + CHIP]).all(), path.name
        masked += int(invalid.sum())
    assert masked == 50 * 50


def test_a_class_map_resampled_only_by_the_correction_is_warned_of(tmp_path):
    """A class map a whole number of pixels off its source is read as it is, until the
    correction moves it by a measured (fractional) shift: averaged with bilinear then, so the
    export warns as it does of a target resampled from the start (it did not: the look was
    judged on opening, before the shift was measured)."""
    source, target = make_pair(tmp_path, (3.0, -2.0))
    with rasterio.open(target) as src:
        codes = np.digitize(src.read(1), np.quantile(src.read(1), [0.2, 0.4, 0.6, 0.8]))
        profile = src.profile | dict(dtype="uint8", nodata=None)
    with rasterio.open(tmp_path / "classes.tif", "w", **profile) as dst:
        dst.write(codes.astype(np.uint8) + 1, 1)
    said = {}
    for resampling in ("bilinear", "nearest"):
        summary = export_chips(source, tmp_path / "classes.tif", tmp_path / resampling,
                               chip_size=CHIP, workers=0, progress=False, correct_shift=True,
                               target_resampling=resampling)
        assert pair_info(tmp_path / resampling)["target_resampled"]
        said[resampling] = [w for w in summary.warnings if "class map" in w]
    assert said == {"bilinear": [
        f"the target {tmp_path / 'classes.tif'} looks like a class map (5 integer values in a "
        "sample: 1, 2, 3, 4, 5) resampled onto its source's grid moved by --correct-shift with "
        "--target-resampling bilinear, which averages neighbouring codes into codes of other "
        "classes or none; if it is one, re-export with --target-resampling nearest"],
        "nearest": []}
