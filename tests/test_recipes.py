"""`--recipe`: the options a recipe fills (only those a run does not give), `auto`'s pick from the
chips (the linear map's share of the target's variance, read once with the baselines' sums),
what a run records of it and how it resumes; real tiny CPU runs on generated chips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings.recipes import AUTO_MIN_EXPLAINED, RECIPES, flags
from geopix2pix.settings.train import TrainConfig
from geopix2pix.training import TrainingStopped, train

TINY = dict(ndf=4, n_layers=2, batch_size=2, workers=0, quiet=True, device="cpu", samples=1,
            epochs=1, decay_epochs=0)


def _chips(folder: Path, target_of) -> Path:
    """Chips of a smooth 2-band source and a target computed from it (32-px chips)."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:64, 0:128] / 9.0
    a = np.sin(x + rng.random()) * np.cos(0.7 * y)
    b = np.cos(1.3 * x) + 0.5 * np.sin(y + x)
    source = np.stack([a, b]).astype("float32")
    target = target_of(a, b, rng).astype("float32")[None]
    export_chips(write_raster(folder / "source.tif", source),
                 write_raster(folder / "target.tif", target), folder / "chips", chip_size=32,
                 stride=32, split_block=32, val_fraction=0.25, seed=1, workers=1,
                 progress=False, shift_check=False)
    return folder / "chips"


@pytest.fixture(scope="module")
def linear_chips(tmp_path_factory) -> Path:
    """A target the linear map of the bands explains almost wholly."""
    return _chips(tmp_path_factory.mktemp("linear"),
                  lambda a, b, rng: 3 * a - b + 0.1 * rng.normal(size=a.shape))


@pytest.fixture(scope="module")
def unexplained_chips(tmp_path_factory) -> Path:
    """A target no linear map of the bands explains: cos(3 pi a), under 0.3 % on any 6 of the 8
    chips (the square of the centred band reached 7.8 % on some)."""
    return _chips(tmp_path_factory.mktemp("unexplained"), lambda a, b, rng: np.cos(3 * np.pi * a))


def _options(run: Path) -> dict:
    return json.loads((run / "train.json").read_text())["options"]


def _recipe_used(run: Path) -> str | None:
    return json.loads((run / "train.json").read_text()).get("recipe_used")


def _recipe_values(name: str) -> dict:
    """Recipe `name`'s values of the options these tests do not give (TINY gives the length,
    so no recipe's floor: min_steps 0)."""
    return {**{k: v for k, v in RECIPES[name].items() if v is not None and k not in TINY},
            "min_steps": 0}


def test_auto_picks_residual_where_the_linear_map_explains_the_target_and_says_why(
        linear_chips, tmp_path):
    said: list[str] = []
    train(linear_chips, tmp_path / "run", max_steps=2, log=said.append, **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert line.startswith("recipe auto -> residual (--generator local --ngf 16 ")
    share = float(line.split(" explains ")[1].split("%")[0])
    assert share >= 95  # 3a - b plus a little noise
    options = _options(tmp_path / "run")
    assert {k: options[k] for k in _recipe_values("residual")} == _recipe_values("residual")
    assert options["recipe"] == "auto"
    assert _recipe_used(tmp_path / "run") == "residual"  # train.json says which it trained with


def test_auto_picks_local_where_the_linear_map_explains_nothing(unexplained_chips, tmp_path):
    said: list[str] = []
    train(unexplained_chips, tmp_path / "run", max_steps=2, log=said.append, **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert line.startswith("recipe auto -> local (")
    assert f"(under {AUTO_MIN_EXPLAINED:.0%})" in line
    options = _options(tmp_path / "run")
    assert {k: options[k] for k in _recipe_values("local")} == _recipe_values("local")
    assert _recipe_used(tmp_path / "run") == "local"


def test_options_given_win_over_the_recipe(linear_chips, tmp_path):
    train(linear_chips, tmp_path / "run", max_steps=2, ngf=4, lr=5e-4, pixel_loss="l1", **TINY)
    options = _options(tmp_path / "run")
    assert (options["ngf"], options["lr"], options["pixel_loss"]) == (4, 5e-4, "l1")
    assert (options["generator"], options["residual"], options["local_layers"]) == \
        ("local", "linear", 2)
    assert (options["epochs"], options["decay_epochs"]) == (1, 0)  # TINY's, not the recipe's


def test_epochs_given_under_the_recipe_s_floor_are_trained_as_given_with_a_warning(
        linear_chips, tmp_path):
    said: list[str] = []
    result = train(linear_chips, tmp_path / "run", ngf=4, log=said.append, **TINY)
    assert result.steps == 3  # 6 train chips, 2 a step, 1 + 0 epochs
    assert "warning: 1 + 0 epochs are 3 steps on these chips, under the residual recipe's floor " \
        "of 350: trained as given; drop --epochs and --decay-epochs for the recipe's length, " \
        "or pass --min-steps 350" in said
    said.clear()  # a resume cannot change its length: not warned again
    train(linear_chips, tmp_path / "run", resume=True, quiet=True, workers=0, log=said.append)
    assert not [m for m in said if "floor" in m] and any("is complete" in m for m in said)
    for given in (dict(max_steps=3), dict(min_steps=3), dict(min_steps=0), dict(recipe="paper"),
                  dict(min_steps=0, epochs=None, decay_epochs=None, max_steps=None)):
        said.clear()
        train(linear_chips, tmp_path / "run", ngf=4, log=said.append, overwrite=True,
              **{**TINY, **given})
        assert not [m for m in said if "floor" in m], given


def test_the_recipe_sets_the_length_of_a_run_that_gives_none(unexplained_chips, tmp_path):
    """The local recipes train 25 + 25 epochs (a small scene in about 10 CPU minutes), and at
    least their floor of steps where the epochs are few (here one step each: 50 stretched to
    local's 1,500, the schedule's proportions kept, and the samples of 1,500 epochs named so
    that they sort in order); the paper's recipe and CycleGAN the paper's 100 + 100, without a
    floor."""
    tiny = {k: v for k, v in TINY.items() if k not in ("epochs", "decay_epochs")}
    said: list[str] = []
    result = train(unexplained_chips, tmp_path / "run", ngf=4, log=said.append,
                   **{**tiny, "batch_size": 6})
    options = _options(tmp_path / "run")
    assert (options["epochs"], options["decay_epochs"], options["min_steps"]) == (25, 25, 1500)
    assert result.steps == 1500 and result.epochs == 1500  # 6 train chips, all in each step
    assert next(m for m in said if m.startswith("training on ")).endswith(
        "1500 steps (the 50 of 25 + 25 epochs stretched to --min-steps 1500)")
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").glob("epoch_*.png"))
    epochs = [row["epoch"] for row in result.metrics]
    assert samples == [f"epoch_{epoch:04d}.png" for epoch in epochs] and epochs == sorted(epochs)
    assert epochs[-1] == 1500 and len(epochs) > 2
    with pytest.raises(GeoPix2PixError, match="--max-steps sets the run's length, which "
                       "--min-steps would stretch: give one"):
        TrainConfig(min_steps=100, max_steps=5)
    lrs = [row["lr"] for row in result.metrics]
    assert lrs[len(lrs) // 2 - 1] == pytest.approx(lrs[0]) and lrs[-1] < 0.01 * lrs[0]
    assert TrainConfig(recipe="paper").min_steps == TrainConfig(model="cyclegan").min_steps == 0
    assert (TrainConfig(recipe="paper").epochs, TrainConfig(recipe="paper").decay_epochs) == \
        (100, 100)
    cyclegan = TrainConfig(model="cyclegan")
    assert (cyclegan.epochs, cyclegan.decay_epochs) == (100, 100)


def test_auto_fits_the_baselines_it_read_as_the_recipe_given_does(linear_chips, tmp_path):
    """The sums auto read are the baselines' own: the same maps as a run given the recipe."""
    train(linear_chips, tmp_path / "auto", max_steps=1, **TINY)
    train(linear_chips, tmp_path / "given", max_steps=1, recipe="residual", **TINY)
    assert _recipe_used(tmp_path / "given") == _recipe_used(tmp_path / "auto") == "residual"
    auto, given = (json.loads((tmp_path / name / "baselines.json").read_text())
                   for name in ("auto", "given"))
    assert auto["maps"] == given["maps"] and auto["pixels"] == given["pixels"]
    for name, scores in given["scores"].items():
        assert auto["scores"][name] == pytest.approx(scores)


def test_a_resumed_auto_run_keeps_its_pick_without_reading_the_chips_again(unexplained_chips,
                                                                            tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(unexplained_chips, run, max_steps=6, callback=lambda info: info["step"] == 2, **TINY)
    before = _options(run)
    said: list[str] = []
    result = train(unexplained_chips, run, resume=True, log=said.append, quiet=True, workers=0)
    assert result.steps == 6
    assert not any(m.startswith("recipe auto") for m in said)
    assert {**_options(run), "resume": False} == before
    assert _recipe_used(run) == "local"  # kept from the run's first train.json


def test_a_named_recipe_fills_what_is_not_given():
    paper = TrainConfig(recipe="paper")
    assert (paper.generator, paper.ngf, paper.lr, paper.gan_warmup, paper.residual) == \
        ("unet", 64, 2e-4, 0.0, "none")
    local = TrainConfig(recipe="local", ngf=8)
    assert (local.generator, local.ngf, local.local_layers, local.validity_band) == \
        ("local", 8, 4, True)
    assert TrainConfig(recipe="local", validity_band=False).validity_band is False


def test_auto_decides_without_the_chips_where_it_can():
    classes = TrainConfig(categorical=True, generator="local")  # (else by the chips:
    assert not classes.undecided  # test_recipe_classes)
    expected = {k: v for k, v in RECIPES["classes"].items() if v is not None}
    assert {k: getattr(classes, k) for k in expected} == expected
    # another generator than the local one: the paper's recipe, with that generator; for a
    # class map the U-Net's class-map recipe (the paper's widths with another generator)
    unet = TrainConfig(generator="smp:Unet:resnet18")
    assert (unet.generator, unet.lr, unet.gan_warmup, unet.ngf) == \
        ("smp:Unet:resnet18", 2e-4, 0.0, 64)
    shapes = TrainConfig(categorical=True, generator="unet")
    expected = {k: v for k, v in RECIPES["shapes"].items() if v is not None}
    assert {k: getattr(shapes, k) for k in expected} == expected and not shapes.undecided
    smp = TrainConfig(categorical=True, generator="smp:Unet:resnet18")
    assert (smp.class_weights, smp.augment, smp.ngf, smp.min_steps) == ("balanced", "d4", 64, 600)
    filled = {key: getattr(smp, key) for key in smp.filled_by_recipe}  # as the log names them
    assert flags("shapes", filled, filled) == "--augment d4 --class-weights balanced --epochs 5 " \
        "--decay-epochs 5 --min-steps 600"  # (not shapes' --ngf 32: the paper's 64 it got)
    assert TrainConfig().undecided and TrainConfig(generator="local").undecided


def test_a_given_generator_takes_the_paper_width_from_a_named_local_recipe():
    config = TrainConfig(recipe="residual", generator="unet")
    assert (config.ngf, config.local_layers, config.residual, config.pixel_loss) == \
        (64, 3, "linear", "mse")


def test_cyclegan_keeps_its_own_defaults_and_refuses_a_recipe():
    config = TrainConfig(model="cyclegan")
    assert (config.generator, config.ngf, config.lr, config.ema) == \
        ("resnet_9blocks", 64, 2e-4, 0.0)
    with pytest.raises(GeoPix2PixError, match="--recipe is an option of --model pix2pix"):
        TrainConfig(model="cyclegan", recipe="local")


@pytest.mark.parametrize("args, says", [
    (["--recipe", "classes"], "--recipe classes trains a class map: pass --categorical too"),
    (["--recipe", "shapes"], "--recipe shapes trains a class map: pass --categorical too"),
    (["--recipe", "residual", "--categorical"], "for a class map (--categorical) use --recipe "
     "classes or shapes"),
    (["--class-weights", "balanced"], "--class-weights balanced weighs the classes of a class "
     "map; pass --categorical too"),
    (["--min-steps", "-1"], "--min-steps must be 0 (no floor) or more"),
    (["--recipe", "fast"], "'fast' is not one of 'auto', 'paper', 'local'"),
])
def test_recipe_misuse_is_one_line_exit_2(linear_chips, tmp_path, capsys, args, says):
    code = main(["train", str(linear_chips), "-o", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and says in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_two_ranks_pick_what_one_process_picks_from_the_summed_chips(linear_chips, tmp_path):
    """Under torchrun each rank sums its shard of the chips and the sums are added: the same
    pick and the same baselines as one process, said once (rank 0)."""
    from test_distributed import torchrun

    train(linear_chips, tmp_path / "one", max_steps=2, **TINY)
    done = torchrun(["-m", "geopix2pix", "train", str(linear_chips), "-o", str(tmp_path / "two"),
                     "--batch-size", "1", "--max-steps", "2", "--epochs", "1", "--decay-epochs",
                     "0", "--ndf", "4", "--n-layers", "2", "--workers", "0", "--device", "cpu",
                     "-q"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("recipe auto -> residual") == 1
    one, two = _options(tmp_path / "one"), _options(tmp_path / "two")
    assert {k: two[k] for k in RECIPES["residual"]} == {k: one[k] for k in RECIPES["residual"]}
    ours, ref = (json.loads((tmp_path / name / "baselines.json").read_text())
                 for name in ("two", "one"))
    assert ours["pixels"] == ref["pixels"]
    for name in ("linear", "constant"):
        for key in ("weight", "bias"):
            np.testing.assert_allclose(ours["maps"][name][key], ref["maps"][name][key],
                                       rtol=1e-9, atol=1e-12)


def test_a_run_from_before_recipes_resumes_with_the_paper_defaults_it_used(unexplained_chips,
                                                                            tmp_path):
    """train.json and checkpoint.pt written before --recipe record neither it nor the options
    added since (here: the residual start, the pixel loss, the validity band): the run used the
    paper's values, so it resumes with them, not with what auto would pick now."""
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(unexplained_chips, run, recipe="paper", callback=lambda info: info["step"] == 2,
              max_steps=4, **TINY)
    _forget(run, ("recipe", "residual", "pixel_loss", "validity_band"))
    said: list[str] = []
    result = train(unexplained_chips, run, resume=True, log=said.append, quiet=True, workers=0)
    assert result.steps == 4 and not any(m.startswith("recipe auto") for m in said)
    resumed = _options(run)
    assert (resumed["generator"], resumed["residual"], resumed["pixel_loss"],
            resumed["validity_band"], resumed["recipe"]) == ("unet", "none", "l1", False, "auto")


def test_auto_says_what_it_picked_without_the_chips_too_naming_what_it_filled(linear_chips,
                                                                               tmp_path):
    said: list[str] = []
    train(linear_chips, tmp_path / "run", max_steps=1, generator="unet", ngf=4, log=said.append,
          **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert line.startswith("recipe auto -> paper (--lr 0.0002 --gan-warmup 0 ") and \
        line.endswith("): --generator unet; pass --recipe to choose another")
    said.clear()
    train(linear_chips, tmp_path / "given", max_steps=1, ngf=4, lr=1e-3, log=said.append,
          **TINY)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert "--ngf" not in line and "--lr" not in line and "--pixel-loss mse" in line
    # --max-steps with the recipe's epochs: the line says what those epochs still do
    said.clear()
    options = {k: v for k, v in TINY.items() if k not in ("epochs", "decay_epochs")}
    train(linear_chips, tmp_path / "steps", max_steps=2, generator="unet", ngf=4,
          log=said.append, **options)
    line = next(m for m in said if m.startswith("recipe auto"))
    assert "--epochs 100 --decay-epochs 100)" in line and line.endswith(
        ": --generator unet; --max-steps 2 trains 2 step(s), shared as those epochs share "
        "theirs; pass --recipe to choose another")


def _forget(run: Path, keys: tuple[str, ...]) -> None:
    """Make `run` look written before `keys` existed (train.json, checkpoint.pt)."""
    import torch

    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for key in keys:
        del state["options"][key]
    del state["digest"]  # nor had checkpoints a digest then
    torch.save(state, run / "checkpoint.pt")
    saved = json.loads((run / "train.json").read_text())
    for key in keys:
        del saved["options"][key]
    (run / "train.json").write_text(json.dumps(saved))


def test_a_local_run_from_before_recipes_resumes_without_a_pick(unexplained_chips, tmp_path):
    """A local generator run from before --recipe left its start, loss and validity band at
    the paper's values; auto would pick other ones (the local recipe's validity band)."""
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(unexplained_chips, run, max_steps=4, recipe="paper", generator="local",
              callback=lambda info: info["step"] == 2, **TINY)
    _forget(run, ("recipe", "residual", "pixel_loss", "validity_band"))
    said: list[str] = []
    assert train(unexplained_chips, run, resume=True, log=said.append, quiet=True,
                 workers=0).steps == 4
    resumed = _options(run)
    assert (resumed["residual"], resumed["pixel_loss"], resumed["validity_band"]) == \
        ("none", "l1", False)


def test_a_cyclegan_checkpoint_from_before_the_later_options_resumes(linear_chips, tmp_path):
    """A CycleGAN run from before --local-layers, --pixel-loss, --validity-band and --recipe:
    its checkpoint is compared with CycleGAN's defaults (a reviewer found it refused)."""
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(linear_chips, run, model="cyclegan", generator="local", ngf=4, max_steps=4,
              callback=lambda info: info["step"] == 2, **TINY)
    _forget(run, ("recipe", "local_layers", "pixel_loss", "validity_band"))
    assert train(linear_chips, run, resume=True, quiet=True, workers=0).steps == 4


@pytest.mark.parametrize("flag, band", [([], True), (["--no-validity-band"], False)])
def test_the_cli_leaves_the_validity_band_to_the_recipe_unless_given(unexplained_chips, tmp_path,
                                                                     flag, band):
    code = main(["train", str(unexplained_chips), "-o", str(tmp_path / "run"), "--max-steps", "1",
                 "--ndf", "4", "--n-layers", "2", "--batch-size", "2", "--workers", "0",
                 "--device", "cpu", "-q", *flag])
    assert code == 0 and _options(tmp_path / "run")["validity_band"] is band


def test_a_run_folder_that_is_refused_is_refused_before_auto_reads_the_chips(
        unexplained_chips, tmp_path, monkeypatch):
    """A forgotten --overwrite (or --resume without a checkpoint) is said at once, not after a
    pass over the train chips (minutes on a large set)."""
    from geopix2pix.training import recipe_choice

    run = tmp_path / "run"
    train(unexplained_chips, run, max_steps=1, **TINY)

    def read_the_chips(*args, **kwargs):
        raise AssertionError("auto read the chips before the run folder's refusal")

    monkeypatch.setattr(recipe_choice, "accumulate", read_the_chips)
    with pytest.raises(GeoPix2PixError, match="is not empty .* pass --resume to continue it"):
        train(unexplained_chips, run, max_steps=1, **TINY)
    with pytest.raises(GeoPix2PixError, match="--resume: .*checkpoint.pt does not exist"):
        train(unexplained_chips, tmp_path / "new", resume=True, max_steps=1, **TINY)
    assert not (tmp_path / "new").exists()


def test_a_resume_given_none_keeps_the_run_s_length(unexplained_chips, tmp_path):
    """The API's None is "the default": on a resume it keeps what the run recorded (a run of the
    version before recipe lengths recorded 100 + 100, which auto would now fill as 25 + 25)."""
    run = tmp_path / "run"
    tiny = {**TINY, "epochs": 100, "decay_epochs": 100}
    with pytest.raises(TrainingStopped):
        train(unexplained_chips, run, max_steps=4, callback=lambda info: info["step"] == 2,
              **tiny)
    result = train(unexplained_chips, run, resume=True, epochs=None, decay_epochs=None,
                   quiet=True, workers=0)
    assert result.steps == 4
    assert (_options(run)["epochs"], _options(run)["decay_epochs"]) == (100, 100)


def test_a_run_from_before_min_steps_resumes_as_it_was(unexplained_chips, tmp_path):
    """train.json and checkpoint.pt written before --min-steps record no floor: the run had
    none, and resumes with none (its checkpoint is compared with 0)."""
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(unexplained_chips, run, max_steps=4, callback=lambda info: info["step"] == 2,
              **TINY)
    _forget(run, ("min_steps",))
    result = train(unexplained_chips, run, resume=True, quiet=True, workers=0)
    assert result.steps == 4 and _options(run)["min_steps"] == 0
