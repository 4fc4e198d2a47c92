"""The model families (`--model`) and what `train` declares about their networks: each family's
own options and defaults (CycleGAN's are the reference implementation's), the normalisations,
the local generator's layers, Adam's betas and the generator's help. Torch-free: the models and
training read these, `settings.train` declares the options with them."""

from __future__ import annotations

from geopix2pix.settings.recipes import RECIPES, SHOWN

LOCAL_LAYERS = (2, 32)  # the local generator's fewest and most layers
LOCAL_DEFAULT = 3
NORMS = ("batch", "instance")
MODELS = ("pix2pix", "cyclegan")  # the model families (`training.families.FAMILIES`)
# options of one family only: given to another, they are refused (`TrainConfig._check_family`)
CYCLEGAN_OPTIONS = ("lambda_a", "lambda_b", "lambda_identity", "pool_size")
PIX2PIX_OPTIONS = ("lambda_l1", "gan_mode", "gan_warmup", "ema", "categorical",
                   "class_weights", "residual", "pixel_loss", "validity_band", "recipe")
# The reference CycleGAN's own defaults (junyanz/pytorch-CycleGAN-and-pix2pix)
CYCLEGAN_DEFAULTS = {"generator": "resnet_9blocks", "norm": "instance", "gan_mode": "lsgan",
                     "lambda_a": 10.0, "lambda_b": 10.0, "lambda_identity": 0.5, "pool_size": 50}
# Defaults that depend on the family (None in `TrainConfig`: the family's; Pix2Pix's options
# that shape the model come from its recipe, `settings.recipes`). CycleGAN takes the Pix2Pix
# paper's for what a recipe sets (Adam at 2e-4, 100 + 100 epochs, no warm-up, EMA, residual or
# augmentation), with its own generator, norm, loss and weights.
FAMILY_DEFAULTS = {"pix2pix": {"norm": "batch", "gan_mode": "vanilla", "lambda_l1": 100.0},
                   "cyclegan": {**RECIPES["paper"], "local_layers": LOCAL_DEFAULT,
                                **CYCLEGAN_DEFAULTS}}
# defaults the run resolves, not `TrainConfig`: the identity weight is 0 where the domains'
# band counts differ, and an identity weight given there is refused
RESOLVED_BY_RUN = ("lambda_identity",)
BETA1, BETA2 = 0.5, 0.999  # Adam's (the papers'); the first is a Python option, `beta1`

GENERATOR_HELP = ("Generator: 'unet' (the paper's U-Net, depth log2 of the chip size), "
                  "'local' (each pixel from its 3x3 neighbourhood, at full resolution: for "
                  "near-local mappings such as terrain derivatives or SAR -> optical), "
                  "'resnet_9blocks' or 'resnet_6blocks' (the CycleGAN paper's ResNet), or "
                  "'smp:<Architecture>:<encoder>' from segmentation-models-pytorch, e.g. "
                  "smp:Unet:resnet34 (no weights are downloaded).")
NORM_HELP = ("Normalisation in G and D (the local generator has none: then in D only). batch: "
             "at prediction, eval-mode batch norm uses the statistics learned in training, so a "
             "pixel's value does not depend on its window's neighbours or batch and stitched "
             "scenes show no seams. instance: normalises each window by its own statistics (can "
             "show seams between prediction windows).")


def family_default(name: str) -> str:
    """--help's default of an option whose default is each family's own (`FAMILY_DEFAULTS`;
    Pix2Pix's from its recipe)."""
    return ", ".join(f"{FAMILY_DEFAULTS[family].get(name, SHOWN)} ({family})"
                     for family in ("pix2pix", "cyclegan"))


def cyclegan_default(name: str) -> str:
    """--help's default of a CycleGAN option."""
    return str(CYCLEGAN_DEFAULTS[name])


PIX2PIX = FAMILY_DEFAULTS["pix2pix"]
