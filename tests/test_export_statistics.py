"""The train-only statistics of a sparse raster: the sample the percentiles come from keeps a
pixel even where each chip's few valid pixels all miss the sampling rate."""

from __future__ import annotations

import json

import numpy as np
from conftest import write_raster

import geopix2pix as g


def test_two_valid_pixels_among_many_chips_still_give_statistics(tmp_path):
    """The reviewer's raster: two valid pixels in 256 x 256 NaN, kept with --max-nodata 1. The
    rate came from the chips' area, so the sample was empty and the export ended in numpy's
    'need at least one array to concatenate' traceback."""
    source = np.full((1, 256, 256), np.nan, np.float32)
    source[0, 10, 10], source[0, 200, 100] = 5.0, 7.0
    target = np.random.default_rng(0).random((1, 256, 256), dtype=np.float32)
    paths = (write_raster(tmp_path / "s.tif", source), write_raster(tmp_path / "t.tif", target))
    stats = []
    for workers in (0, 2):  # (in worker processes, whichever job ends first, the same)
        out = tmp_path / f"chips{workers}"
        summary = g.export_chips(*paths, out, chip_size=32, val_fraction=0, max_nodata=1.0,
                                 sample_size=10, shift_check=False, workers=workers,
                                 progress=False)
        assert summary.kept["train"] == 64
        stats.append(json.loads((out / "dataset.json").read_text())["source"]["stats"][0])
    band = stats[0]
    assert band["count"] == 2 and band["min"] == 5.0 and band["max"] == 7.0
    assert 5.0 <= band["p01"] <= band["p99"] <= 7.0 and stats[1] == band
