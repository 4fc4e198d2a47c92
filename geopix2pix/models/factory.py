"""One place to build every network from a small, serialisable description.

``GeneratorSpec`` says which generator to build; it is stored in each model file so that
``load_model`` can rebuild the network before loading its weights. ``build_generator`` dispatches
on ``spec.name``: ``"unet"`` is the Pix2Pix U-Net, ``"local"`` a full-resolution network of
each pixel's 3x3 neighbourhood for near-local mappings (`local`), ``"resnet_9blocks"``/
``"resnet_6blocks"`` CycleGAN's ResNet generator, ``"smp:<Architecture>:<encoder>"`` a
segmentation-models-pytorch model. ``build_discriminator`` builds the PatchGAN: conditional for
Pix2Pix (source and target bands), unconditional for CycleGAN (one domain's bands).

Why the default norm is batch norm: in eval mode batch norm normalises with the running
statistics gathered in training, so a pixel's prediction depends neither on the batch nor on
which other windows are predicted along with it. Instance norm normalises each window with its
own statistics, which shift from window to window and show up as seams when a scene is predicted
window by window and stitched.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from torch import nn

from geopix2pix.errors import ModelError
from geopix2pix.settings.families import NORMS

from .init import init_weights
from .local import MAX_LAYERS, LocalNet
from .patchgan import NLayerDiscriminator
from .resnet_generator import BLOCKS as RESNET_BLOCKS
from .resnet_generator import ResnetGenerator, check_resnet_size
from .schema import MAX_BANDS, MAX_CHIP_SIZE, MAX_NGF, MIN_CHIP_SIZE, shown
from .smp_generator import PREFIX as SMP_PREFIX
from .smp_generator import SmpGenerator, load_encoder_weights
from .unet import OUTPUTS, UnetGenerator, depth_for_chip_size

# the most each size may be: a file's spec is built (on the meta device) before its tensors
# are compared with it, and training builds it for real
BUILT_IN = ("unet", "local", *RESNET_BLOCKS)  # generators of geopix2pix's own (not smp)
BOUNDS = {"in_channels": MAX_BANDS, "out_channels": MAX_BANDS, "chip_size": MAX_CHIP_SIZE,
          "ngf": MAX_NGF, "layers": MAX_LAYERS}


def _check_positive_int(name: str, value: Any, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ModelError(f"{name} must be a positive integer, got {shown(value)}")
    if value > high:
        raise ModelError(f"{name} {value} is more than geopix2pix takes (at most {high})")


@dataclass(frozen=True)
class GeneratorSpec:
    """Which generator to build. ``ngf`` applies to ``"unet"``, ``"local"`` and the ResNet
    generators, ``norm`` and ``dropout`` to ``"unet"`` and the ResNets, ``layers`` to ``"local"``
    only; none of them to smp ones.

    name: ``"unet"``, ``"local"``, ``"resnet_9blocks"``, ``"resnet_6blocks"`` or
    ``"smp:<Architecture>:<encoder>"`` (e.g. ``"smp:Unet:resnet34"``).
    in_channels / out_channels: source and target band counts.
    chip_size: training chip side in pixels; the U-Net's depth is ``log2(chip_size)``, a ResNet
    generator takes multiples of 4 (and every spec at least 32, what export cuts).
    ngf: filters of the outermost level. norm: ``"batch"`` (default) or ``"instance"``
    (CycleGAN's, with ``dropout=False``: ``resnet_generator.RESNET_DEFAULTS``).
    dropout: dropout 0.5 in the U-Net's decoder blocks next to the bottleneck, as in the paper,
    or between the two convolutions of each residual block.
    layers: the local generator's convolutions (a 3x3 one, then 1x1 ones; at least 2).
    validity: the last of the ``in_channels`` is the source's validity (1 where the source is
    valid, 0 at its nodata), which prediction adds to the scene's bands (`source_bands`); the
    local generator then takes its differences over valid neighbours only.
    output: ``"tanh"`` (the paper's: each band's values on the [-1, 1] training scale) or
    ``"logits"`` (a categorical target: ``out_channels`` is the number of classes and each
    channel a raw score of its class).
    """

    name: str = "unet"
    in_channels: int = 3
    out_channels: int = 3
    chip_size: int = 256
    ngf: int = 64
    norm: str = "batch"
    dropout: bool = True
    output: str = "tanh"
    layers: int = 3
    validity: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not (
            self.name in BUILT_IN or self.name.startswith(SMP_PREFIX)
        ):
            raise ModelError(
                f"unknown generator {shown(self.name)}; expected 'unet', 'local', "
                f"'resnet_9blocks', 'resnet_6blocks' or 'smp:<Architecture>:<encoder>' "
                f"(e.g. 'smp:Unet:resnet34')"
            )
        for field, high in BOUNDS.items():
            _check_positive_int(field, getattr(self, field), high)
        if self.chip_size < MIN_CHIP_SIZE:
            raise ModelError(f"chip_size {self.chip_size} is less than geopix2pix takes (at "
                             f"least {MIN_CHIP_SIZE})")
        if self.norm not in NORMS:
            raise ModelError(f"unknown norm {shown(self.norm)}; expected one of "
                             f"{', '.join(NORMS)}")
        if self.output not in OUTPUTS:
            raise ModelError(f"unknown output {shown(self.output)}; expected one of "
                             f"{', '.join(OUTPUTS)}")
        for flag in ("dropout", "validity"):
            if not isinstance(getattr(self, flag), bool):
                raise ModelError(f"{flag} must be true or false, got "
                                 f"{shown(getattr(self, flag))}")
        if self.validity and self.in_channels < 2:
            raise ModelError("a generator with a validity band takes it after at least one "
                             "source band: in_channels must be at least 2")
        if self.name == "unet":
            depth_for_chip_size(self.chip_size)
        elif self.name in RESNET_BLOCKS:
            check_resnet_size(self.chip_size)

    @property
    def source_bands(self) -> int:
        """The scene bands the generator takes (``in_channels`` less the validity band)."""
        return self.in_channels - int(self.validity)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of the fields (``layers`` for a ``"local"`` only,
        ``validity`` when set, so other generators' descriptions stay as they were before)."""
        data = dataclasses.asdict(self)
        if self.name != "local":
            del data["layers"]
        if not self.validity:
            del data["validity"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GeneratorSpec:
        """Inverse of ``to_dict``; unknown keys raise ValueError, missing ones take defaults."""
        if not isinstance(data, dict):
            raise ModelError(f"the generator's description is {shown(data)}, not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ModelError(f"unknown generator spec keys: {shown(', '.join(unknown))}")
        return cls(**data)


def build_generator(
    spec: GeneratorSpec, encoder_weights_path: str | os.PathLike[str] | None = None
) -> nn.Module:
    """Build the generator ``spec`` describes, in training mode, on the CPU.

    The U-Net and the ResNet generators get the papers' N(0, 0.02) initialisation. An smp
    generator keeps smp's own initialisation; ``encoder_weights_path`` (smp only) loads a local
    encoder state dict.
    """
    if encoder_weights_path is not None and not spec.name.startswith(SMP_PREFIX):
        raise ModelError("encoder_weights_path only applies to 'smp:...' generators")
    if spec.name in RESNET_BLOCKS:
        return init_weights(ResnetGenerator(
            spec.in_channels, spec.out_channels, n_blocks=RESNET_BLOCKS[spec.name], ngf=spec.ngf,
            norm=spec.norm, dropout=spec.dropout, output=spec.output))
    if spec.name == "unet":
        generator = UnetGenerator(
            spec.in_channels,
            spec.out_channels,
            depth=depth_for_chip_size(spec.chip_size),
            ngf=spec.ngf,
            norm=spec.norm,
            dropout=spec.dropout,
            output=spec.output,
        )
        return init_weights(generator)
    if spec.name == "local":
        return LocalNet(spec.in_channels, spec.out_channels, spec.ngf, spec.layers, spec.output,
                        spec.validity)
    generator = SmpGenerator(spec.name, spec.in_channels, spec.out_channels, spec.output)
    step = generator.input_multiple
    if spec.chip_size % step:
        raise ChipSizeError(f"{spec.name} needs a chip size that is a multiple of {step}, "
                            f"got {spec.chip_size}")
    if encoder_weights_path is not None:
        load_encoder_weights(generator, encoder_weights_path)
    return generator


class ChipSizeError(ModelError):
    """A generator built, but for chips of another size than asked (an smp encoder's input
    multiple): building it again, on another device, fails alike."""


def build_discriminator(
    in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"
) -> nn.Module:
    """The PatchGAN with the paper's initialisation; it returns raw logits (use
    BCEWithLogitsLoss or an LSGAN MSE). Pix2Pix's is conditional: ``in_channels`` = source +
    target bands. CycleGAN's is unconditional: ``in_channels`` = the bands of the domain it
    judges, with ``norm="instance"`` (3 bands at ndf 64: 2,764,737 parameters)."""
    if norm not in NORMS:
        raise ModelError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    return init_weights(NLayerDiscriminator(in_channels, ndf=ndf, n_layers=n_layers, norm=norm))
