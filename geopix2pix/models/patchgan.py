"""Conditional PatchGAN discriminator of Pix2Pix (Isola et al. 2017).

Same layers as ``NLayerDiscriminator`` of the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix). It takes the source and the (real or generated) target
concatenated along the band axis and returns one raw logit per overlapping patch (no sigmoid):
with ``n_layers=3`` each logit sees a 70x70 pixel patch and a 256x256 input gives a 30x30 map.
"""

from __future__ import annotations

import torch
from torch import nn

from .unet import norm_layer


class NLayerDiscriminator(nn.Module):
    """PatchGAN with ``n_layers`` stride-2 convolutions after the first one."""

    def __init__(
        self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        if min(in_channels, ndf, n_layers) < 1:
            raise ValueError("in_channels, ndf and n_layers must be positive")
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
