"""Training-recipe options: --val-every (validation and file cadence by steps), --gan-warmup
(G on its pixel loss alone first, D idle) and --ema (model files hold the weight average), each
with a real tiny CPU run on generated chips, and their exact resumption."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import write_raster
from safetensors.torch import load_file

from geopix2pix.chips.dataset import chip_ids
from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.training import TrainingStopped, train
from geopix2pix.training.checkpoint import load_checkpoint

# 32-px chips, 2 per step, 3 steps per epoch (6 train chips)
TINY = dict(recipe="paper",
            ngf=4, ndf=4, n_layers=2, batch_size=2, workers=0, quiet=True, device="cpu",
            samples=1, epochs=1, decay_epochs=0, lr=1e-3)


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("recipes")
    y, x = np.mgrid[0:64, 0:128]
    dem = (50 + 20 * np.sin(x / 7.0) + 15 * np.cos(y / 5.0)).astype("float32")
    shade = np.clip(128 + 30 * np.gradient(dem, axis=1), 0, 255).astype("uint8")
    export_chips(write_raster(folder / "dem.tif", dem), write_raster(folder / "shade.tif", shade),
                 folder / "chips", chip_size=32, stride=32, split_block=32, val_fraction=0.25,
                 seed=1, workers=1, progress=False)
    assert len(chip_ids(folder / "chips", "train")) == 6
    return folder / "chips"


def rows_of(run: Path) -> list[dict]:
    with (run / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_val_every_writes_files_at_its_cadence_and_at_the_end(chips, tmp_path):
    """Epochs end at steps 3, 6, 9 and 10; every 4 steps: validation at the first epoch ends
    past 4 and 8 (6 and 9) and at the end (10), not at 3."""
    run = tmp_path / "run"
    seen: dict[int, bool] = {}
    result = train(chips, run, max_steps=10, val_every=4,
                   callback=lambda info: seen.update({info["step"]: (run / "model.safetensors")
                                                      .exists()}), **TINY)
    assert [int(r["step"]) for r in rows_of(run)] == [6, 9, 10]
    assert [int(r["epoch"]) for r in rows_of(run)] == [2, 3, 4]
    assert [s for s, exists in sorted(seen.items()) if exists] == [7, 8, 9, 10]
    assert len(list((run / "samples").glob("epoch_*.png"))) == 3
    assert load_checkpoint(run)["step"] == 10 and result.steps == 10


def test_val_every_default_is_a_tenth_of_the_run(chips, tmp_path):
    """30 steps in epochs of 3: every 3 steps, so every epoch end validates."""
    train(chips, tmp_path / "run", max_steps=30, **TINY)
    assert [int(r["step"]) for r in rows_of(tmp_path / "run")] == list(range(3, 31, 3))


def test_gan_warmup_trains_g_alone_then_adds_the_adversarial_term(chips, tmp_path):
    """Warm-up over half of 12 steps: the rows of steps 1..6 have no adversarial loss (D idle),
    those after it do; with --gan-warmup 1 D never takes a step."""
    run = tmp_path / "run"
    train(chips, run, max_steps=12, val_every=3, gan_warmup=0.5, **TINY)
    rows = rows_of(run)
    assert [int(r["step"]) for r in rows] == [3, 6, 9, 12]
    assert all(float(r["loss_g_gan"]) == 0 == float(r["loss_d"]) for r in rows[:2])
    assert all(float(r["loss_g_gan"]) > 0 and float(r["loss_d"]) > 0 for r in rows[2:])
    assert all(float(r["loss_g_l1"]) > 0 for r in rows)

    never = tmp_path / "never"
    train(chips, never, max_steps=6, gan_warmup=1.0, **TINY)
    saved = load_checkpoint(never)
    assert saved["opt_d"]["state"] == {} and len(saved["opt_g"]["state"]) > 0
    assert all(float(r["loss_d"]) == 0 for r in rows_of(never))


def test_ema_model_files_hold_the_average_not_the_trained_weights(chips, tmp_path):
    run = tmp_path / "run"
    train(chips, run, max_steps=6, ema=0.9, **TINY)
    saved = load_checkpoint(run)
    model = load_file(run / "model.safetensors")
    assert saved["ema_updates"] == 6
    assert set(model) == set(saved["generator_ema"])
    weights = [k for k in model if k.endswith("weight")]
    for key in model:
        assert torch.equal(model[key], saved["generator_ema"][key]), key
    differ = [k for k in weights if not torch.equal(model[k], saved["generator"][k])]
    assert len(differ) == len(weights)
    # buffers (batch norm statistics) are the trained model's own
    stats = [k for k in model if k.endswith("running_mean")]
    assert stats and all(torch.equal(model[k], saved["generator"][k]) for k in stats)


@pytest.mark.parametrize("stop_at", [3, 5])  # at an epoch end that does not validate; mid-epoch
def test_resume_continues_ema_and_cadence_exactly(chips, tmp_path, stop_at):
    options = dict(max_steps=10, val_every=4, ema=0.9, gan_warmup=0.3, **TINY)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    train(chips, whole, **options)
    with pytest.raises(TrainingStopped):
        train(chips, parts, callback=lambda info: info["step"] == stop_at, **options)
    assert load_checkpoint(parts)["step"] == stop_at
    train(chips, parts, resume=True, workers=0, quiet=True)
    a, b = load_checkpoint(whole), load_checkpoint(parts)
    assert a["ema_updates"] == b["ema_updates"] == 10
    for key in ("generator", "generator_ema", "discriminator"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key]), key
    assert [r["step"] for r in rows_of(whole)] == [r["step"] for r in rows_of(parts)]
    ma, mb = load_file(whole / "model.safetensors"), load_file(parts / "model.safetensors")
    assert all(torch.equal(ma[k], mb[k]) for k in ma)


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--gan-warmup", "1.5", "--gan-warmup 1.5: use a share of the steps"),
    ("--ema", "1", "--ema 1.0: use a decay from 0 (off) to below 1"),
    ("--val-every", "0", "--val-every 0: use at least 1 step"),
])
def test_recipe_options_out_of_range_are_one_line_errors(chips, tmp_path, capsys, option, value,
                                                         message):
    code = main(["train", str(chips), "-o", str(tmp_path / "run"), option, value])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_recipe_options_are_checked_in_the_api_too(chips, tmp_path):
    with pytest.raises(GeoPix2PixError, match="--ema"):
        train(chips, tmp_path / "run", ema=-0.1, **TINY)


def test_centre_scaling_keeps_steeper_relief_than_the_training_chips():
    """A DEM window whose relief exceeds the train spread keeps its shape (a clip at 1 would
    flatten its ridge, and the hillshade there); only outliers are clipped, at CENTRE_CLIP."""
    from geopix2pix.chips.scaling import CENTRE_CLIP, Scaling

    scaling = Scaling.from_stats([{"abs_dev_p99": 100.0}], "centre")
    assert scaling == Scaling("centre", (-100.0,), (100.0,), CENTRE_CLIP)
    ridge = np.array([[[0.0, 150.0, 300.0, 150.0, 0.0]]])  # mean 120: -1.2 .. 1.8
    scaled = scaling.forward(ridge, np.ones((1, 5), bool))[0, 0]
    assert scaled == pytest.approx([-1.2, 0.3, 1.8, 0.3, -1.2], abs=1e-6)
    spike = np.array([[[0.0] * 9 + [20_000.0]]])
    assert scaling.forward(spike, np.ones((1, 10), bool))[0, 0, 9] == CENTRE_CLIP
    # the clip travels with the scaling (model files); one stored without it is from before
    # the clip was raised, and its model was trained on inputs clipped at 1
    assert Scaling.from_dict(scaling.to_dict()) == scaling
    old = Scaling.from_dict({"mode": "centre", "low": [-100.0], "high": [100.0]})
    assert old.clip == 1.0
    assert old.forward(ridge, np.ones((1, 5), bool))[0, 0] == pytest.approx(
        [-1.0, 0.3, 1.0, 0.3, -1.0], abs=1e-6)


def test_masked_mse_is_the_mean_squared_error_over_valid_pixels():
    from geopix2pix.training.losses import masked_l1, masked_mse

    rng = np.random.default_rng(0)
    pred, target = (torch.from_numpy(rng.normal(size=(2, 3, 5, 5)).astype("float32"))
                    for _ in range(2))
    valid = torch.from_numpy(rng.random((2, 1, 5, 5)) > 0.3)
    where = valid.expand_as(pred)
    torch.testing.assert_close(masked_mse(pred, target, valid),
                               ((pred - target)[where] ** 2).mean())
    torch.testing.assert_close(masked_l1(pred, target, valid), (pred - target)[where].abs().mean())


@pytest.fixture(scope="module")
def skewed_chips(tmp_path_factory) -> Path:
    """A source that says nothing (flat) and a skewed target: 1 pixel in 5 at 250, the rest at
    50 (mean 90, median 50)."""
    folder = tmp_path_factory.mktemp("skewed")
    flat = np.full((64, 128), 10.0, dtype="float32")
    target = np.where(np.arange(64 * 128).reshape(64, 128) % 5 == 0, 250, 50).astype("uint8")
    export_chips(write_raster(folder / "flat.tif", flat), write_raster(folder / "skew.tif", target),
                 folder / "chips", chip_size=32, stride=32, split_block=32, val_fraction=0.25,
                 seed=1, workers=1, progress=False, target_scaling="minmax")
    return folder / "chips"


@pytest.mark.parametrize(("loss", "expected"), [("l1", 50.0), ("mse", 90.0)])
def test_pixel_loss_mse_learns_the_mean_and_l1_the_median(skewed_chips, tmp_path, loss, expected):
    """With nothing to learn from the source, G's answer is the best constant of its loss: the
    median under L1 (the paper's), the mean under --pixel-loss mse; metrics.csv logs the pixel
    term in that loss's column."""
    from geopix2pix import predict

    run = tmp_path / "run"
    train(skewed_chips, run, **{**TINY, "lr": 2e-2}, max_steps=150, generator="local",
          gan_warmup=1.0, pixel_loss=loss)
    row = rows_of(run)[-1]
    other = "loss_g_mse" if loss == "l1" else "loss_g_l1"
    assert float(row[f"loss_g_{loss}"]) > 0 and row[other] == ""
    predict(skewed_chips.parent / "flat.tif", tmp_path / "out.tif",
            model=run / "model.safetensors", progress=False, device="cpu")
    with rasterio.open(tmp_path / "out.tif") as src:
        answer = float(np.median(src.read(1)))
    assert abs(answer - expected) < 6, answer


def test_pixel_loss_mse_is_refused_for_a_class_map(chips, tmp_path):
    with pytest.raises(GeoPix2PixError, match="^--pixel-loss mse is a loss on values"):
        train(chips, tmp_path / "run", pixel_loss="mse", categorical=True, **TINY)
