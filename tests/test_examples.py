"""The per-scenario example scripts run against ../shared/data's sample rasters (skipped when the
folder is absent), at a couple of training steps, and write a prediction on the scene's grid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
from conftest import shared

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = {
    "dsm2image.py": "dem_hillshade_exploradores/exploradores_aster_dem_30m.tif",
    "sar2optical.py": "sar_optical_spacenet6_rotterdam/sar_masked_HH_HV_VH_VV_dB.tif",
    # SAR of the scene's west half, optical of its east half: CycleGAN, no pixel paired
    "sar2optical_unpaired.py": "sar_optical_spacenet6_rotterdam/sar_masked_HH_HV_VH_VV_dB.tif",
    "image2map.py": "image_map_eolearn_slovenia/s2_l1c_2015-07-11_clear.tif",
}

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_runs_on_the_sample_data(script, tmp_path):
    scene = shared(*SCRIPTS[script].split("/"))
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--steps", "2", "--out",
                           str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "prediction:" in done.stdout
    if script == "sar2optical_unpaired.py":  # judged beside the train mean its file carries
        assert "west half (optical never seen), train mean: MAE" in done.stdout
    with rasterio.open(out / "prediction.tif") as pred, rasterio.open(scene) as src:
        assert (pred.crs, pred.transform, pred.shape) == (src.crs, src.transform, src.shape)
