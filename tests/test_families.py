"""Model families as plug-ins: the run (trainer, loop, run folder, checkpoint) reaches a family
only through `families.base.ModelFamily`, and families are found by name."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import geopix2pix.training as training
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.training.families import FAMILIES, ModelFamily, family_for

RUN_MODULES = ("trainer.py", "loop.py", "run_folder.py", "run_checkpoint.py")
# what belongs to a family, not to the run
FAMILY_PARTS = {"step", "networks", "losses", "ema", "validate", "samples", "classes", "baselines",
                "families.pix2pix", "geopix2pix.models.baseline", "geopix2pix.models.metadata"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
            if node.module is None:  # from . import baselines
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize("module", RUN_MODULES)
def test_the_run_imports_no_part_of_a_family(module):
    imported = {name.lstrip(".") for name in _imports(Path(training.__file__).parent / module)}
    assert not imported & FAMILY_PARTS, imported & FAMILY_PARTS


def test_families_are_found_by_name():
    assert family_for("pix2pix") is FAMILIES["pix2pix"]
    assert issubclass(FAMILIES["pix2pix"], ModelFamily)
    with pytest.raises(GeoPix2PixError, match="--model nope: unknown model family; use one of "
                                              "pix2pix"):
        family_for("nope")


def test_each_family_refuses_the_options_of_the_other():
    from geopix2pix.training import TrainConfig

    with pytest.raises(GeoPix2PixError, match="^--lambda-identity is an option of --model "
                                              "cyclegan, not of --model pix2pix: drop it$"):
        TrainConfig(lambda_identity=0.5)
    for option in ({"lambda_l1": 50.0}, {"categorical": True}, {"gan_mode": "vanilla"},
                   {"ema": 0.9}, {"residual": "linear"}, {"pixel_loss": "mse"}):
        with pytest.raises(GeoPix2PixError, match="is an option of --model pix2pix"):
            TrainConfig(model="cyclegan", **option)
    with pytest.raises(GeoPix2PixError, match="--model nope: use one of pix2pix, cyclegan"):
        TrainConfig(model="nope")


def test_a_family_fills_in_its_own_defaults():
    from geopix2pix.training import TrainConfig

    pix2pix, cyclegan = TrainConfig(recipe="paper"), TrainConfig(model="cyclegan")
    assert (pix2pix.generator, pix2pix.norm, pix2pix.gan_mode, pix2pix.lambda_l1) == (
        "unet", "batch", "vanilla", 100.0)
    # the generator and what goes with it are Pix2Pix's recipe's (auto: picked from the chips)
    assert TrainConfig().generator is None and TrainConfig().norm == "batch"
    assert pix2pix.lambda_a is None and pix2pix.pool_size is None
    assert (cyclegan.generator, cyclegan.norm, cyclegan.gan_mode, cyclegan.lambda_l1) == (
        "resnet_9blocks", "instance", "lsgan", None)
    assert (cyclegan.lambda_a, cyclegan.lambda_b, cyclegan.pool_size) == (10.0, 10.0, 50)
    # what train.json and a checkpoint hold reads back (a --resume)
    assert TrainConfig(**cyclegan.to_dict()) == cyclegan
    assert TrainConfig(**pix2pix.to_dict()) == pix2pix


def test_the_cli_refuses_another_familys_option_in_one_line(tmp_path, capsys):
    from geopix2pix.cli import main

    code = main(["train", str(tmp_path), "-o", str(tmp_path / "run"), "--pool-size", "10"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("--pool-size is an option of --model cyclegan, not of --model "
                            "pix2pix: drop it"), err
    assert len(err) == 1


def test_the_declared_models_are_the_registered_families():
    """--model's choices (settings, torch-free) name exactly the families training registers."""
    from geopix2pix.settings.families import FAMILY_DEFAULTS, MODELS
    from geopix2pix.training.families import FAMILIES

    assert tuple(FAMILIES) == MODELS and set(FAMILY_DEFAULTS) == set(MODELS)


def test_evaluating_puts_each_network_back_in_its_own_mode_also_after_an_error():
    """Validation and samples run the families' networks in eval mode, and hand them back in
    the mode each was in (a generator in train mode, a frozen one in eval mode)."""
    import torch

    from geopix2pix.training.validate import evaluating

    training_net, frozen = torch.nn.BatchNorm2d(1), torch.nn.BatchNorm2d(1).eval()
    with pytest.raises(RuntimeError), evaluating(training_net, frozen):
        assert not training_net.training and not frozen.training
        raise RuntimeError("a failed validation")
    assert training_net.training and not frozen.training


def test_train_help_gives_each_familys_default_generator_and_norm(capsys):
    """--help said [default: unet] and [default: batch], which are Pix2Pix's alone."""
    from geopix2pix.cli import main

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "[default: the recipe's (pix2pix), resnet_9blocks (cyclegan)]" in text
    assert "[default: batch (pix2pix), instance (cyclegan)]" in text
