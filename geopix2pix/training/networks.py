"""Pix2Pix's G and D, built from the chips folder's description and the options, and the checks
that every family's networks fit the chips.

Everything that makes a generator or discriminator unfit for the chips (an unknown generator, a
chip size the U-Net or an smp model cannot take, a PatchGAN deeper than the chips allow) is a
one-line GeoPix2PixError here, before the run folder is touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import GeneratorSpec, build_discriminator, build_generator
from geopix2pix.models.patchgan import max_layers, min_input_size
from geopix2pix.settings.train import TrainConfig


def check_discriminator_depth(chip_size: int, n_layers: int) -> None:
    """Refuse an ``--n-layers`` whose PatchGAN cannot take chips of ``chip_size`` pixels."""
    deepest = max_layers(chip_size)
    if n_layers <= deepest:
        return
    raise GeoPix2PixError(
        f"--n-layers {n_layers} needs chips of at least {min_input_size(n_layers)} px; with "
        f"{chip_size}-px chips use --n-layers {deepest} or less (or export larger chips with "
        "geopix2pix export-chips --chip-size)")


def check_encoder_weights(generator: str, encoder_weights: str | None) -> None:
    """Refuse ``--encoder-weights`` for a generator without a pretrained encoder (the U-Net)."""
    if encoder_weights is not None and not generator.startswith("smp:"):
        raise GeoPix2PixError(
            f"--encoder-weights {encoder_weights}: only an smp generator has an encoder to load "
            f"them into (--generator {generator} is trained from scratch); pass --generator "
            "smp:<Architecture>:<encoder> (e.g. smp:Unet:resnet34) or drop --encoder-weights")


def build_networks(info: DatasetInfo, config: TrainConfig, classes: list[int] | None = None
                   ) -> tuple[GeneratorSpec, nn.Module, nn.Module]:
    """The generator's spec, G and D for the chips ``info`` describes; for a class map
    (``classes``), a generator of one score per class, judged by D as class probabilities."""
    validity = config.validity_band
    bands_in = len(info.source.bands) + int(validity)
    bands_out = len(info.target.bands) if classes is None else len(classes)
    check_discriminator_depth(info.chip_size, config.n_layers)
    check_encoder_weights(config.generator, config.encoder_weights)
    with unfit_for_chips(config.generator, info.chip_size):
        spec = GeneratorSpec(config.generator, bands_in, bands_out, info.chip_size,
                             ngf=config.ngf, norm=config.norm, layers=config.local_layers,
                             output="tanh" if classes is None else "logits", validity=validity)
        generator = build_generator(spec, None if config.resume else config.encoder_weights)
        discriminator = build_discriminator(bands_in + bands_out, config.ndf, config.n_layers,
                                            config.norm)
    return spec, generator, discriminator


@contextlib.contextmanager
def unfit_for_chips(generator: str, chip_size: int) -> Iterator[None]:
    """Networks that cannot be built for the chips (the models' ValueError: an unknown
    generator, a chip size it cannot take) as a one-line GeoPix2PixError naming both."""
    try:
        yield
    except ValueError as exc:
        raise GeoPix2PixError(f"--generator {generator} with chips of {chip_size} px: "
                              f"{exc}") from None
