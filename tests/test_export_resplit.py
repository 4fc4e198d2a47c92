"""The split drawn again when the chips dropped for invalid pixels (known only once read) took
val's share far from --val-fraction: the worst case is built here by blanking exactly the
ground of the first split's val chips, so every val chip of the first pass is dropped."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main

SIZE, CHIP = 256, 32
OPTIONS = dict(chip_size=CHIP, val_fraction=0.25, seed=2, progress=False, workers=1)


def val_ground(chips_dir, size: int = SIZE, raster: int | None = None) -> np.ndarray:
    """The pixels the val chips of an export cover (of one raster of an unpaired export)."""
    index = gpd.read_file(chips_dir / "chips.gpkg")
    if raster is not None:
        index = index[index.raster == raster]
    ground = np.zeros((size, size), bool)
    for row in index[index.split == "val"].itertuples():
        ground[row.row:row.row + CHIP, row.col:row.col + CHIP] = True
    return ground


def blanked(path, data: np.ndarray, ground: np.ndarray):
    """`data` with NaN (its nodata) over `ground`, written to `path`."""
    data = data.copy()
    data[:, ground] = np.nan
    return write_raster(path, data, nodata=float("nan"))


def chip_files(folder) -> set[str]:
    return {p.stem for p in folder.glob("*.tif")}


def share(counts: dict) -> float:
    return counts["val"] / (counts["train"] + counts["val"])


@pytest.mark.parametrize("split_block", [None, 64])
def test_val_dropped_for_invalid_pixels_is_split_again_without_them(tmp_path, rng, split_block):
    data = rng.random((2, SIZE, SIZE), dtype=np.float32)
    target = write_raster(tmp_path / "t.tif", data[:1] * 3)
    first = export_chips(write_raster(tmp_path / "s.tif", data), target, tmp_path / "whole",
                         split_block=split_block, **OPTIONS)
    assert not first.resplit and 0.15 < share(first.kept) < 0.35
    holed = blanked(tmp_path / "holed.tif", data, val_ground(tmp_path / "whole"))

    summary = export_chips(holed, target, tmp_path / "chips", split_block=split_block,
                           **OPTIONS)
    out = tmp_path / "chips"
    # the first pass kept no val chip at all: split again, val near its share once more
    assert summary.resplit.startswith("split again without the ")
    assert "val had 0 of the" in summary.resplit and summary.resplit in summary.lines()
    assert summary.kept["val"] > 0 and abs(share(summary.kept) - 0.25) < 0.15
    info = json.loads((out / "dataset.json").read_text())
    assert info["counts"]["train"] == summary.kept["train"]
    assert info["counts"]["val"] == summary.kept["val"]
    assert info["counts"]["skipped"] == summary.skipped
    assert info["options"]["split_block"] == (split_block or info["options"]["split_block"])
    # exactly the kept chips are on disk: nothing left of the first pass
    index = gpd.read_file(out / "chips.gpkg")
    assert chip_files(out / "source") == chip_files(out / "target") == set(index.id)
    assert len(index) == summary.kept["train"] + summary.kept["val"]
    # no ground in both splits
    train = np.zeros((SIZE, SIZE), bool)
    for row in index[index.split == "train"].itertuples():
        train[row.row:row.row + CHIP, row.col:row.col + CHIP] = True
    assert not (train & val_ground(out)).any()
    # the statistics are the second split's train chips'
    values = []
    for chip in index[index.split == "train"].id:
        with rasterio.open(out / "source" / f"{chip}.tif") as ds:
            values.append(ds.read(1, masked=True).compressed())
    assert info["source"]["stats"][0]["mean"] == pytest.approx(np.concatenate(values).mean(),
                                                               rel=1e-6)


def test_an_export_whose_invalid_chips_leave_the_share_near_is_not_split_again(tmp_path, rng):
    data = rng.random((1, SIZE, SIZE), dtype=np.float32)
    data[:, :40, :40] = np.nan  # one corner chip or so: the share stays near
    source = write_raster(tmp_path / "s.tif", data, nodata=float("nan"))
    target = write_raster(tmp_path / "t.tif", data[:, ::-1].copy())
    summary = export_chips(source, target, tmp_path / "chips", **{**OPTIONS, "seed": 0})
    assert summary.skipped["too many invalid pixels"] > 0
    assert not summary.resplit and not any("split again" in line for line in summary.lines())


def test_the_command_line_says_it_split_again(tmp_path, rng, capsys):
    data = rng.random((1, SIZE, SIZE), dtype=np.float32)
    source = write_raster(tmp_path / "s.tif", data)
    target = write_raster(tmp_path / "t.tif", data * 2)
    args = ["--chip-size", str(CHIP), "--val-fraction", "0.25", "--seed", "2", "--workers", "1"]
    assert main(["export-chips", str(source), str(target), "-o", str(tmp_path / "a")] + args) == 0
    holed = blanked(tmp_path / "h.tif", data, val_ground(tmp_path / "a"))
    capsys.readouterr()
    assert main(["export-chips", str(holed), str(target), "-o", str(tmp_path / "b")]
                + args) == 0
    said = capsys.readouterr()
    assert "split again without the" in said.out and "Traceback" not in said.err


def test_each_unpaired_domain_is_split_again_on_its_own(tmp_path, rng):
    sources = [write_raster(tmp_path / "a.tif", rng.random((1, SIZE, SIZE), dtype=np.float32))]
    target_data = rng.random((2, SIZE, SIZE), dtype=np.float32)
    targets = [write_raster(tmp_path / "b.tif", target_data)]
    first = export_chips(out_dir=tmp_path / "whole", unpaired=True, sources=sources,
                         targets=targets, **OPTIONS)
    holed = blanked(tmp_path / "b_holed.tif", target_data,
                    val_ground(tmp_path / "whole", raster=1))
    summary = export_chips(out_dir=tmp_path / "chips", unpaired=True, sources=sources,
                           targets=[holed], **OPTIONS)
    assert "split again" in summary.resplit and "the target domain" in summary.resplit
    assert summary.resplit in summary.lines()  # (the unpaired summary left it out)
    # the source domain, whose chips were all valid, kept its first split
    assert summary.domains["source"]["kept"] == first.domains["source"]["kept"]
    assert abs(share(summary.domains["target"]["kept"]) - 0.25) < 0.15
    index = gpd.read_file(tmp_path / "chips" / "chips.gpkg")
    assert chip_files(tmp_path / "chips" / "target") == set(index[index.domain == "target"].id)


def test_a_split_again_keeps_the_shift_correction_measured_once(tmp_path, rng):
    """The reviewer's case: the second pass measured the target through the first pass's
    correction, found ~0 px and wrote that over it; the chips came out 3 px off."""
    from scipy.ndimage import gaussian_filter

    data = gaussian_filter(rng.random((1, SIZE, SIZE)), (0, 3, 3)).astype(np.float32)
    data = (data - data.min()) / np.ptp(data)
    target = write_raster(tmp_path / "t.tif", np.roll(data, (3, 2), axis=(1, 2)))
    options = {**OPTIONS, "correct_shift": True}
    export_chips(write_raster(tmp_path / "s.tif", data), target, tmp_path / "whole", **options)
    holed = blanked(tmp_path / "holed.tif", data, val_ground(tmp_path / "whole"))
    summary = export_chips(holed, target, tmp_path / "chips", **options)
    assert summary.resplit
    applied = json.loads((tmp_path / "chips" / "dataset.json").read_text())["pairs"][0]
    correction = applied["shift_correction"]["applied"]
    assert (correction["dx"], correction["dy"]) == (pytest.approx(2, abs=0.3),
                                                    pytest.approx(3, abs=0.3))
