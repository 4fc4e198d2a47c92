"""export-chips' co-registration check (issue 20): known sub-pixel shifts of generated pairs
recovered in chips.gpkg and dataset.json, the summary's line and warning, --max-shift,
--no-shift-check, chips never changed by the check, and the real DEM -> hillshade pair."""

from __future__ import annotations

import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from conftest import shared, write_raster
from scipy.ndimage import gaussian_filter

from geopix2pix.chips.coregistration import CONFIDENT
from geopix2pix.chips.export import export_chips
from geopix2pix.chips.layout import ChipWindow
from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.chips.shiftcheck import REJECT_SHIFT, SAMPLE_EVERY, ShiftCheck
from geopix2pix.cli import main

SIZE, CHIP = 384, 128
ORIGIN = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5200000.0)
SHIFT = (0.7, -0.4)  # the target's content lies 0.7 px east and 0.4 px north of the source's


def field() -> np.ndarray:
    """A smooth random field, standardised."""
    values = gaussian_filter(np.random.default_rng(5).normal(size=(SIZE, SIZE)), 2.0)
    return ((values - values.mean()) / values.std()).astype(np.float32)


def make_pair(folder, shift=(0.0, 0.0)):
    """The field as source and a nonlinear function of it as target, written on the source's
    grid moved by `shift` source pixels (dx east, dy south): its content lies there."""
    source = field()
    target = np.exp(0.5 * source)
    moved = ORIGIN @ Affine.translation(*shift)
    return (write_raster(folder / "source.tif", source),
            write_raster(folder / "target.tif", target.astype(np.float32), transform=moved))


def export(pair, out, **options):
    return export_chips(*pair, out, chip_size=CHIP, workers=0, progress=False, **options)


def index(out):
    return gpd.read_file(out / "chips.gpkg").sort_values("id").reset_index(drop=True)


def scene(out):
    return json.loads((out / "dataset.json").read_text())["pairs"][0]["shift"]


def chip_bytes(out) -> dict[str, bytes]:
    return {f"{side}/{p.name}": p.read_bytes() for side in ("source", "target")
            for p in sorted((out / side).glob("*.tif"))}


@pytest.fixture(scope="module")
def shifted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shifted")
    pair = make_pair(folder, SHIFT)
    summary = export(pair, folder / "chips")
    return pair, folder / "chips", summary


def test_a_known_sub_pixel_shift_is_recovered_in_the_index_and_dataset_json(shifted):
    _, out, summary = shifted
    chips = index(out)
    confident = chips[chips.shift_confidence >= CONFIDENT]
    assert len(confident) >= 0.8 * len(chips) >= 0.8 * 8  # the overlap holds 8 chips
    np.testing.assert_allclose(confident.shift_x, SHIFT[0], atol=0.2)
    np.testing.assert_allclose(confident.shift_y, SHIFT[1], atol=0.2)
    recorded = scene(out)
    assert abs(recorded["dx"] - SHIFT[0]) <= 0.2 and abs(recorded["dy"] - SHIFT[1]) <= 0.2
    assert (recorded["confident"], recorded["chips"]) == (len(confident), len(chips))
    assert 0 <= recorded["spread"] <= 0.2
    line = [x for x in summary.lines() if x.startswith("pair 0: ")]
    assert line == [f"pair 0: target is shifted by ({recorded['dx']:+.1f}, "
                    f"{recorded['dy']:+.1f}) px against the source, consistent within "
                    f"{recorded['spread']:.1f} px over {len(confident)} of {len(chips)} chips"]


def test_a_shift_above_half_a_pixel_is_warned_about_on_the_command_line(shifted, tmp_path,
                                                                       capsys):
    pair, out, summary = shifted
    assert [w for w in summary.warnings if "check the co-registration" in w]
    recorded = scene(out)
    shift = f"({recorded['dx']:+.1f}, {recorded['dy']:+.1f}) px"
    assert main(["export-chips", str(pair[0]), str(pair[1]), "-o", str(tmp_path / "cli"),
                 "--chip-size", str(CHIP), "--workers", "0", "-q"]) == 0
    captured = capsys.readouterr()
    assert f"pair 0: target is shifted by {shift} against the source" in captured.out
    warning = [x for x in captured.err.splitlines() if x.startswith("warning: pair 0: ")]
    assert len(warning) == 1 and f"target.tif is shifted by {shift}" in warning[0]
    assert "check the co-registration" in warning[0] and "--correct-shift" in warning[0]


def test_max_shift_drops_exactly_the_chips_confidently_shifted_beyond_it(shifted, tmp_path):
    pair, out, _ = shifted
    chips = index(out)
    sizes = np.hypot(chips.shift_x, chips.shift_y)
    confident = chips.shift_confidence >= CONFIDENT
    ordered = np.sort(sizes[confident])
    limit = float((ordered[len(ordered) // 2] + ordered[len(ordered) // 2 + 1]) / 2)
    dropped = set(chips.id[confident & (sizes > limit)])
    assert 0 < len(dropped) < len(chips)
    summary = export(pair, tmp_path / "max", max_shift=limit)
    assert set(index(tmp_path / "max").id) == set(chips.id) - dropped
    assert summary.skipped[REJECT_SHIFT] == len(dropped)
    info = json.loads((tmp_path / "max" / "dataset.json").read_text())
    assert info["counts"]["skipped"][REJECT_SHIFT] == len(dropped)
    assert info["options"]["max_shift"] == limit
    assert scene(tmp_path / "max")["chips"] == len(chips)  # the dropped chips' shifts count


def test_no_shift_check_gives_nan_columns_and_the_same_chips(shifted, tmp_path):
    pair, out, _ = shifted
    summary = export(pair, tmp_path / "off", shift_check=False)
    chips = index(tmp_path / "off")
    assert chips[["shift_x", "shift_y", "shift_confidence"]].isna().all().all()
    assert list(chips.id) == list(index(out).id)
    assert chip_bytes(tmp_path / "off") == chip_bytes(out)
    assert not [x for x in summary.lines() if x.startswith("pair ")]
    assert not [w for w in summary.warnings if "co-registration" in w]
    info = json.loads((tmp_path / "off" / "dataset.json").read_text())
    assert info["pairs"][0]["shift"] is None and info["options"]["shift_check"] is False


def test_an_unshifted_pair_on_the_same_grid_stays_bit_exact_and_unwarned(tmp_path):
    pair = make_pair(tmp_path)
    summary = export(pair, tmp_path / "chips")
    assert not [w for w in summary.warnings if "co-registration" in w]
    recorded = scene(tmp_path / "chips")
    assert recorded["confident"] >= 7 and math.hypot(recorded["dx"], recorded["dy"]) <= 0.2
    with rasterio.open(pair[0]) as src, rasterio.open(pair[1]) as tgt:
        for chip in index(tmp_path / "chips").itertuples():
            window = rasterio.windows.Window(chip.col, chip.row, CHIP, CHIP)
            for side, raster in (("source", src), ("target", tgt)):
                with rasterio.open(tmp_path / "chips" / side / f"{chip.id}.tif") as written:
                    np.testing.assert_array_equal(written.read(), raster.read(window=window))


def test_the_real_dem_hillshade_pair_shows_no_shift(tmp_path):
    dem = shared("dem_hillshade_exploradores", "exploradores_aster_dem_30m.tif")
    shade = shared("dem_hillshade_exploradores",
                   "exploradores_aster_hillshade_gdal_az315_alt45.tif")
    summary = export_chips(dem, shade, tmp_path / "chips", chip_size=64, max_nodata=0.05,
                           workers=0, progress=False)
    recorded = scene(tmp_path / "chips")
    assert recorded["confident"] >= 0.5 * recorded["chips"] > 0
    assert math.hypot(recorded["dx"], recorded["dy"]) < 0.5
    assert not [w for w in summary.warnings if "co-registration" in w]


def test_a_large_pair_has_a_spread_out_sample_estimated_and_max_shift_all():
    assert ShiftCheck.for_pair(20, True, None).every == 1  # a small pair: every chip
    assert ShiftCheck.for_pair(100, False, None).every == 0
    assert ShiftCheck.for_pair(10_000, True, 2.0) == ShiftCheck(1, 2.0)
    check = ShiftCheck.for_pair(32 * 32, True, None)
    assert check.every == SAMPLE_EVERY
    chips = [ChipWindow(0, r * 256, c * 256, 256) for r in range(32) for c in range(32)]
    chosen = [c for c in chips if check.chosen(c)]
    assert len(chosen) == len(chips) // SAMPLE_EVERY
    assert {c.col for c in chosen} == {c.col for c in chips}  # every column and row sampled
    assert {c.row for c in chosen} == {c.row for c in chips}


def test_the_command_line_takes_the_options_and_refuses_max_shift_without_the_check(
        shifted, tmp_path, capsys):
    pair, out, _ = shifted
    args = ["export-chips", str(pair[0]), str(pair[1]), "--chip-size", str(CHIP), "-q",
            "--workers", "0"]
    assert main([*args, "-o", str(tmp_path / "bad"), "--max-shift", "1",
                 "--no-shift-check"]) == 2
    assert "--max-shift 1.0 needs the shift check; drop --no-shift-check" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "off"), "--no-shift-check"]) == 0
    assert "pair 0:" not in capsys.readouterr().out
    assert index(tmp_path / "off").shift_x.isna().all()
    assert not (tmp_path / "bad").exists()


def test_a_dataset_json_written_before_the_check_still_loads(shifted, tmp_path):
    _, out, _ = shifted
    old = tmp_path / "old"
    old.mkdir()
    data = json.loads((out / "dataset.json").read_text())
    for pair in data["pairs"]:
        del pair["shift"]
    for name in ("max_shift", "shift_check"):
        del data["options"][name]
    (old / "dataset.json").write_text(json.dumps(data))
    info = DatasetInfo.load(old)
    assert "shift" not in info.pairs[0] and info.chip_size == CHIP
    assert DatasetInfo.load(out).pairs[0]["shift"]["chips"] == len(index(out))


def test_worker_processes_give_the_same_shifts(shifted, tmp_path):
    pair, out, _ = shifted
    export_chips(*pair, tmp_path / "two", chip_size=CHIP, workers=2, progress=False)
    columns = ["id", "shift_x", "shift_y", "shift_confidence"]
    assert index(tmp_path / "two")[columns].equals(index(out)[columns])
    assert scene(tmp_path / "two") == scene(out)
