"""A small-receptive-field generator for near-local mappings: each output pixel from its 3x3
neighbourhood.

For mappings where a pixel's answer lies in the few source pixels around it: a terrain
derivative (a hillshade, a slope) is a fixed 3x3 operator of the DEM; SAR backscatter -> optical
reflectance is close to per-pixel. The U-Net sees its input only through a 4x4 stride-2
convolution and builds its output from half-resolution features, so it must learn each pixel's
neighbourhood back through its levels, and learns such mappings worse and more slowly
(docs/benchmarks.md). Here every layer is at full resolution:

- the first layer sums two paths: 3x3 kernels constrained to sum to zero (local differences: a
  slope, an edge, a texture, unmoved by the window's level), and a 1x1 convolution of the values
  themselves, started at zero. Split so, an input whose answer is in its differences (elevation:
  the relief is hundreds of times the step between two pixels) need not first learn kernels that
  cancel its level to a thousandth;
- ``layers - 2`` hidden 1x1 convolutions (a per-pixel MLP of those features), ``ngf`` wide,
  LeakyReLU(0.2) after each, no norm (a pixel's prediction depends on its neighbourhood alone,
  never on the window or the batch: no seams, no train/eval gap);
- a 1x1 output layer, then tanh (or raw class scores: ``output="logits"``).

With ``validity`` (``train --validity-band``) the last input channel is the source's validity (1
valid, 0 nodata) and the differences are taken over valid neighbours only: a kernel's term of an
invalid neighbour counts it at the centre pixel's value, as gdaldem counts a void's neighbour, so
a fill put into a void never makes a slope beside it.

Borders are reflect-padded. PyTorch's default (He-uniform) initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geopix2pix.errors import ModelError
from geopix2pix.settings.families import LOCAL_LAYERS

MIN_LAYERS, MAX_LAYERS = LOCAL_LAYERS


class LocalDifferences(nn.Module):
    """3x3 zero-sum kernels of the input plus a 1x1 map of its values (zero at the start); with
    ``validity``, the value bands' differences over the valid neighbours alone."""

    def __init__(self, in_channels: int, out_channels: int, validity: bool = False) -> None:
        super().__init__()
        self.differences = nn.Conv2d(in_channels, out_channels, 3)
        self.values = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.validity = validity
        nn.init.zeros_(self.values.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel = self.differences.weight
        kernel = kernel - kernel.mean((2, 3), keepdim=True)
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        if not self.validity:
            return F.conv2d(padded, kernel, self.differences.bias) + self.values(x)
        return self._valid_differences(x, padded, kernel) + self.values(x)

    def _valid_differences(self, x: torch.Tensor, padded: torch.Tensor,
                           kernel: torch.Tensor) -> torch.Tensor:
        """sum over neighbours q of k_q * valid_q * (z_q - z_p) for each value band z and centre
        p (= k * (valid z) - z_p * (k * valid)), plus the validity band's own differences; one
        band at a time, so memory stays that of the output whatever the band count."""
        values, valid = padded[:, :-1], padded[:, -1:]
        out = F.conv2d(values * valid, kernel[:, :-1], self.differences.bias)
        out = out + F.conv2d(valid, kernel[:, -1:])
        for band in range(values.shape[1]):
            out = out - F.conv2d(valid, kernel[:, band:band + 1]) * x[:, band:band + 1]
        return out


class LocalNet(nn.Module):
    """``in_channels`` bands in (with ``validity``, the last is the source's validity),
    ``out_channels`` bands in [-1, 1] (or class scores) out, on any height and width (at least
    2 x 2)."""

    def __init__(self, in_channels: int, out_channels: int, ngf: int = 64, layers: int = 3,
                 output: str = "tanh", validity: bool = False) -> None:
        super().__init__()
        if not MIN_LAYERS <= layers <= MAX_LAYERS:
            raise ModelError(f"the local generator takes {MIN_LAYERS} to {MAX_LAYERS} layers, "
                             f"got {layers}")
        self.in_channels, self.out_channels = in_channels, out_channels
        body: list[nn.Module] = [LocalDifferences(in_channels, ngf, validity),
                                 nn.LeakyReLU(0.2, True)]
        for _ in range(layers - 2):
            body += [nn.Conv2d(ngf, ngf, 1), nn.LeakyReLU(0.2, True)]
        body.append(nn.Conv2d(ngf, out_channels, 1))
        if output == "tanh":
            body.append(nn.Tanh())
        self.model = nn.Sequential(*body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ModelError(f"the local generator expects input of shape "
                             f"(N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.model(x)
