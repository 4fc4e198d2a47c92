"""A band listed twice (--source-bands 1,1, --bands 1-3,2) is refused in one line naming the
option and the band, exit 2: it would feed one input twice, most likely a slip for another band.
"""

from __future__ import annotations

import numpy as np
import pytest

import geopix2pix as g
from geopix2pix.errors import GeoPix2PixError
from tests.conftest import write_raster
from tests.test_export_errors import run_error


@pytest.fixture
def pair(tmp_path):
    data = np.random.default_rng(0).random((3, 64, 64), dtype=np.float32)
    return (write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data[:2]))


@pytest.mark.parametrize("option, value, band", [("--source-bands", "1,1", 1),
                                                 ("--target-bands", "2,1,2", 2),
                                                 ("--source-bands", "1-3,2", 2)])
def test_export_refuses_a_band_listed_twice(tmp_path, pair, capsys, option, value, band):
    err = run_error(capsys, ["export-chips", *map(str, pair), "-o", str(tmp_path / "c"), "-q",
                             option, value])
    assert err == (f"Error: {option} {value}: band {band} is listed more than once; list each "
                   "band once")
    assert not (tmp_path / "c").exists()


def test_predict_refuses_a_band_listed_twice(tmp_path, pair, capsys, model_file):
    err = run_error(capsys, ["predict", str(pair[0]), str(tmp_path / "out.tif"), "--model",
                             model_file, "-q", "--bands", "1,1,2"])
    assert err == "Error: --bands 1,1,2: band 1 is listed more than once; list each band once"
    assert not (tmp_path / "out.tif").exists()


def test_the_python_api_refuses_a_band_listed_twice(tmp_path, pair, model_file):
    with pytest.raises(GeoPix2PixError, match=r"^--source-bands 1,1: band 1 is listed more "):
        g.export_chips(*pair, tmp_path / "c", source_bands=[1, 1], chip_size=32, progress=False)
    with pytest.raises(GeoPix2PixError, match=r"^.*--bands 3,3,1: band 3 is listed more "):
        g.predict(pair[0], tmp_path / "out.tif", model=model_file, bands=[3, 3, 1],
                  progress=False)
