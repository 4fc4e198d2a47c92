"""``--recipe auto`` for values: the recipe picked from the chips before any network is built.

A Pix2Pix run on values that gives no recipe reads its train chips once for the linear
baseline's normal equations (`baselines.accumulate`, each rank its shard, the sums added), and
takes ``residual`` where that map explains enough of the target's variance, ``local`` where it
does not (`settings.recipes.auto_choice`). The sums are kept for the baselines' fit, so the
chips are read once for both.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.runtime import distributed
from geopix2pix.settings.recipes import AUTO_MIN_EXPLAINED, auto_choice, flags
from geopix2pix.settings.train import TrainConfig

from .baselines import accumulate, explained_variance
from .data import EpochBatchSampler, make_loader
from .device import DeviceSetup


class RecipeChoice(NamedTuple):
    """What `choose_recipe` decided: the options with the pick filled in, the train chips'
    baseline sums (None when the pick needed no chips), the recipe the run trains with (None
    for CycleGAN, an ``auto`` run that gives every option a recipe fills, or a resumed ``auto``
    run whose pick the chips decided: its train.json says it) and the line that says what
    ``auto`` picked and why (None when it picked nothing this run)."""

    config: TrainConfig
    sums: torch.Tensor | None
    recipe: str | None
    note: str | None


def choose_recipe(config: TrainConfig, chips_dir: Path, info: DatasetInfo, setup: DeviceSetup
                  ) -> RecipeChoice:
    """``config`` with ``auto``'s pick filled in; the chips are read only when the pick needs
    them (not for another family, a class map, another generator, a named recipe, or every
    option it fills given, the length included)."""
    if config.model != "pix2pix":
        return RecipeChoice(config, None, None, None)
    if config.recipe != "auto":
        return RecipeChoice(config, None, config.recipe, None)
    if not config.undecided:
        name = auto_choice(config.categorical, None, config.generator)
        if name is None or config.resume:
            return RecipeChoice(config, None, name, None)
        why = "--categorical" if name == "classes" else f"--generator {config.generator}"
        return RecipeChoice(config, None, name, _said(name, config.filled_by_recipe, why))
    info.check_paired(chips_dir)  # (Pix2Pix's own check, before the chips are read as pairs)
    dataset = ChipDataset(chips_dir, "train")
    rank, world = distributed.rank(), distributed.world_size()
    sampler = EpochBatchSampler(len(dataset), config.batch_size, 0, shuffle=False, rank=rank,
                                world_size=world)
    in_bands, out_bands = len(info.source.bands), len(info.target.bands)
    sums = accumulate(make_loader(dataset, sampler, 0, setup, 0), in_bands, out_bands, None)
    if world > 1:
        sums = distributed.all_reduce_sum(sums.to(setup.device)).cpu()
    explained = explained_variance(sums, in_bands, out_bands)
    name = auto_choice(False, explained)
    assert name is not None
    chosen = config.with_recipe(name)
    side = "at least" if name == "residual" else "under"
    why = (f"the linear map of the source bands explains {explained:.1%} of the train chips' "
           f"target variance ({side} {AUTO_MIN_EXPLAINED:.0%})")
    return RecipeChoice(chosen, sums, name, _said(name, config.recipe_values(name), why))


def _said(name: str, filled, why: str) -> str:
    """"recipe auto -> NAME (the options it gave): why; ..." (the options given are left out:
    they are trained as given)."""
    given = flags(name, filled)
    return (f"recipe auto -> {name}" + (f" ({given})" if given else "") + f": {why}; pass "
            "--recipe to choose another")
