"""``--recipe auto``: the recipe picked from the chips before any network is built.

A Pix2Pix run that gives no recipe reads its train chips for the baselines' sums
(`baselines.accumulate`, each rank its shard, the sums added). On values it takes ``residual``
where the linear map explains enough of the target's variance, ``local`` where it does not; the
sums are kept for the baselines' fit, so the chips are read once for both. On a class map it
reads them a second time to score the linear discriminant fitted from those sums (the majority
class's score follows from the class counts), and takes ``classes`` where the discriminant tells
the classes apart clearly better than the majority class, ``shapes`` (the U-Net) where a pixel's
spectrum does not tell them (`settings.recipes.auto_choice`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

import torch

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.models.baseline import BaselineMaps, baseline_generator
from geopix2pix.runtime import distributed
from geopix2pix.settings.recipes import (
    AUTO_MIN_EXPLAINED,
    AUTO_MIN_IOU_GAIN,
    auto_choice,
    flags,
)
from geopix2pix.settings.train import TrainConfig

from .baselines import (
    accumulate,
    explained_variance,
    majority_miou,
    shard_loader,
    solve_classes,
)
from .classes import trained_classes
from .device import DeviceSetup
from .validate import evaluate_classes


class RecipeChoice(NamedTuple):
    """What `choose_recipe` decided: the options with the pick filled in, the train chips'
    baseline sums (None when the pick needed no chips), the recipe the run trains with (None
    for CycleGAN, an ``auto`` run that gives every option a recipe fills, or a resumed ``auto``
    run: its train.json says what it picked) and the line that says what
    ``auto`` picked and why (None when it picked nothing this run)."""

    config: TrainConfig
    sums: torch.Tensor | None
    recipe: str | None
    note: str | None


def choose_recipe(config: TrainConfig, chips_dir: Path, info: DatasetInfo, setup: DeviceSetup
                  ) -> RecipeChoice:
    """``config`` with ``auto``'s pick filled in; the chips are read only when the pick needs
    them (not for another family, another generator, a named recipe, or every option it fills
    given, the length included)."""
    if config.model != "pix2pix":
        return RecipeChoice(config, None, None, None)
    if config.recipe != "auto":
        return RecipeChoice(config, None, config.recipe, None)
    if config.resume and not config.undecided:  # (the pick its train.json records)
        return RecipeChoice(config, None, None, None)
    if not config.undecided:
        name = auto_choice(config.categorical, None, config.generator)
        if name is None:
            return RecipeChoice(config, None, name, None)
        given = "--local-layers" if "generator" in config.filled_by_recipe else \
            f"--generator {config.generator}"
        why = given + (" --categorical" if config.categorical else "")
        filled = {key: getattr(config, key) for key in config.filled_by_recipe}
        return RecipeChoice(config, None, name, _said(name, filled, why, config.max_steps))
    info.check_paired(chips_dir)  # (Pix2Pix's own check, before the chips are read as pairs)
    read = _read_classes if config.categorical else _read_values
    sums, name, why = read(config, chips_dir, info, setup)
    return RecipeChoice(config.with_recipe(name), sums, name,
                        _said(name, config.recipe_values(name), why, config.max_steps))


def _summed(sums: torch.Tensor, setup: DeviceSetup) -> torch.Tensor:
    """The ranks' sums added (one process: its own)."""
    if distributed.world_size() > 1:
        return distributed.all_reduce_sum(sums.to(setup.device)).cpu()
    return sums


def _train_loader(dataset: ChipDataset, config: TrainConfig, setup: DeviceSetup):
    return shard_loader(dataset, config.batch_size, distributed.rank(),
                        distributed.world_size(), setup)


def _read_values(config: TrainConfig, chips_dir: Path, info: DatasetInfo, setup: DeviceSetup
                 ) -> tuple[torch.Tensor, str, str]:
    """The linear baseline's sums, and ``residual`` or ``local`` by the share of the target's
    variance its map explains."""
    dataset = ChipDataset(chips_dir, "train")
    in_bands, out_bands = len(info.source.bands), len(info.target.bands)
    sums = _summed(accumulate(_train_loader(dataset, config, setup), in_bands, out_bands, None),
                   setup)
    explained = explained_variance(sums, in_bands, out_bands)
    name = auto_choice(False, explained)
    assert name is not None
    side = "at least" if name == "residual" else "under"
    return sums, name, (f"the linear map of the source bands explains {explained:.1%} of the "
                        f"train chips' target variance ({side} {AUTO_MIN_EXPLAINED:.0%})")


def _read_classes(config: TrainConfig, chips_dir: Path, info: DatasetInfo, setup: DeviceSetup
                  ) -> tuple[torch.Tensor, str, str]:
    """The class baselines' sums, and ``classes`` or ``shapes`` by how much better than the
    majority class the linear discriminant fitted from them scores on the same chips (a second
    pass: a per-pixel map of a few numbers per class, so the train chips judge it fairly; the
    majority class's score follows from the counts)."""
    classes = trained_classes(info, chips_dir)
    dataset = ChipDataset(chips_dir, "train", classes=classes)
    in_bands = len(info.source.bands)
    sums = _summed(accumulate(_train_loader(dataset, config, setup), in_bands, len(classes),
                              len(classes)), setup)
    nearest, majority, fisher, _ = solve_classes(sums, in_bands, len(classes))
    module = baseline_generator(BaselineMaps(nearest, majority, "none", fisher),
                                "discriminant", True, setup.device)
    reduce = distributed.all_reduce_sum if distributed.world_size() > 1 else None
    scores = evaluate_classes(module, _train_loader(dataset, config, setup), setup,
                              len(classes), reduce)
    discriminant = scores.get("val_miou", 0.0)
    majority_score = majority_miou(sums, in_bands, len(classes))
    gain = discriminant - majority_score
    name = auto_choice(True, gain if math.isfinite(gain) else 0.0)
    assert name is not None
    side = "at least" if name == "classes" else "under"
    return sums, name, (f"the linear discriminant of the source bands scores a mean IoU of "
                        f"{discriminant:.3f} on the train chips, the majority class "
                        f"{majority_score:.3f} (a gain of {gain:.3f}, {side} "
                        f"{AUTO_MIN_IOU_GAIN:g})")


def _said(name: str, filled: dict[str, Any], why: str, max_steps: int | None = None) -> str:
    """"recipe auto -> NAME (the options it gave, with the values it gave): why; ..." (the
    options given are left out: they are trained as given; with --max-steps, the epochs it
    gave only share those steps between the constant and the decaying learning rate)."""
    given = flags(name, filled, filled)
    length = (f"; --max-steps {max_steps} trains {max_steps} step(s), shared as those epochs "
              "share theirs" if max_steps is not None and "epochs" in filled else "")
    return (f"recipe auto -> {name}" + (f" ({given})" if given else "") + f": {why}{length}; "
            "pass --recipe to choose another")
