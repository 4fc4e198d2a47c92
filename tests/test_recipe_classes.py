"""`--recipe auto` on a class map: `classes` where the linear discriminant of a pixel's bands
tells the classes apart (read from the train chips: the class baselines' sums, then the
discriminant and the majority class scored on the same chips), `shapes` (the U-Net, classes
balanced) where it does not, as for roads, a shape of the same brightness as what surrounds it;
real tiny CPU runs on generated chips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings.recipes import AUTO_MIN_IOU_GAIN, RECIPE_HELP, RECIPES
from geopix2pix.settings.train import TrainConfig
from geopix2pix.training import TrainingStopped, train

TINY = dict(ndf=4, n_layers=2, batch_size=4, workers=0, quiet=True, device="cpu", samples=1,
            epochs=1, decay_epochs=0, categorical=True)


def _chips(folder: Path, source: np.ndarray, classes: np.ndarray) -> Path:
    """32-px chips of ``source`` and the class map ``classes`` (codes 1 and 2, nodata 0)."""
    export_chips(write_raster(folder / "source.tif", source.astype("float32")),
                 write_raster(folder / "classes.tif", classes.astype("uint8"), nodata=0),
                 folder / "chips", chip_size=32, stride=32, split_block=32, val_fraction=0.25,
                 seed=1, target_resampling="nearest", workers=1, progress=False,
                 shift_check=False)
    return folder / "chips"


@pytest.fixture(scope="module")
def spectral_chips(tmp_path_factory) -> Path:
    """Classes a pixel's own value tells: 2 where a smooth band is above 0.3."""
    y, x = np.mgrid[0:128, 0:128] / 9.0
    band = np.sin(x) * np.cos(0.7 * y)
    other = np.cos(1.3 * x) + 0.5 * np.sin(y + x)
    classes = np.where(band > 0.3, 2, 1)
    return _chips(tmp_path_factory.mktemp("spectral"), np.stack([band, other]), classes)


@pytest.fixture(scope="module")
def shape_chips(tmp_path_factory) -> Path:
    """'Roads': 2-px lines every 16 px whose pixels alternate -1 and 1 (a texture) in noise of
    mean 0, so no value tells a road pixel from a field one; only its neighbours do."""
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:128, 0:128]
    road = (y % 16 < 2) | (x % 16 < 2)
    band = np.where(road, 2.0 * ((x + y) % 2) - 1, rng.normal(size=road.shape))
    return _chips(tmp_path_factory.mktemp("shapes"), band[None], np.where(road, 2, 1))


def _saved(run: Path) -> dict:
    return json.loads((run / "train.json").read_text())


def _values(name: str, given: dict) -> dict:
    """Recipe ``name``'s values of the options ``given`` leaves to it (a length given: no
    floor, test_recipes)."""
    return {k: v for k, v in RECIPES[name].items() if v is not None and k not in given
            and k != "min_steps"}


def _gain(line: str) -> float:
    """The discriminant's mean IoU less the majority class's, as the log line says them (and
    the gain it prints, the same)."""
    scores = line.split("mean IoU of ")[1]
    discriminant = float(scores.split(" ")[0])
    majority = float(scores.split("majority class ")[1].split(" ")[0])
    gain = float(line.split("a gain of ")[1].split(",")[0])
    assert gain == pytest.approx(discriminant - majority, abs=0.0015)
    return gain


def test_auto_picks_classes_where_a_pixel_s_bands_tell_the_classes_and_says_why(
        spectral_chips, tmp_path):
    said: list[str] = []
    train(spectral_chips, tmp_path / "run", max_steps=1, log=said.append, **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert line.startswith("recipe auto -> classes (--generator local ")
    assert f", at least {AUTO_MIN_IOU_GAIN:g})" in line and _gain(line) > 0.3
    saved = _saved(tmp_path / "run")
    assert saved["recipe_used"] == "classes"
    assert {k: saved["options"][k] for k in _values("classes", TINY)} == \
        _values("classes", TINY)


def test_auto_picks_shapes_where_only_a_pixel_s_neighbours_tell_the_classes(shape_chips,
                                                                             tmp_path):
    said: list[str] = []
    train(shape_chips, tmp_path / "run", max_steps=1, ngf=8, log=said.append, **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert line.startswith("recipe auto -> shapes (--generator unet --augment d4 "
                           "--class-weights balanced")
    assert f", under {AUTO_MIN_IOU_GAIN:g})" in line and abs(_gain(line)) < 0.02
    saved = _saved(tmp_path / "run")
    given = {**TINY, "ngf": 8}
    assert saved["recipe_used"] == "shapes" and saved["options"]["ngf"] == 8
    assert {k: saved["options"][k] for k in _values("shapes", given)} == \
        _values("shapes", given)
    assert (saved["options"]["generator"], saved["options"]["class_weights"]) == \
        ("unet", "balanced")


def test_auto_fits_the_class_baselines_it_read_as_the_recipe_given_does(spectral_chips,
                                                                         tmp_path):
    """The sums auto read are kept for baselines.json: the same maps and scores as a run
    given the recipe, which reads the chips itself."""
    train(spectral_chips, tmp_path / "auto", max_steps=1, **TINY)
    train(spectral_chips, tmp_path / "given", max_steps=1, recipe="classes", **TINY)
    auto, given = (json.loads((tmp_path / name / "baselines.json").read_text())
                   for name in ("auto", "given"))
    assert auto["maps"] == given["maps"] and auto["pixels"] == given["pixels"]
    for name, scores in given["scores"].items():
        assert auto["scores"][name] == pytest.approx(scores)


def test_a_resumed_auto_class_run_keeps_its_pick_without_reading_the_chips_again(
        shape_chips, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(shape_chips, run, max_steps=4, ngf=8, callback=lambda info: info["step"] == 2,
              **TINY)
    before = _saved(run)["options"]
    said: list[str] = []
    result = train(shape_chips, run, resume=True, log=said.append, quiet=True, workers=0)
    assert result.steps == 4 and not any(m.startswith("recipe auto") for m in said)
    assert {**_saved(run)["options"], "resume": False} == before
    assert _saved(run)["recipe_used"] == "shapes"


def test_a_class_map_waits_for_the_chips_unless_the_local_generator_is_given():
    assert TrainConfig(categorical=True).undecided
    local = TrainConfig(categorical=True, generator="local")
    assert not local.undecided and (local.class_weights, local.residual) == ("none", "linear")
    layers = TrainConfig(categorical=True, local_layers=2)  # only the local generator has them
    assert not layers.undecided and (layers.generator, layers.local_layers) == ("local", 2)
    # values: every option a recipe fills given but the class weights, which weigh no value
    given = dict(generator="local", ngf=16, local_layers=2, lr=3e-4, gan_warmup=1.0, ema=0.0,
                 residual="linear", pixel_loss="mse", validity_band=False, augment="flip",
                 epochs=1, decay_epochs=0)
    assert not TrainConfig(**given).undecided and TrainConfig(**given).class_weights == "none"
    shapes = TrainConfig(recipe="shapes", categorical=True, class_weights="none")
    assert (shapes.generator, shapes.ngf, shapes.class_weights, shapes.augment) == \
        ("unet", 32, "none", "d4")  # what a run gives wins
    # values get no class weights from any recipe
    assert TrainConfig(recipe="local").class_weights == "none"
    assert TrainConfig(model="cyclegan").class_weights == "none"


def test_the_majority_class_s_score_from_the_counts_is_the_one_validation_gives(shape_chips):
    """auto takes the majority class's mean IoU from the class counts, without a pass: the
    same as scoring its map on the chips."""
    from geopix2pix.chips.dataset import ChipDataset
    from geopix2pix.chips.manifest import DatasetInfo
    from geopix2pix.models.baseline import BaselineMaps, baseline_generator
    from geopix2pix.training.baselines import (
        accumulate,
        majority_miou,
        shard_loader,
        solve_classes,
    )
    from geopix2pix.training.classes import trained_classes
    from geopix2pix.training.device import device_setup
    from geopix2pix.training.validate import evaluate_classes

    setup = device_setup("cpu", False)
    classes = trained_classes(DatasetInfo.load(shape_chips), shape_chips)
    dataset = ChipDataset(shape_chips, "train", classes=classes)
    sums = accumulate(shard_loader(dataset, 4, 0, 1, setup), 1, 2, 2)
    nearest, majority, fisher, _ = solve_classes(sums, 1, 2)
    scored = evaluate_classes(baseline_generator(BaselineMaps(nearest, majority, "none", fisher),
                                                 "constant", True, setup.device),
                              shard_loader(dataset, 4, 0, 1, setup), setup, 2)
    assert majority_miou(sums, 1, 2) == pytest.approx(scored["val_miou"], abs=1e-12)
    assert 0.3 < scored["val_miou"] < 0.5  # two classes, the larger one right alone


def test_two_ranks_pick_what_one_process_picks_for_a_class_map(shape_chips, tmp_path):
    """Each rank scores the discriminant on its shard of the chips and the scores are added:
    the same pick and baselines as one process, said once."""
    from test_distributed import torchrun

    train(shape_chips, tmp_path / "one", max_steps=1, ngf=8, **{**TINY, "batch_size": 2})
    done = torchrun(["-m", "geopix2pix", "train", str(shape_chips), "-o", str(tmp_path / "two"),
                     "--categorical", "--batch-size", "1", "--max-steps", "1", "--epochs", "1",
                     "--decay-epochs", "0", "--ngf", "8", "--ndf", "4", "--n-layers", "2",
                     "--workers", "0", "--device", "cpu", "-q"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("recipe auto -> shapes") == 1
    one, two = (_saved(tmp_path / name) for name in ("one", "two"))
    assert one["recipe_used"] == two["recipe_used"] == "shapes"
    ours, ref = (json.loads((tmp_path / name / "baselines.json").read_text())
                 for name in ("two", "one"))
    assert ours["pixels"] == ref["pixels"]
    np.testing.assert_allclose(ours["maps"]["discriminant"]["bias"],
                               ref["maps"]["discriminant"]["bias"], rtol=1e-9)


def test_the_help_names_the_recipe_and_the_rule():
    assert "shapes (a class map told by shape, such as roads: the U-Net, classes balanced: " \
        "--generator unet --ngf 32 --augment d4 --class-weights balanced, 5 + 5 epochs, at " \
        "least 600 steps)" in RECIPE_HELP
    assert f"by at least {AUTO_MIN_IOU_GAIN:g}, shapes where it does not" in RECIPE_HELP
    with pytest.raises(GeoPix2PixError, match="trains a class map"):
        TrainConfig(recipe="shapes")


def test_the_local_generator_s_layers_given_pick_classes_without_the_chips(spectral_chips,
                                                                         tmp_path, monkeypatch):
    """--local-layers names the local generator (no other has layers): auto takes classes at
    once, says why, and never reads the chips for a pick (it read them, picked shapes and then
    refused the layers for the U-Net); the U-Net given takes shapes at once."""
    from geopix2pix.training import recipe_choice

    def read_the_chips(*args, **kwargs):
        raise AssertionError("auto read the chips for a pick")

    monkeypatch.setattr(recipe_choice, "_read_classes", read_the_chips)
    said: list[str] = []
    train(spectral_chips, tmp_path / "run", max_steps=1, local_layers=2, log=said.append, **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert line.startswith("recipe auto -> classes (--generator local --lr 0.001 ") and \
        line.endswith("): --local-layers --categorical; pass --recipe to choose another")
    assert _saved(tmp_path / "run")["options"]["local_layers"] == 2
    # the U-Net given: its class-map recipe, shapes (not the paper's, unweighted), at once too
    said.clear()
    train(spectral_chips, tmp_path / "unet", max_steps=1, generator="unet", ngf=4,
          log=said.append, **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert line == ("recipe auto -> shapes (--augment d4 --class-weights balanced): --generator "
                    "unet --categorical; pass --recipe to choose another")  # (the rest given)
    assert _saved(tmp_path / "unet")["recipe_used"] == "shapes"
