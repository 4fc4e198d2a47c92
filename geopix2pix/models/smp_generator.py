"""Generators built from segmentation-models-pytorch (smp) encoder-decoder architectures.

A spec string ``smp:<Architecture>:<encoder>`` (e.g. ``smp:Unet:resnet34``,
``smp:UnetPlusPlus:efficientnet-b0``, ``smp:FPN:tu-convnext_tiny``) selects the architecture and
encoder. The model is always created with ``encoder_weights=None``: nothing is ever downloaded.
Pretrained encoder weights can instead come from a local file (a PyTorch state dict read with
``torch.load(..., weights_only=True)`` or a ``.safetensors`` file). The head ends in tanh so the
output lies in [-1, 1] like the Pix2Pix U-Net's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geopix2pix.errors import GeoPix2PixError, ModelError

from . import layout
from .schema import shown
from .torchfile import load_failure, load_weights_only

PREFIX = "smp:"


@dataclass(frozen=True)
class SmpName:
    """Parsed ``smp:<Architecture>:<encoder>`` spec string."""

    architecture: str
    encoder: str


def _smp():  # imported lazily: smp pulls in timm and takes a while to import
    import segmentation_models_pytorch

    return segmentation_models_pytorch


def architectures() -> dict[str, type[nn.Module]]:
    """smp architecture classes by lower-cased name."""
    smp = _smp()
    mapping = getattr(smp, "MODEL_ARCHITECTURES_MAPPING", None)
    if mapping is None:  # smp < 0.4 has no public mapping
        names = ("Unet", "UnetPlusPlus", "MAnet", "Linknet", "FPN", "PSPNet", "DeepLabV3",
                 "DeepLabV3Plus", "PAN", "UPerNet", "Segformer")
        mapping = {n.lower(): getattr(smp, n) for n in names if hasattr(smp, n)}
    return dict(mapping)


def encoder_names() -> list[str]:
    """smp's built-in encoder names (``tu-<timm model>`` encoders are accepted on top)."""
    return list(_smp().encoders.get_encoder_names())


def parse_smp_name(name: str) -> SmpName:
    """Validate ``smp:<Architecture>:<encoder>``; ValueError naming the valid choices otherwise."""
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != PREFIX[:-1] or not parts[1] or not parts[2]:
        raise ModelError(
            f"smp generator must be written 'smp:<Architecture>:<encoder>' "
            f"(e.g. 'smp:Unet:resnet34'), got {shown(name)}"
        )
    archs = architectures()
    arch = archs.get(parts[1].lower())
    if arch is None:
        valid = ", ".join(cls.__name__ for cls in archs.values())
        raise ModelError(f"unknown smp architecture {shown(parts[1])}; valid choices: {valid}")
    encoder = parts[2]
    if not encoder.startswith("tu-") and encoder not in encoder_names():
        valid = ", ".join(encoder_names())
        raise ModelError(
            f"unknown smp encoder {shown(encoder)}; valid choices: {valid}, or "
            "'tu-<timm model name>'"
        )
    return SmpName(arch.__name__, encoder)


class SmpGenerator(nn.Module):
    """Wraps an smp model: tanh output (raw class scores with ``output="logits"``), and a
    ValueError for input sizes it cannot take."""

    def __init__(self, name: str, in_channels: int, out_channels: int,
                 output: str = "tanh") -> None:
        super().__init__()
        parsed = parse_smp_name(name)
        arch = architectures()[parsed.architecture.lower()]
        try:
            self.model = arch(
                encoder_name=parsed.encoder,
                encoder_weights=None,
                in_channels=in_channels,
                classes=out_channels,
                activation="tanh" if output == "tanh" else None,
            )
        except Exception as exc:  # (a timm encoder's constructor raises what it raises)
            raise ModelError(
                f"cannot build {name!r} with {in_channels} input and {out_channels} output "
                f"bands: {exc}"
            ) from exc
        self.in_channels = in_channels
        self.out_channels = out_channels

    @property
    def encoder(self) -> nn.Module:
        return self.model.encoder

    @property
    def input_multiple(self) -> int:
        """Height and width of an input must be multiples of this."""
        if not getattr(self.model, "requires_divisible_input_shape", True):
            return 1
        return int(getattr(self.model.encoder, "output_stride", 32))

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError for a tensor that is not (N, in_channels, H, W) with valid H, W."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelError(
                f"generator expects input of shape (N, {self.in_channels}, H, W), "
                f"got {tuple(x.shape)}"
            )
        step = self.input_multiple
        if x.shape[-2] % step or x.shape[-1] % step:
            raise ModelError(
                f"this smp generator needs height and width that are multiples of {step}, "
                f"got {x.shape[-2]}x{x.shape[-1]}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.model(x)


WEIGHTS_FILES = ("a local .pt/.pth (torch.save of a state dict) or .safetensors file of "
                 "encoder weights")
ENCODER_HINT = "save the encoder's state_dict(), not the model"


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors of a local weights file (.safetensors, or a torch.save state dict without pickle
    code execution); a ``{"state_dict": ...}`` wrapper is unwrapped. Any other file is a
    GeoPix2PixError that says why it could not be read."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = load_weights_only(path)
    except Exception as exc:  # any unreadable file is the user's to fix
        why = load_failure(path, exc, ENCODER_HINT)
        raise GeoPix2PixError(f"cannot read encoder weights file {path}: {why}; pass "
                              f"{WEIGHTS_FILES}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GeoPix2PixError(f"encoder weights file {path} does not hold a state dict of "
                              f"tensors; pass {WEIGHTS_FILES}")
    return dict(state)


def _encoder_part(state: dict[str, torch.Tensor], own_keys: set[str]) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a whole smp model or geopix2pix generator state dict; a plain
    encoder state dict is returned as it is."""
    for prefix in ("model.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in own_keys):
            continue
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def adapt_input_convs(
    state: dict[str, torch.Tensor], target: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Fit first-conv weights trained on another band count, the way smp does for pretrained
    weights: one band sums the kernels; more bands repeat them cyclically and rescale."""
    adapted = dict(state)
    for key, weight in state.items():
        want = target.get(key)
        if want is None or weight.dim() != 4 or want.dim() != 4 or weight.shape == want.shape:
            continue
        if weight.shape[0] != want.shape[0] or weight.shape[2:] != want.shape[2:] \
                or weight.shape[1] == 0:
            continue
        old_in, new_in = weight.shape[1], want.shape[1]
        if new_in == 1:
            adapted[key] = weight.sum(1, keepdim=True)
        else:
            index = torch.arange(new_in) % old_in
            adapted[key] = weight[:, index] * (old_in / new_in)
    return adapted


def load_encoder_weights(generator: SmpGenerator, path: str | os.PathLike[str]) -> None:
    """Load a local state dict into ``generator.encoder``; GeoPix2PixError when it doesn't fit."""
    encoder = generator.encoder
    own = encoder.state_dict()
    state = adapt_input_convs(_encoder_part(read_state_dict(path), set(own)), own)
    differ = layout.mismatch(layout.of_state(own), layout.of_state(state))
    if differ:
        raise GeoPix2PixError(f"encoder weights file {path} does not match encoder "
                              f"{type(encoder).__name__}: {differ}; pass the weights of that "
                              "encoder")
    encoder.load_state_dict(state, strict=True)
