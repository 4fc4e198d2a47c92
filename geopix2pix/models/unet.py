"""U-Net generator of Pix2Pix (Isola et al. 2017), for any number of input and output bands.

The module tree mirrors ``UnetGenerator``/``UnetSkipConnectionBlock`` of the reference
implementation (junyanz/pytorch-CycleGAN-and-pix2pix), so layer names, parameter counts and the
forward computation are the same: 4x4 stride-2 convolutions, LeakyReLU(0.2) in the encoder, ReLU
in the decoder, a skip concatenation at every level, dropout 0.5 in the ``depth - 5`` ngf*8
decoder blocks next to the bottleneck, and a tanh output (or, for a categorical target, one raw
score per class: ``output="logits"``). Convolutions carry a bias only when the norm is not batch
norm (batch norm's shift makes it redundant).

The depth is ``log2(chip_size)``, so the innermost feature map of a chip is 1x1.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from geopix2pix.errors import ModelError
from geopix2pix.settings.families import NORMS

OUTPUTS = ("tanh", "logits")  # values in [-1, 1]; one raw score (logit) per class
MIN_DEPTH = 5  # the outer four levels plus the innermost one


def norm_layer(norm: str, channels: int) -> nn.Module:
    """Norm layer as the reference's ``get_norm_layer``: affine batch norm, plain instance norm."""
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    raise ModelError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")


def check_generator_args(in_channels: int, out_channels: int, ngf: int, norm: str,
                         output: str) -> None:
    """Raise ValueError for a norm or output geopix2pix does not know, or a size below 1."""
    if output not in OUTPUTS:
        raise ModelError(f"unknown output {output!r}; expected one of {', '.join(OUTPUTS)}")
    if norm not in NORMS:
        raise ModelError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    if min(in_channels, out_channels, ngf) < 1:
        raise ModelError("in_channels, out_channels and ngf must be positive")


def depth_for_chip_size(chip_size: int) -> int:
    """Number of down-samplings that bring a ``chip_size`` chip to 1x1 (chip must be 2**k)."""
    if chip_size < 2**MIN_DEPTH or chip_size & (chip_size - 1):
        raise ModelError(
            f"U-Net chip size must be a power of two >= {2**MIN_DEPTH} (e.g. 64, 128, 256, 512, "
            f"1024), got {chip_size}"
        )
    return int(math.log2(chip_size))


class UnetSkipConnectionBlock(nn.Module):
    """One U-Net level: down-sample, run the inner levels, up-sample, concatenate the skip.

    Like the reference, the encoder's LeakyReLU runs in place, so the skip carries the activated
    input of the level; the outermost block has no activation before its first conv.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
        tanh: bool = True,
    ) -> None:
        super().__init__()
        self.outermost = outermost
        use_bias = norm != "batch"
        input_nc = outer_nc if input_nc is None else input_nc
        downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=use_bias)
        downrelu = nn.LeakyReLU(0.2, True)
        uprelu = nn.ReLU(True)
        layers: list[nn.Module]
        if outermost:
            upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1)
            layers = [downconv, submodule, uprelu, upconv] + ([nn.Tanh()] if tanh else [])
        elif innermost:
            # No norm after the innermost down-conv: its output is 1x1 for a chip, where instance
            # norm is undefined (a single value per channel; PyTorch refuses it in training) and
            # would erase the whole bottleneck code. The reference omits this norm too.
            upconv = nn.ConvTranspose2d(
                inner_nc, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            layers = [downrelu, downconv, uprelu, upconv, norm_layer(norm, outer_nc)]
        else:
            upconv = nn.ConvTranspose2d(
                inner_nc * 2, outer_nc, kernel_size=4, stride=2, padding=1, bias=use_bias
            )
            down = [downrelu, downconv, norm_layer(norm, inner_nc)]
            up = [uprelu, upconv, norm_layer(norm, outer_nc)]
            layers = down + [submodule] + up + ([nn.Dropout(0.5)] if use_dropout else [])
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """Pix2Pix U-Net: ``in_channels`` bands in, ``out_channels`` bands in [-1, 1] out (with
    ``output="logits"``, ``out_channels`` raw class scores).

    Input height and width must be multiples of ``2**depth`` (the chip size it was built for).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        depth: int,
        ngf: int = 64,
        norm: str = "batch",
        dropout: bool = True,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        if depth < MIN_DEPTH:
            raise ModelError(f"U-Net depth must be >= {MIN_DEPTH}, got {depth}")
        check_generator_args(in_channels, out_channels, ngf, norm, output)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.depth = depth
        block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
        for _ in range(depth - MIN_DEPTH):
            block = UnetSkipConnectionBlock(
                ngf * 8, ngf * 8, submodule=block, norm=norm, use_dropout=dropout
            )
        for mult in (4, 2, 1):
            block = UnetSkipConnectionBlock(ngf * mult, ngf * mult * 2, submodule=block, norm=norm)
        self.model = UnetSkipConnectionBlock(
            out_channels, ngf, input_nc=in_channels, submodule=block, outermost=True, norm=norm,
            tanh=output == "tanh",
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless x is (N, in_channels, H, W), H and W multiples of 2**depth."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelError(
                f"U-Net expects input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        step = 2**self.depth
        height, width = x.shape[-2:]
        if height % step or width % step:
            raise ModelError(
                f"U-Net of depth {self.depth} needs height and width that are multiples of {step}, "
                f"got {height}x{width}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.model(x)
