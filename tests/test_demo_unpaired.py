"""`geopix2pix demo --task sar2optical --unpaired`: CycleGAN on the SAR of one training scene and
the optical image of another (no pixel paired), its held-out prediction on the exact grid, scored
beside the training-mean baseline; `--unpaired` with another task is one line, exit 2.

At these test sizes (a few steps) the run shows the wiring, not the quality: whether the unpaired
model beats the baseline at the demo's own sizes is not asserted here."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import rasterio

from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.cli import main
from geopix2pix.demo.pipeline import DemoSettings, run_demo
from geopix2pix.models import ModelMetadata, load_model


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "unpaired"
    settings = replace(DemoSettings.small(), ngf=8, ndf=8, batch_size=4, max_steps=6)
    return run_demo(out, "sar2optical", seed=0, progress=False, unpaired=True, settings=settings)


@pytest.mark.slow
def test_cyclegan_learns_from_scenes_that_share_no_pixel(demo):
    info = DatasetInfo.load(demo.chips_dir)
    assert not info.paired
    # the SAR of the first training scene and the optical image of the second, nothing else
    assert [(r["domain"], r["path"]) for r in info.rasters] == [
        ("source", str(demo.scenes.train[0][0])), ("target", str(demo.scenes.train[1][1]))]
    assert ModelMetadata.of(load_model(demo.model)).family == "cyclegan"
    assert (demo.run_dir / "model-ba.safetensors").is_file()
    assert demo.metrics["mae"] > 0 and demo.baseline_metrics["mae"] > 0
    assert demo.linear is None and demo.beats_linear is None  # no pairs: no linear baseline
    with rasterio.open(demo.scenes.heldout_target) as truth, \
            rasterio.open(demo.prediction) as pred:
        assert (pred.crs, pred.transform, pred.shape, pred.dtypes, pred.nodata) == (
            truth.crs, truth.transform, truth.shape, truth.dtypes, truth.nodata)
    # the baseline is scored on the prediction's pixels: where the held-out SAR is NaN, the
    # uint8 optical outputs (no nodata value) are masked (a tester saw 35279 against 36864)
    with rasterio.open(demo.prediction) as pred, rasterio.open(demo.baseline) as base:
        assert pred.nodata is None and (pred.dataset_mask() == 0).any()
        assert (base.dataset_mask() == pred.dataset_mask()).all()
    scored = [json.loads((demo.out_dir / name).read_text())["valid_pixels"]
              for name in ("evaluation.json", "evaluation_baseline.json")]
    assert scored[0] == scored[1]
    summary = json.loads((demo.out_dir / "demo.json").read_text())
    assert summary["unpaired"] is True and demo.unpaired
    limit = [line for line in demo.lines() if "do not say which class is which" in line]
    assert len(limit) == (0 if demo.beats_baseline else 1)  # said where it loses
    assert summary["beats_baseline"] == demo.beats_baseline
    assert summary["settings"]["n_train"] == 2  # one scene gives the SAR, another the optical


def test_unpaired_with_another_task_is_one_line(tmp_path, capsys):
    code = main(["demo", "--task", "dsm2image", "--unpaired", "-o", str(tmp_path / "d"),
                 "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "--unpaired" in err and "sar2optical" in err
    assert not (tmp_path / "d").exists()
