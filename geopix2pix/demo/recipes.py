"""The demo's recipes: what each task asks of `export_chips` and `train`, and why.

`run_demo` follows them, and a notebook that runs the demo's stages one by one takes the same
from `DemoScenes.recipe()` (or `demo_recipe`), so the two never drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings.demo import TASKS, DemoSettings

# The tasks whose unpaired demo (CycleGAN) is shown: SAR and optical images rarely come as pairs.
UNPAIRED_TASKS = ("sar2optical",)
# A small CycleGAN, at the demo's width.
UNPAIRED_TRAIN = dict(model="cyclegan", generator="resnet_6blocks", ngf=DemoSettings.ngf)

# What each task needs, and why (the same choices a user makes on real data).
TASK_OPTIONS = {
    # A hillshade depends on the relief, not on the absolute height: centre each chip's elevation.
    # It also depends on the sun's azimuth, so rotating or flipping chips would change the answer.
    "dsm2image": dict(export=dict(source_scaling="centre", target_resampling="bilinear"),
                      train=dict(augment="none")),
    # The map's colours are categories: never interpolate them (nearest). A map has no preferred
    # direction, so all eight flips and rotations are safe.
    "sat2map": dict(export=dict(source_scaling="percentile", target_resampling="nearest"),
                    train=dict(augment="d4")),
    # Speckled dB values: percentile scaling ignores the outliers. The radar looks from one side
    # and the optical image is lit from one side: keep the geometry as it is. The scenes give
    # a million pairs of pixels, enough for the local recipe to learn each class's colour, which
    # the linear map of the backscatter (7.5 % explained) misses; `auto` refines that map
    # instead, the safe choice for a real scene's few pairs (docs/train.md), and for --quick's
    # one small scene (65,536 pairs), where local lost to the train mean on 2 of 3 seeds and
    # auto beat it on all 3.
    "sar2optical": dict(export=dict(source_scaling="percentile", target_resampling="bilinear"),
                        train=dict(augment="none"), recipe="local",  # (Pix2Pix's alone)
                        recipe_pixels=1_000_000),  # (the training scenes' pixels it needs)
}


@dataclass(frozen=True)
class DemoRecipe:
    """`export_chips` and `train` keywords for one demo task: ``export_chips(...,
    **recipe.export)``, ``train(..., **recipe.train)``."""

    task: str
    unpaired: bool
    export: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)


def check_task(task: str, unpaired: bool = False) -> None:
    """Refuse a task the demo does not have, and `unpaired` for a task it has no CycleGAN for."""
    if task not in TASKS:
        raise GeoPix2PixError(f"--task {task}: use one of {', '.join(TASKS)}")
    if unpaired and task not in UNPAIRED_TASKS:
        raise GeoPix2PixError(f"--unpaired is for --task {' or '.join(UNPAIRED_TASKS)}; drop it "
                              f"with --task {task}")


def demo_recipe(task: str, *, unpaired: bool = False,
                train_pixels: int | None = None) -> DemoRecipe:
    """The recipe the demo uses for `task`. Pix2Pix's recipe is the task's own (`local` for
    sar2optical) when the training scenes hold at least the pixels it needs (`train_pixels`:
    their pixels, all scenes together; None: enough), else `auto`; with `unpaired`, the demo's
    small CycleGAN (sar2optical only)."""
    check_task(task, unpaired)
    options = TASK_OPTIONS[task]
    if unpaired:
        family = dict(UNPAIRED_TRAIN)
    else:
        enough = train_pixels is None or train_pixels >= options.get("recipe_pixels", 0)
        family = {"recipe": options.get("recipe", "auto") if enough else "auto"}
    return DemoRecipe(task, unpaired, dict(options["export"]), {**options["train"], **family})
