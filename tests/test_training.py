"""Training layer and `geopix2pix train`: real (tiny) CPU runs on chips exported from generated
GeoTIFFs, resume, model metadata, masked losses, and one-line CLI errors."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.cli import main
from geopix2pix.models import ModelMetadata, SideMetadata, load_model
from geopix2pix.training import TrainConfig, TrainingStopped, train
from geopix2pix.training.checkpoint import load_checkpoint
from geopix2pix.training.losses import GANLoss, discriminator_loss, generator_losses, masked_l1
from geopix2pix.training.schedule import LinearDecaySchedule

TINY = dict(recipe="paper", ngf=8, ndf=8, batch_size=4, workers=0, quiet=True, device="cpu")


def _pair(folder: Path) -> tuple[Path, Path]:
    """A smooth float32 'DEM' and a uint8 target that is a shading of it (its slope)."""
    y, x = np.mgrid[0:256, 0:256]
    dem = (100 + 30 * np.sin(x / 17.0) + 25 * np.cos(y / 23.0) + 10 * np.sin((x + y) / 9.0))
    gy, gx = np.gradient(dem)
    shade = np.clip(128 + 40 * (gx - gy), 0, 255).astype("uint8")
    dem = dem.astype("float32")
    dem[:6, :6] = -9999  # a little nodata
    source = write_raster(folder / "dem.tif", dem, nodata=-9999)
    target = write_raster(folder / "shade.tif", shade)
    return source, target


def make_chips(folder: Path) -> Path:
    """64-pixel chips of `_pair`: 33 train, 9 val."""
    source, target = _pair(folder)
    export_chips(source, target, folder / "chips", chip_size=64, stride=32, split_block=128,
                 workers=1, progress=False)
    return folder / "chips"


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return make_chips(tmp_path_factory.mktemp("train"))


@pytest.fixture(scope="module")
def short_run(chips, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    return train(chips, out, max_steps=120, epochs=1, decay_epochs=0, lr=5e-4, **TINY)


def _rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def test_short_run_lowers_validation_l1_and_writes_outputs(short_run):
    run = short_run.run_dir
    rows = _rows(run)
    first, best = float(rows[0]["val_l1"]), min(float(r["val_l1"]) for r in rows)
    assert best < 0.6 * first, (first, best)
    assert int(rows[-1]["step"]) == 120 and short_run.steps == 120
    for name in ("model.safetensors", "model-best.safetensors", "checkpoint.pt", "train.json"):
        assert (run / name).is_file()
    assert len(list((run / "samples").glob("epoch_*.png"))) == len(rows)
    for key in ("loss_g_gan", "loss_g_l1", "loss_d", "val_mae", "val_rmse", "val_psnr",
                "val_ssim", "images_per_second", "epoch_seconds"):
        assert math.isfinite(float(rows[-1][key])), key
    # PSNR is from the MSE on the [0, 1] target scale, not from the MAE
    assert float(rows[-1]["val_psnr"]) != pytest.approx(-10 * math.log10(
        float(rows[-1]["val_l1"]) / 2))
    assert json.loads((run / "train.json").read_text())["options"]["ngf"] == 8
    # the API's result has the same rows, as numbers
    last = short_run.metrics[-1]
    assert last["step"] == 120 and isinstance(last["epoch"], int)
    assert last["val_l1"] == pytest.approx(float(rows[-1]["val_l1"]))


def test_model_metadata_round_trips_through_load_model(short_run, chips):
    loaded = load_model(short_run.best_model_path)
    meta = loaded.metadata
    info = json.loads((chips / "dataset.json").read_text())
    assert loaded.spec.name == "unet" and loaded.spec.chip_size == 64 and loaded.spec.ngf == 8
    assert meta["source"]["nodata"] == -9999 and meta["source"]["dtype"] == "float32"
    assert meta["target"]["dtype"] == "uint8" and meta["target"]["bands"] == [1]
    # the band count of the rasters cut, so predict reads the same bands of a like scene
    assert meta["source"]["raster_bands"] == info["source"]["raster_bands"] == 1
    assert meta["source"]["scaling"]["mode"] == info["source"]["scaling_mode"]
    assert meta["crs"] == info["crs"] and meta["pixel_size"] == info["pixel_size"]
    assert meta["chip_size"] == 64 and meta["training"]["lambda_l1"] == 100.0
    assert meta["validation"]["val_l1"] == pytest.approx(short_run.best["val_l1"])
    assert "version" in meta
    # read as prediction reads it: each side is what the chips folder says of it
    described = ModelMetadata.of(loaded)
    dataset = DatasetInfo.load(chips)
    assert described.source == SideMetadata.of(dataset.source)
    assert described.target == SideMetadata.of(dataset.target)
    assert described.target.scaling == dataset.target.scaling
    state = torch.load(short_run.checkpoint_path, weights_only=True)
    latest = load_model(short_run.model_path).generator.state_dict()
    for key, value in state["generator"].items():
        assert torch.equal(value, latest[key]), key


def test_resume_after_interrupt_reproduces_uninterrupted_run(chips, tmp_path):
    options = dict(max_steps=14, epochs=1, decay_epochs=1, seed=3, **TINY)
    full = train(chips, tmp_path / "full", **options)

    def stop_at_5(info):
        return info["step"] == 5

    with pytest.raises(KeyboardInterrupt):
        train(chips, tmp_path / "cut", callback=stop_at_5, **options)
    assert load_checkpoint(tmp_path / "cut")["step"] == 5
    # the run's own options come back from its train.json: only runtime ones are given
    resumed = train(chips, tmp_path / "cut", resume=True, workers=0, quiet=True)
    assert resumed.steps == full.steps == 14
    cut_rows, full_rows = _rows(tmp_path / "cut"), _rows(tmp_path / "full")
    assert [(r["epoch"], r["step"], r["lr"]) for r in cut_rows] == \
        [(r["epoch"], r["step"], r["lr"]) for r in full_rows]
    a = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for key in a["generator"]:
        assert torch.allclose(a["generator"][key].float(), b["generator"][key].float(),
                              atol=1e-6), key
    assert a["opt_g"]["param_groups"][0]["lr"] == b["opt_g"]["param_groups"][0]["lr"]


def test_schedule_constant_then_linear_to_zero():
    sched = LinearDecaySchedule.build(1.0, steps_per_epoch=10, epochs=2, decay_epochs=2)
    assert sched.total_steps == 40 and sched.constant_steps == 20
    assert sched.lr_at(0) == sched.lr_at(19) == 1.0
    lrs = [sched.lr_at(s) for s in range(20, 40)]
    assert all(a > b for a, b in zip(lrs, lrs[1:])) and lrs[-1] < 0.1
    assert sched.lr_at(40) == 0.0
    short = LinearDecaySchedule.build(1.0, 10, 100, 100, max_steps=8)
    assert (short.total_steps, short.constant_steps) == (8, 4)
    # a floor stretches too few epochs' steps (3 of 10 constant), never more, nor --max-steps
    floored = LinearDecaySchedule.build(1.0, 2, 3, 7, min_steps=100)
    assert (floored.total_steps, floored.constant_steps) == (100, 30)
    assert LinearDecaySchedule.build(1.0, 20, 3, 7, min_steps=100).total_steps == 200
    assert LinearDecaySchedule.build(1.0, 2, 3, 7, max_steps=8, min_steps=100).total_steps == 8


def test_masked_losses_ignore_values_under_the_mask():
    torch.manual_seed(0)
    source, target = torch.randn(2, 3, 64, 64), torch.randn(2, 1, 64, 64)
    fake = torch.randn(2, 1, 64, 64)
    valid = torch.ones(2, 1, 64, 64, dtype=torch.bool)
    valid[:, :, :20, :] = False
    target2, fake2 = target.clone(), fake.clone()
    target2[~valid] = 50.0
    fake2[~valid] = -50.0
    assert masked_l1(fake, target, valid) == masked_l1(fake2, target2, valid)
    assert masked_l1(fake, target, valid) != masked_l1(fake, target2, valid.logical_not())
    from geopix2pix.models import build_discriminator

    disc = build_discriminator(4, ndf=8).eval()
    gan = GANLoss("lsgan")
    d1 = discriminator_loss(gan, disc, source, target, fake, valid)
    d2 = discriminator_loss(gan, disc, source, target2, fake, valid)
    assert torch.equal(d1, d2)  # invalid target pixels never reach D
    _, l1a = generator_losses(gan, disc, source, target, fake, valid)
    _, l1b = generator_losses(gan, disc, source, target2, fake, valid)
    assert torch.equal(l1a, l1b)


def _cli_error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error:") and "\n" not in err, err
    return err


def test_cli_errors_are_one_line(chips, tmp_path, capsys, monkeypatch):
    base = ["--ngf", "8", "--ndf", "8", "-q", "--workers", "0"]
    assert "no such chips folder" in _cli_error(
        capsys, ["train", str(tmp_path / "nope"), "-o", str(tmp_path / "r")] + base)
    (tmp_path / "half").mkdir()
    assert "dataset.json" in _cli_error(
        capsys, ["train", str(tmp_path / "half"), "-o", str(tmp_path / "r")] + base)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "--device cuda" in _cli_error(
        capsys, ["train", str(chips), "-o", str(tmp_path / "r"), "--device", "cuda"] + base)
    err = _cli_error(capsys, ["train", str(chips), "-o", str(tmp_path / "r"),
                              "--generator", "smp:NoSuchNet:resnet18"] + base)
    assert "Unet" in err and "NoSuchNet" in err
    err = _cli_error(capsys, ["train", str(chips), "-o", str(tmp_path / "r"),
                              "--generator", "smp:Unet:no_such_encoder"] + base)
    assert "resnet34" in err
    assert "checkpoint.pt" in _cli_error(
        capsys, ["train", str(chips), "-o", str(tmp_path / "r"), "--resume"] + base)


def test_cli_refuses_resume_with_other_options_and_non_empty_run_dir(chips, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(chips), "-o", str(run), "--recipe", "paper", "--ngf", "8", "--ndf", "8",
            "-q",
            "--workers", "0", "--max-steps", "2", "--device", "cpu", "--batch-size", "4"]
    assert main(args) == 0
    capsys.readouterr()
    assert "different options" in _cli_error(capsys, args + ["--resume", "--lr", "0.001"])
    assert "not empty" in _cli_error(capsys, args)
    capsys.readouterr()
    assert main([a for a in args if a != "-q"] + ["--resume"]) == 0  # already complete
    assert f"{run} is complete (2 steps): nothing left to train" in capsys.readouterr().err
    # the options need not be typed again, and runtime ones may change
    assert main(["train", str(chips), "-o", str(run), "--resume", "-q", "--workers", "1"]) == 0
    capsys.readouterr()
    err = _cli_error(capsys, ["train", str(chips), "-o", str(run), "--resume", "--ngf", "16"])
    assert "different options (ngf: 8 -> 16)" in err
    other = tmp_path / "other"  # chips exported again: a tester saw two digests, not why
    shutil.copytree(chips, other)
    info = json.loads((other / "dataset.json").read_text())
    (other / "dataset.json").write_text(json.dumps(info, indent=1))  # other bytes
    err = _cli_error(capsys, ["train", str(other), "-o", str(run), "--resume"])
    assert "different options (the chips (not those the run began with: another folder, or " \
           "re-exported since; dataset.json differs))" in err


def test_cli_refuses_chip_size_the_generator_cannot_take(chips, tmp_path, capsys):
    import shutil

    bad = tmp_path / "chips"
    shutil.copytree(chips, bad)
    info = json.loads((bad / "dataset.json").read_text())
    info["chip_size"] = 48  # not a power of two: no U-Net depth brings it to 1x1
    (bad / "dataset.json").write_text(json.dumps(info))
    err = _cli_error(capsys, ["train", str(bad), "-o", str(tmp_path / "r"), "-q", "--recipe",
                              "paper"])
    assert "48" in err


def test_config_defaults_and_unknown_option():
    config = TrainConfig()
    assert (config.lambda_l1, config.norm, config.augment, config.recipe) == (100.0, "batch",
                                                                              None, "auto")
    assert TrainConfig(recipe="residual").augment == "flip"  # the recipe's, as lr below
    assert config.lr is None  # auto's recipe gives it, once picked from the chips
    assert TrainConfig(recipe="paper").lr == 2e-4
    from geopix2pix.errors import GeoPix2PixError

    with pytest.raises(GeoPix2PixError, match="unknown training option"):
        TrainConfig.from_options(learning_rate=1.0)


def test_without_val_chips_best_model_is_picked_by_train_l1(tmp_path):
    source, target = _pair(tmp_path)
    export_chips(source, target, tmp_path / "chips", chip_size=64, val_fraction=0.0,
                 workers=1, progress=False)
    messages: list[str] = []
    result = train(tmp_path / "chips", tmp_path / "run", max_steps=4, log=messages.append,
                   **TINY)
    assert any("no val chips" in m for m in messages)
    rows = _rows(tmp_path / "run")
    assert rows[-1]["val_mae"] == "" and float(rows[-1]["loss_g_l1"]) > 0
    assert result.best_model_path.is_file() and "loss_g_l1" in result.best


def test_resume_options_come_from_train_json_with_the_batch_split_over_the_ranks(
        tmp_path, monkeypatch):
    from geopix2pix.settings.recipes import BEFORE_RECIPES
    from geopix2pix.training.resume import saved_options

    (tmp_path / "train.json").write_text(json.dumps({
        "options": {"ngf": 8, "batch_size": 4, "workers": 3, "device": "cuda", "lr": 0.001},
        "effective_batch_size": 8, "world_size": 2}))
    monkeypatch.setenv("WORLD_SIZE", "4")  # resumed on 4 ranks
    monkeypatch.setattr("geopix2pix.training.resume.available_cpus", lambda: 8)
    (tmp_path / "train.json").write_text(json.dumps({  # and a key this version does not know
        "options": {"ngf": 8, "batch_size": 4, "workers": 3, "device": "cuda", "lr": 0.001,
                    "dropped_option": 1, "resume": False, "quiet": False},
        "effective_batch_size": 8, "world_size": 2}))
    # (a train.json without "recipe" is from before it: the paper's values were its defaults)
    assert saved_options(tmp_path, {"resume": True, "lr": 0.002, "device": "cpu"}) == {
        **BEFORE_RECIPES, "recipe": "auto", "ngf": 8, "batch_size": 2, "workers": 3, "lr": 0.002,
        "device": "cpu", "resume": True}
    monkeypatch.setenv("WORLD_SIZE", "3")  # 8 chips cannot be split: the check says so later
    assert saved_options(tmp_path, {"resume": True})["batch_size"] == 4
    monkeypatch.setattr("geopix2pix.training.resume.available_cpus", lambda: 1)  # a laptop's:
    assert saved_options(tmp_path, {"resume": True})["workers"] == 2  # at most max(2, CPUs)
    assert saved_options(tmp_path / "nothing", {"resume": True}) == {"resume": True}


@pytest.mark.parametrize("damage", ["missing", "damaged", "no options", "a list"])
def test_a_resume_without_a_usable_train_json_takes_the_checkpoints_options(chips, tmp_path,
                                                                            capsys, damage):
    """A tester's run folder lost train.json: --resume asked for '--batch-size 16', which the
    tester never typed, and then for the next option. The checkpoint records the options."""
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):  # stopped after step 2 of 4
        train(chips, run, callback=lambda info: info["step"] == 2, max_steps=4, ngf=8, ndf=8,
              batch_size=2, workers=0, quiet=True, device="cpu", lr=0.001)
    if damage == "missing":
        (run / "train.json").unlink()
    elif damage == "damaged":
        (run / "train.json").write_text("garbage")
    else:  # JSON, but its options no mapping (an AttributeError traceback before)
        (run / "train.json").write_text(json.dumps({
            "options": None if damage == "no options" else [1, 2], "effective_batch_size": 2}))
    assert main(["train", str(chips), "-o", str(run), "--resume", "-q"]) == 0
    saved = json.loads((run / "train.json").read_text())  # written again, whole
    assert saved["options"]["lr"] == 0.001 and saved["options"]["batch_size"] == 2
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert rows[-1]["step"] == "4"


def test_an_fp32_checkpoint_resumes_where_amp_takes_fp16_and_a_grad_scaler(chips, tmp_path):
    """A CPU (or --no-amp) run saves its disabled grad scaler as {}; resumed on a GPU without
    bf16 (fp16 + grad scaler: a V100, a T4), that state was loaded into the enabled scaler,
    torch's 'source state dict is empty' traceback. It starts its own scale instead. (The
    fp16 set-up is given on the CPU here: no GPU.)"""
    from geopix2pix.training.device import DeviceSetup
    from geopix2pix.training.resume import saved_options
    from geopix2pix.training.trainer import Trainer

    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(chips, run, callback=lambda info: info["step"] == 2, max_steps=4, **TINY)
    assert load_checkpoint(run)["scaler"] == {}
    config = TrainConfig.from_options(**saved_options(run, {"resume": True, "workers": 0}))
    fp16 = DeviceSetup(torch.device("cpu"), torch.float16, False)
    trainer = Trainer(chips, run, config, log=lambda line: None, setup=fp16)
    try:
        scaler = trainer.family.scaler()
        assert scaler.is_enabled() and scaler.get_scale() == 2.0 ** 16
        assert trainer.state["step"] == 2
    finally:
        trainer.release()


def test_the_callback_gets_each_steps_losses_as_metrics_csv_names_them(chips, tmp_path):
    """The API promised {"epoch", "step", "lr", ...losses}; a tester got the first three alone."""
    seen = []
    train(chips, tmp_path / "run", callback=lambda info: seen.append(info) and False,
          max_steps=3, ngf=8, ndf=8, batch_size=2, workers=0, quiet=True, device="cpu",
          recipe="paper")
    columns = next(csv.reader((tmp_path / "run" / "metrics.csv").read_text().splitlines()))
    losses = [name for name in seen[0] if name not in ("epoch", "step", "lr")]
    assert losses and set(losses) <= set(columns)
    assert [info["step"] for info in seen] == [1, 2, 3]
    assert all(isinstance(info[n], float) and math.isfinite(info[n]) for info in seen
               for n in losses)
    assert len({info[losses[0]] for info in seen}) > 1  # each step's own, not one value


@pytest.mark.parametrize("seed", ["-1", "4294967296"])
def test_a_seed_numpy_cannot_take_is_one_line(chips, tmp_path, capsys, seed):
    """numpy's seed takes 0 to 2**32 - 1: outside, its ValueError was a traceback (exit 1)."""
    code = main(["train", str(chips), "-o", str(tmp_path / "run"), "--seed", seed,
                 "--device", "cpu", "--workers", "0", "-q"])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"Error: --seed {seed}: use 0 to 4294967295"
    assert not (tmp_path / "run").exists()


def test_seeds_past_numpys_range_are_taken():
    """A run resumed on another number of ranks seeds each rank with seed + rank + 1,000,003
    x step: past step 4,294 at --seed 0, and at once at --seed 4294967295 under torchrun,
    numpy's seed refused it in a traceback. Below 2**32 numpy's draws are as before."""
    from geopix2pix.training.loop import seed_everything

    seed_everything(1 + 1_000_003 * 4295)
    seed_everything(4294967295 + 2)
    draws = np.random.random(3)
    seed_everything(1)
    assert np.array_equal(draws, np.random.random(3))  # (2**32 + 1 is 1 to numpy)
    np.random.seed(7)
    before = np.random.random(3)
    seed_everything(7)
    assert np.array_equal(before, np.random.random(3))


def test_ctrl_c_during_a_validation_stops_there_and_the_resume_validates(chips, tmp_path,
                                                                          monkeypatch):
    """A reviewer's Ctrl-C during a validation of 1,758 chips waited minutes for it to end.
    One process now leaves the validation at the next batch, saves the checkpoint of the
    epoch's end, and the resumed run validates that epoch end first: the same rows as an
    uninterrupted run."""
    import os
    import signal

    from geopix2pix.chips.dataset import ChipDataset

    options = dict(max_steps=14, epochs=1, decay_epochs=1, seed=3, **TINY)
    full = train(chips, tmp_path / "full", **options)
    armed, reads = [], []
    original = ChipDataset.__getitem__

    def read(self, index):
        if self.split == "val" and armed:
            reads.append(index)
            if len(reads) == 1:  # Ctrl-C while the first val batch is read
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, index)

    monkeypatch.setattr(ChipDataset, "__getitem__", read)
    with pytest.raises(TrainingStopped) as stopped:
        train(chips, tmp_path / "cut", callback=lambda info: armed.append(1) and None,
              **options)
    monkeypatch.setattr(ChipDataset, "__getitem__", original)
    first_end = int(_rows(tmp_path / "full")[0]["step"])
    assert stopped.value.checkpoint == tmp_path / "cut" / "checkpoint.pt"
    assert load_checkpoint(tmp_path / "cut")["step"] == first_end
    assert len(reads) == 4  # one val batch of 4 chips read, not the 9 chips of all 3
    assert not (tmp_path / "cut" / "metrics.csv").exists() or not _rows(tmp_path / "cut")
    resumed = train(chips, tmp_path / "cut", resume=True, workers=0, quiet=True)
    assert resumed.steps == full.steps
    cut_rows, full_rows = _rows(tmp_path / "cut"), _rows(tmp_path / "full")
    assert [(r["epoch"], r["step"], r["lr"]) for r in cut_rows] == \
        [(r["epoch"], r["step"], r["lr"]) for r in full_rows]
    assert float(cut_rows[0]["val_l1"]) == pytest.approx(float(full_rows[0]["val_l1"]),
                                                         rel=1e-5)


def test_a_stop_before_a_validation_or_in_an_overwrite_run_s_first_still_validates(
        chips, tmp_path, monkeypatch):
    """The re-read of the change above: a stop at the epoch's last step set the flag before
    the validation began, which then left at once, so the epoch was neither validated nor
    written, and an --overwrite run lost it to the earlier run. Such stops validate as ever:
    a stop asked before the validation, and a Ctrl-C in an --overwrite run's first one (which
    replaces the earlier run)."""
    import os
    import signal

    from geopix2pix.chips.dataset import ChipDataset

    options = dict(max_steps=14, epochs=1, decay_epochs=1, seed=3, **TINY)
    first_end = int(_rows(train(chips, tmp_path / "full", **options).run_dir)[0]["step"])
    with pytest.raises(TrainingStopped):
        train(chips, tmp_path / "cut", callback=lambda info: info["step"] == first_end,
              **options)
    assert [int(r["step"]) for r in _rows(tmp_path / "cut")] == [first_end]
    assert (tmp_path / "cut" / "model.safetensors").exists()
    # an --overwrite run over the finished one, Ctrl-C'd while its first validation reads
    armed, original = [], ChipDataset.__getitem__

    def read(self, index):
        if self.split == "val" and armed and len(armed) == 1:
            armed.append(index)
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, index)

    monkeypatch.setattr(ChipDataset, "__getitem__", read)
    with pytest.raises(TrainingStopped) as stopped:
        train(chips, tmp_path / "full", overwrite=True, **options,
              callback=lambda info: None if armed else armed.append(1))
    assert stopped.value.checkpoint == tmp_path / "full" / "checkpoint.pt"
    assert [int(r["step"]) for r in _rows(tmp_path / "full")] == [first_end]  # the new run's
