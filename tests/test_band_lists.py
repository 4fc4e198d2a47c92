"""A band listed twice (--source-bands 1,1,1, --bands 1,1,2) is read as asked, with a warning
naming the option and the band: it is legitimate (a grey scene fed to a model of three bands, a
panchromatic band repeated for an encoder pretrained on RGB) but more often a slip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import rasterio.windows
from conftest import write_raster

import geopix2pix as g
from geopix2pix.cli import main


@pytest.fixture
def pair(tmp_path):
    data = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    return (write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data[:2]))


def warning(option: str, value: str, band: int) -> str:
    return (f"{option} {value} reads band {band} more than once: several bands get the same "
            "values (as a grey scene fed to a model of more bands does); check that it is not a "
            "slip for another band")


@pytest.mark.parametrize("option, value, band", [("--source-bands", "1,1,1", 1),
                                                 ("--target-bands", "2,1,2", 2),
                                                 ("--source-bands", "1-3,2", 2)])
def test_export_reads_a_band_listed_twice_and_warns(tmp_path, pair, capsys, option, value,
                                                     band):
    out = tmp_path / "c"
    assert main(["export-chips", *map(str, pair), "-o", str(out), "-q", "--chip-size", "32",
                 "--workers", "0", option, value]) == 0
    listed = [int(b) for part in value.split(",")
              for b in (range(int(part[0]), int(part[-1]) + 1) if "-" in part else [part])]
    shown = ",".join(map(str, listed))  # a range as the bands it reads
    assert f"warning: {warning(option, shown, band)}" in capsys.readouterr().err
    side = "source" if option == "--source-bands" else "target"
    assert json.loads((out / "dataset.json").read_text())[side]["bands"] == listed
    chip = next((out / side).glob("*.tif"))
    with rasterio.open(chip) as src, rasterio.open(pair[0 if side == "source" else 1]) as raw:
        window = rasterio.windows.from_bounds(*src.bounds, transform=raw.transform)
        first = raw.read(listed[0], window=window.round_offsets().round_lengths())
        assert src.count == len(listed)
        np.testing.assert_array_equal(src.read(1), first)


def test_one_raster_as_both_sides_is_warned_of_when_a_band_is_on_both(tmp_path, pair,
                                                                      capsys):
    """A tester's `export-chips X X`: the model would learn to copy its input (still exported:
    a check of the pipeline does it too). Other bands of one raster are a translation."""
    source = str(pair[0])
    args = ["export-chips", source, source, "-q", "--chip-size", "32", "--workers", "0"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert (f"warning: {source} is both the source and the target, with band(s) 1, 2, 3 on "
            "both sides: the model learns to copy them; pass the target raster, or choose other "
            "bands with --source-bands/--target-bands") in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "b"), "--target-bands", "3"]) == 0
    assert "band(s) 3 on both sides" in capsys.readouterr().err
    assert main([*args, "-o", str(tmp_path / "c"), "--source-bands", "1,2",
                 "--target-bands", "3"]) == 0
    assert "both the source and the target" not in capsys.readouterr().err


def test_predict_reads_a_band_listed_twice_and_warns(tmp_path, pair, capsys, model_file):
    out = tmp_path / "out.tif"
    assert main(["predict", str(pair[0]), str(out), "--model", model_file, "-q",
                 "--bands", "1,1,2"]) == 0
    assert f"warning: {pair[0]}: {warning('--bands', '1,1,2', 1)}" in capsys.readouterr().err
    assert out.exists()


def test_the_python_api_warns_of_a_band_listed_twice(tmp_path, pair, model_file):
    summary = g.export_chips(*pair, tmp_path / "c", source_bands=[1, 1], chip_size=32,
                             progress=False, workers=0)
    assert warning("--source-bands", "1,1", 1) in summary.warnings
    with pytest.warns(g.GeoPix2PixWarning, match="reads band 3 more than once"):
        g.predict(pair[0], tmp_path / "out.tif", model=model_file, bands=[3, 3, 1],
                  progress=False)
    report = g.evaluate(pair[1], pair[1], bands=[1, 1], reference_bands=[2, 2])
    assert warning("--bands", "1,1", 1) in report.warnings
    assert warning("--reference-bands", "2,2", 2) in report.warnings
