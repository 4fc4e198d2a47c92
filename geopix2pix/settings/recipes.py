"""Pix2Pix training recipes (`--recipe`), declared once: the values each one gives the options
that shape a model (generator, width, learning rate, adversarial share, start, pixel loss), and
the rule by which the default, ``auto``, picks one from the chips.

A recipe fills only the options a run does not give; what a run gives wins. Why each recipe is
what it is, and what each scores against the simple baselines on held-out parts of real scenes:
docs/train.md ("Recipes") and docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# the options a recipe fills, each recipe's values for them
RECIPE_OPTIONS = ("generator", "ngf", "local_layers", "lr", "gan_warmup", "ema", "residual",
                  "pixel_loss", "validity_band", "augment", "class_weights", "epochs",
                  "decay_epochs", "min_steps")
LENGTH = ("epochs", "decay_epochs", "min_steps")  # a recipe's length: E + D epochs, at least N
# steps (a small chips folder's epochs are a few steps each); a run that gives any of its length
# (or --max-steps) trains exactly that, without the floor
RECIPES: dict[str, dict[str, Any]] = {
    # the paper's Pix2Pix: U-Net + PatchGAN, L1 + adversarial from the start
    "paper": dict(generator="unet", ngf=64, local_layers=None, lr=2e-4, gan_warmup=0.0, ema=0.0,
                  residual="none", pixel_loss="l1", validity_band=False, augment="none",
                  class_weights="none", epochs=100, decay_epochs=100, min_steps=0),
    # a near-local operator learned whole (a terrain derivative: DEM -> hillshade, slope): a
    # wide local generator on L1 alone, told where the source's voids are; no augmentation (a
    # hillshade has a sun azimuth, an aspect a north)
    "local": dict(generator="local", ngf=64, local_layers=4, lr=1e-3, gan_warmup=1.0, ema=0.0,
                  residual="none", pixel_loss="l1", validity_band=True, augment="none",
                  class_weights="none", epochs=25, decay_epochs=25, min_steps=1500),
    # a mapping the linear map of the bands already explains in part, from few pairs (SAR ->
    # optical): a narrow local generator refines that map on the squared error it is fitted with,
    # slowly (at 1e-3 it drifts from the start with more steps and loses on another part);
    # mirrored chips, which its 3x3 neighbourhood hardly tells apart, won on three splits
    "residual": dict(generator="local", ngf=16, local_layers=2, lr=3e-4, gan_warmup=1.0, ema=0.0,
                     residual="linear", pixel_loss="mse", validity_band=False, augment="flip",
                     class_weights="none", epochs=25, decay_epochs=25, min_steps=350),
    # a class map (--categorical) from a pixel's spectrum: over the linear discriminant, on the
    # unweighted cross-entropy, adversarial for the second half, weights averaged, any
    # orientation
    "classes": dict(generator="local", ngf=64, local_layers=3, lr=1e-3, gan_warmup=0.5,
                    ema=0.999, residual="linear", pixel_loss="l1", validity_band=False,
                    augment="d4", class_weights="none", epochs=100, decay_epochs=100,
                    min_steps=400),
    # a class map told by its shape, not by a pixel's spectrum (roads in a panchromatic image):
    # the paper's U-Net at width 32, each class weighted by the inverse of its share (a rare
    # class is otherwise traded away), any orientation, 5 + 5 epochs (about 10 CPU minutes on
    # a few hundred 128 px chips; the decay paid on the roads benchmark)
    "shapes": dict(generator="unet", ngf=32, local_layers=None, lr=2e-4, gan_warmup=0.0,
                   ema=0.0, residual="none", pixel_loss="l1", validity_band=False,
                   augment="d4", class_weights="balanced", epochs=5, decay_epochs=5,
                   min_steps=600),
}
CLASS_RECIPES = ("classes", "shapes")  # those for a class map (--categorical) only
RECIPE_CHOICES = ("auto", *RECIPES)
# before --recipe, train's defaults were the paper's: a run (train.json, checkpoint) that records
# no recipe used these values for the options it does not record
BEFORE_RECIPES = {**{k: v for k, v in RECIPES["paper"].items() if v is not None},
                  "local_layers": 3}


def unrecorded_defaults(options: dict[str, Any]) -> dict[str, Any]:
    """The values a recorded run (train.json's or a checkpoint's options) used for the recipe
    options it does not record: the paper's for a Pix2Pix run from before --recipe, no floor
    for one from before --min-steps, else none (a run since records them all; a CycleGAN run
    its family's defaults)."""
    if options.get("model", "pix2pix") != "pix2pix":
        return {}
    if "recipe" in options:
        return {} if "min_steps" in options else {"min_steps": 0}
    return {**BEFORE_RECIPES, "recipe": "auto"}  # (resumed as train's default now)
# auto, for values: "residual" when the linear map of the source bands explains at least this
# share of the train chips' target variance (its R^2, summed over the bands), else "local". Where
# the map explains anything, it is a baseline to keep: residual starts at it and model-best never
# validates worse, where local, trained from scratch, lost to it on a part of a real SAR scene
# (3.6 % explained). A terrain derivative's map explains next to nothing (a DEM's hillshade: 0.0 %)
AUTO_MIN_EXPLAINED = 0.02
# auto, for a class map: "classes" when the linear discriminant of the source bands beats the
# majority class's mean IoU on the train chips by at least this much, else "shapes". Where a
# pixel's spectrum tells the classes apart, the discriminant does (land cover from Sentinel-2:
# +0.27 to +0.36 on six date-splits), and "classes" starts from it; where a class is a shape
# (roads in a panchromatic image) it adds nothing (+0.00) and the U-Net must see the shape
AUTO_MIN_IOU_GAIN = 0.10

SHOWN = "the recipe's"  # --help's default of the options a recipe fills


def auto_choice(categorical: bool, evidence: float | None, generator: str | None = None
                ) -> str | None:
    """The recipe ``auto`` picks: for a given generator other than the local one ``paper``, or
    for a class map ``shapes`` (the U-Net's class-map recipe, classes balanced: the paper's
    unweighted recipe traded a rare class away); for a class map, ``classes`` with the local
    generator given (or its --local-layers), else by ``evidence`` (the linear discriminant's
    mean IoU less the majority class's on the train chips); for values by ``evidence`` (the
    linear map's R^2 on the train chips); None while it is not known."""
    if generator not in (None, "local"):
        return "shapes" if categorical else "paper"
    if categorical and generator == "local":
        return "classes"
    if evidence is None:
        return None
    if categorical:
        return "classes" if evidence >= AUTO_MIN_IOU_GAIN else "shapes"
    return "residual" if evidence >= AUTO_MIN_EXPLAINED else "local"


def flags(name: str, only: Iterable[str] | None = None,
          values: dict[str, Any] | None = None) -> str:
    """A recipe as the options it gives: ``--generator local --ngf 16 ...`` (those at their
    paper values left out but the generator, which auto's other picks change; with ``only``,
    those named there alone; with ``values``, those a run got from it where they differ from
    the table's: the paper's width for another generator than the recipe's own)."""
    paper = RECIPES["paper"]
    parts = []
    for key, table_value in RECIPES[name].items():
        value = (values or {}).get(key, table_value)
        if table_value is None or value is None or value is False or (
                name != "paper" and value == paper[key] and key != "generator"):
            continue
        if only is not None and key not in only:
            continue
        flag = f"--{key.replace('_', '-')}"
        parts.append(flag if value is True else f"{flag} {value:g}" if isinstance(value, float)
                     else f"{flag} {value}")
    return " ".join(parts)


# what each recipe is for, in --help (its values there come from RECIPES, through `flags`)
PURPOSES = {
    "paper": "the Pix2Pix paper's U-Net + PatchGAN, L1 + adversarial",
    "local": "a near-local operator such as a DEM's hillshade, learned whole on L1",
    "residual": "refines the linear map of the bands, for few pairs such as SAR -> optical",
    "classes": "a class map over the linear discriminant",
    "shapes": "a class map told by shape, such as roads: the U-Net, classes balanced",
}
RECIPE_HELP = (
    "The values of the options that shape the model, the augmentation and the run's length, "
    "where not given: "
    + "; ".join(f"{name} ({PURPOSES[name]}: " + flags(name, ("lr",) if name == "paper" else
                                                      set(RECIPE_OPTIONS) - set(LENGTH))
                + f", {values['epochs']} + {values['decay_epochs']} epochs"
                + (f", at least {values['min_steps']} steps)" if values["min_steps"] else ")")
                for name, values in RECIPES.items())
    + ". auto: paper with a --generator other than local (shapes with --categorical); with "
    "--categorical classes for the local generator, else classes where the "
    "linear discriminant of the source bands beats the majority class's mean IoU on the train "
    f"chips by at least {AUTO_MIN_IOU_GAIN:g}, shapes where it does not; for values residual "
    f"where the linear map explains at least {AUTO_MIN_EXPLAINED:.0%} of the train chips' "
    "target variance, local where it does not (the log says which and why).")
