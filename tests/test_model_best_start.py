"""A residual generator's start (exactly its baseline) is validated as epoch 0 and is a
candidate for model-best: model-best is never worse on the val chips than the baseline the run
began from, also across a resume; runs without a residual have no epoch 0."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import rasterio
from test_baselines import TINY, _linear_pair

from geopix2pix.chips.export import export_chips
from geopix2pix.errors import GeoPix2PixWarning
from geopix2pix.models import ModelMetadata, load_model
from geopix2pix.prediction import predict
from geopix2pix.training import TrainingStopped, train

# a learning rate that wrecks the generator in its first steps: no trained epoch beats the start
WRECKING = dict(residual="linear", lr=0.5, beta1=0.5, val_every=1, epochs=3, decay_epochs=0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("start")
    source, target = _linear_pair(folder)  # the target is exactly linear in the source
    export_chips(source, target, folder / "chips", chip_size=32, stride=32, split_block=64,
                 source_scaling="minmax", workers=1, progress=False)
    return folder / "chips", source


def _train(chips, out, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(chips, out, **{**TINY, **options})
    return result, [str(w.message) for w in caught if w.category is GeoPix2PixWarning]


def test_the_start_is_epoch_0_and_stays_model_best_when_training_makes_it_worse(pair,
                                                                                  tmp_path):
    chips, source = pair
    result, messages = _train(chips, tmp_path / "run", **{**WRECKING, "samples": 2})
    start, *trained = result.metrics
    assert (start["epoch"], start["step"]) == (0, 0) and start["loss_g_l1"] is None
    assert start["val_mae"] == pytest.approx(result.baselines["linear"]["val_mae"], rel=1e-4,
                                             abs=1e-4)
    assert trained and all(row["val_mae"] > start["val_mae"] for row in trained)
    assert result.best["epoch"] == 0
    assert result.best["val_mae"] == pytest.approx(start["val_mae"], rel=1e-5)
    best = ModelMetadata.of(load_model(result.best_model_path)).training
    latest = ModelMetadata.of(load_model(result.model_path)).training
    assert (best["epoch"], best["step"]) == (0, 0) and latest["step"] == result.steps > 0
    assert (tmp_path / "run" / "samples" / "epoch_000.png").is_file()
    # model-best predicts the linear baseline itself, on the scene's grid
    predict(source, tmp_path / "best.tif", model=result.best_model_path, progress=False)
    predict(source, tmp_path / "linear.tif", model=result.best_model_path, baseline="linear",
            progress=False)
    with rasterio.open(tmp_path / "best.tif") as a, rasterio.open(tmp_path / "linear.tif") as b, \
            rasterio.open(source) as scene:
        for out in (a, b):
            assert (out.crs, out.transform, out.shape) == (scene.crs, scene.transform,
                                                           scene.shape)
        assert a.nodata == b.nodata is not None and a.dtypes == b.dtypes
        np.testing.assert_allclose(a.read(1), b.read(1), atol=1e-3)
    assert any("so model-best is that start" in m for m in messages), messages


def test_a_resumed_run_validates_its_start_once(pair, tmp_path):
    chips, _ = pair
    out = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        _train(chips, out, callback=lambda info: info["step"] >= 1, **WRECKING)
    result, _ = _train(chips, out, resume=True)
    uninterrupted, _ = _train(chips, tmp_path / "whole", **WRECKING)
    assert [(r["epoch"], r["step"]) for r in result.metrics] == \
        [(r["epoch"], r["step"]) for r in uninterrupted.metrics]
    assert [r["epoch"] for r in result.metrics].count(0) == 1
    assert result.best["epoch"] == 0


def test_without_a_residual_there_is_no_epoch_0(pair, tmp_path):
    chips, _ = pair
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GeoPix2PixWarning)
        result = train(chips, tmp_path / "run", max_steps=1, epochs=1, decay_epochs=0, **TINY)
    assert [row["epoch"] for row in result.metrics] == [1]


def test_the_stuck_class_warning_counts_trained_epochs_only():
    """A class map's mean IoU unchanged for 3 epochs warns that the model may answer one class
    everywhere; the untrained start (epoch 0) is not one of those epochs."""
    from types import SimpleNamespace

    from geopix2pix.training.families.pix2pix import STUCK_EPOCHS, Pix2Pix

    def warnings_after(rows, residual="none"):
        said: list[str] = []
        family = SimpleNamespace(classes=(1, 2), warned_stuck=False,
                                 objective=SimpleNamespace(weights=None), log=said.append,
                                 config=SimpleNamespace(residual=residual))
        Pix2Pix.after_validation(family, rows)
        return said

    rows = [{"epoch": str(e), "val_miou": "0.45"} for e in range(STUCK_EPOCHS)]
    assert warnings_after(rows) == []  # the start and two trained epochs
    rows.append({"epoch": str(STUCK_EPOCHS), "val_miou": "0.45"})
    assert len(warnings_after(rows)) == 1
    # a residual over the discriminant may rightly stay at its start: no "one class" warning
    assert warnings_after(rows, residual="linear") == []


def test_a_new_run_keeps_no_row_of_an_earlier_runs_metrics(tmp_path):
    """Under torchrun with --overwrite, ranks >= 1 see the earlier run's metrics.csv in the
    folder (rank 0 writes the new run beside it): a new run reads no row of it, so their
    result.metrics hold the new run's rows alone; a resume keeps the rows before its epoch."""
    from types import SimpleNamespace

    from geopix2pix.training.run_folder import RunFolder

    (tmp_path / "metrics.csv").write_text("epoch,step\n0,0\n1,8\n2,16\n")
    for resume, kept in ((False, []), (True, [{"epoch": "0", "step": "0"},
                                              {"epoch": "1", "step": "8"}])):
        run = SimpleNamespace(run_dir=tmp_path, config=SimpleNamespace(resume=resume))
        history = RunFolder(run).open_history(1, ("epoch", "step"))
        assert history.rows == kept
        history.close()
