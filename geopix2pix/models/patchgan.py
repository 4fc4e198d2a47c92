"""Conditional PatchGAN discriminator of Pix2Pix (Isola et al. 2017).

Same layers as ``NLayerDiscriminator`` of the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix). It takes the source and the (real or generated) target
concatenated along the band axis and returns one raw logit per overlapping patch (no sigmoid):
with ``n_layers=3`` each logit sees a 70x70 pixel patch and a 256x256 input gives a 30x30 map.

Its ``n_layers + 2`` 4x4 convolutions (stride 2, then two of stride 1, padding 1) shrink the input,
so a deep PatchGAN needs large enough chips: ``patch_map_size`` gives the side of the logit map,
``max_layers`` the deepest PatchGAN a chip size allows and ``min_input_size`` the smallest
power-of-two chip a depth needs (a 64-pixel chip takes at most 4 layers, 3 layers need 32 pixels).
"""

from __future__ import annotations

import torch
from torch import nn

from geopix2pix.errors import ModelError

from .unet import norm_layer

KERNEL, PADDING = 4, 1


def _strides(n_layers: int) -> list[int]:
    """Strides of the PatchGAN's convolutions: the first and n_layers - 1 more halve the size."""
    return [2] * n_layers + [1, 1]


def patch_map_size(input_size: int, n_layers: int) -> int:
    """Side of the logit map for an ``input_size`` input; 0 when a 4x4 kernel stops fitting."""
    size = input_size
    for stride in _strides(n_layers):
        if size + 2 * PADDING < KERNEL:
            return 0
        size = (size + 2 * PADDING - KERNEL) // stride + 1
    return size


def max_layers(input_size: int) -> int:
    """The largest ``n_layers`` whose PatchGAN takes an ``input_size`` input (0: none does)."""
    n_layers = 0
    while patch_map_size(input_size, n_layers + 1) >= 1:
        n_layers += 1
    return n_layers


def min_input_size(n_layers: int) -> int:
    """The smallest power-of-two input side a PatchGAN of ``n_layers`` takes."""
    size = 1
    while patch_map_size(size, n_layers) < 1:
        size *= 2
    return size


class NLayerDiscriminator(nn.Module):
    """PatchGAN with ``n_layers`` stride-2 convolutions after the first one."""

    def __init__(
        self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        if min(in_channels, ndf, n_layers) < 1:
            raise ModelError("in_channels, ndf and n_layers must be positive")
        use_bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=use_bias),
                norm_layer(norm, ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.n_layers = n_layers

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError for an input too small for this depth (a kernel would not fit)."""
        height, width = x.shape[-2:]
        if min(patch_map_size(int(height), self.n_layers),
               patch_map_size(int(width), self.n_layers)) < 1:
            raise ModelError(
                f"a PatchGAN of {self.n_layers} layers needs inputs of at least "
                f"{min_input_size(self.n_layers)} px, got {height}x{width}; a {min(height, width)} "
                f"px input takes at most {max_layers(int(min(height, width)))} layers")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.model(x)
