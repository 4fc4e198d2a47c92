"""torchrun on the CPU (gloo, 2 processes): a class map trains and scores as in one process."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_raster
from test_distributed import OPTIONS, cli_args, rows, torchrun

from geopix2pix.chips.export import export_chips
from geopix2pix.models import load_model
from geopix2pix.training import train


def test_a_class_map_on_two_ranks_trains_and_scores_like_one_process(tmp_path):
    """--categorical under torchrun: the ranks' validation confusion matrices and cross-entropy
    sums are added (gloo), so the scores are one process's (the sums exactly, as the unit test
    of the reduction shows; the argmaxes up to float rounding), and so is the training
    (balanced class weights from the same exact counts)."""
    y, x = np.mgrid[0:128, 0:128]
    field = np.sin(x / 11.0) + np.cos(y / 13.0)
    source = write_raster(tmp_path / "image.tif", field.astype("float32"))
    target = write_raster(tmp_path / "classes.tif",
                          np.where(field < -0.4, 2, np.where(field < 0.8, 5, 9)).astype("uint8"))
    chips = tmp_path / "chips"
    export_chips(source, target, chips, chip_size=32, stride=16, split_block=64, workers=1,
                 progress=False, target_resampling="nearest")
    options = {**OPTIONS, "categorical": True, "class_weights": "balanced"}
    one = train(chips, tmp_path / "one", batch_size=4, **options)
    done = torchrun(["-m", "geopix2pix", "train", str(chips), "-o", str(tmp_path / "two"),
                     "--batch-size", "2", *cli_args(options)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    ours, ref = rows(tmp_path / "two"), rows(one.run_dir)
    assert [r["step"] for r in ours] == [r["step"] for r in ref]
    for key in ("loss_g_ce", "val_ce"):
        assert float(ours[-1][key]) == pytest.approx(float(ref[-1][key]), rel=1e-4), key
    for key in ("val_accuracy", "val_miou"):  # argmaxes near a tie may flip with the rounding
        assert float(ours[-1][key]) == pytest.approx(float(ref[-1][key]), abs=0.01), key
    assert load_model(tmp_path / "two" / "model.safetensors").metadata["target"]["classes"] \
        == [2, 5, 9]
