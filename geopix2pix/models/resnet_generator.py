"""ResNet generator of CycleGAN (Zhu et al. 2017), for any number of input and output bands.

The module tree mirrors ``ResnetGenerator``/``ResnetBlock`` of the reference implementation
(junyanz/pytorch-CycleGAN-and-pix2pix), so layer names, parameter counts and the forward
computation are the same: reflection padding 3 and a 7x7 convolution in, two 3x3 stride-2
down-samplings, ``n_blocks`` residual blocks (reflection padding 1, two 3x3 convolutions), two
3x3 stride-2 transposed convolutions up, reflection padding 3 and a 7x7 convolution out, then tanh
(or, for a categorical target, raw class scores). Convolutions carry a bias only when the norm is
not batch norm, as in the reference. CycleGAN's defaults are instance norm without dropout
(``RESNET_DEFAULTS``); dropout, when asked, sits between a block's two convolutions.

Input height and width must be multiples of 4 (two halvings and two doublings give the input size
back) and at least 8 (the 1-pixel reflection padding of the blocks needs a bottleneck of 2x2).
Every chip size export writes (powers of two from 32) fits, and prediction feeds the generator
windows of the chip size it was trained on (a scene smaller than one is reflect-padded to it).
With instance norm each window is normalised by its own statistics, which differ from window to
window: prediction's overlap and blending hide the seams this leaves (factory.py says why
Pix2Pix's default is batch norm).
"""

from __future__ import annotations

import torch
from torch import nn

from geopix2pix.errors import ModelError
from geopix2pix.settings.families import CYCLEGAN_DEFAULTS

from .unet import check_generator_args, norm_layer

BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}  # generator name -> residual blocks
INPUT_MULTIPLE = 4  # 2 ** the number of down-samplings
MIN_INPUT = 8  # the bottleneck (input / 4) must be >= 2 for its reflection padding
# CycleGAN's (the reference's defaults)
RESNET_DEFAULTS = {"norm": CYCLEGAN_DEFAULTS["norm"], "dropout": False}
N_DOWNSAMPLING = 2


def check_resnet_size(size: int) -> None:
    """Raise ValueError for a chip side the ResNet generator cannot take."""
    if size < MIN_INPUT or size % INPUT_MULTIPLE:
        raise ModelError(f"a ResNet generator needs a chip size that is a multiple of "
                         f"{INPUT_MULTIPLE} and at least {MIN_INPUT}, got {size}")


class ResnetBlock(nn.Module):
    """x + conv_block(x): pad, 3x3 conv, norm, ReLU, [dropout], pad, 3x3 conv, norm."""

    def __init__(self, dim: int, norm: str, use_dropout: bool, use_bias: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(norm, dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias),
            norm_layer(norm, dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def _down_and_blocks(ngf: int, n_blocks: int, norm: str, dropout: bool,
                     use_bias: bool) -> list[nn.Module]:
    """The two stride-2 down-samplings and the residual blocks at ngf * 4 channels."""
    layers: list[nn.Module] = []
    for i in range(N_DOWNSAMPLING):
        mult = 2**i
        layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1,
                             bias=use_bias),
                   norm_layer(norm, ngf * mult * 2),
                   nn.ReLU(True)]
    mult = 2**N_DOWNSAMPLING
    layers += [ResnetBlock(ngf * mult, norm, dropout, use_bias) for _ in range(n_blocks)]
    return layers


def _up(ngf: int, norm: str, use_bias: bool) -> list[nn.Module]:
    """The two stride-2 transposed convolutions back to ngf channels at the input size."""
    layers: list[nn.Module] = []
    for i in range(N_DOWNSAMPLING):
        mult = 2**(N_DOWNSAMPLING - i)
        layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, kernel_size=3, stride=2,
                                      padding=1, output_padding=1, bias=use_bias),
                   norm_layer(norm, ngf * mult // 2),
                   nn.ReLU(True)]
    return layers


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator: ``in_channels`` bands in, ``out_channels`` bands in [-1, 1]
    out (with ``output="logits"``, ``out_channels`` raw class scores)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        n_blocks: int = 9,
        ngf: int = 64,
        norm: str = "instance",
        dropout: bool = False,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        check_generator_args(in_channels, out_channels, ngf, norm, output)
        if n_blocks < 0:
            raise ModelError(f"n_blocks must be >= 0, got {n_blocks}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        use_bias = norm != "batch"
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7, padding=0, bias=use_bias),
            norm_layer(norm, ngf),
            nn.ReLU(True),
        ]
        layers += _down_and_blocks(ngf, n_blocks, norm, dropout, use_bias)
        layers += _up(ngf, norm, use_bias)
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, kernel_size=7, padding=0)]
        if output == "tanh":
            layers.append(nn.Tanh())
        self.model = nn.Sequential(*layers)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is (N, in_channels, H, W), H and W multiples of 4, >= 8."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelError(f"ResNet generator expects input of shape (N, {self.in_channels}, "
                             f"H, W), got {tuple(x.shape)}")
        height, width = (int(n) for n in x.shape[-2:])
        if min(height, width) < MIN_INPUT or height % INPUT_MULTIPLE or width % INPUT_MULTIPLE:
            raise ModelError(f"ResNet generator needs height and width that are multiples of "
                             f"{INPUT_MULTIPLE} and at least {MIN_INPUT}, got {height}x{width}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.model(x)
