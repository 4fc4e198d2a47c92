"""Helpers for the prediction tests: tiny model files, stand-in generators and scenes."""

from __future__ import annotations

import threading

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from geopix2pix.chips.scaling import Scaling
from geopix2pix.models import GeneratorSpec, LoadedModel, init_weights, save_model
from geopix2pix.models import build_generator as build
from geopix2pix.models.metadata import ModelMetadata, SideMetadata


def side(bands, dtype, nodata, scaling: Scaling, descriptions=None,
         raster_bands=None) -> SideMetadata:
    return SideMetadata(list(bands), dtype, nodata,
                        descriptions or [f"band {b}" for b in bands], scaling, raster_bands)


def metadata(in_ch=3, out_ch=1, target_dtype="float32", target_nodata=-9999.0,
             target_scaling=None, source_scaling=None, descriptions=None, pixel_size=(30, 30),
             crs="EPSG:32633", chip_size=64, source_bands=None,
             source_raster_bands=None) -> dict:
    source_scaling = source_scaling or Scaling("percentile", (0.0,) * in_ch, (255.0,) * in_ch)
    target_scaling = target_scaling or Scaling("minmax", (100.0,) * out_ch, (3000.0,) * out_ch)
    return ModelMetadata(side(source_bands or range(1, in_ch + 1), "uint8", 0.0, source_scaling,
                              raster_bands=source_raster_bands),
                         side(range(1, out_ch + 1), target_dtype, target_nodata, target_scaling,
                              descriptions),
                         chip_size, crs, pixel_size, version="0.1.0").to_dict()


def unet_file(path, in_ch=3, out_ch=1, **meta) -> str:
    """A real (untrained) U-Net model file."""
    spec = GeneratorSpec(name="unet", in_channels=in_ch, out_channels=out_ch, chip_size=64, ngf=4)
    torch.manual_seed(0)
    save_model(path, init_weights(build(spec)).eval(), spec,
               metadata(in_ch, out_ch, **meta))
    return str(path)


def loaded(module: nn.Module, in_ch=3, out_ch=1, **meta) -> LoadedModel:
    """A LoadedModel around any module (stand-in generators for seam/equivariance tests)."""
    spec = GeneratorSpec(name="unet", in_channels=in_ch, out_channels=out_ch, chip_size=64)
    return LoadedModel(module.eval(), spec, metadata(in_ch, out_ch, **meta))


class RandomOffset(nn.Module):
    """Output = a random constant per window: varies from window to window."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.gen = torch.Generator().manual_seed(0)

    def forward(self, x):
        n, _, h, w = x.shape
        return (torch.rand(n, 1, 1, 1, generator=self.gen) * 1.6 - 0.8).expand(n, 1, h, w)


class ConvModel(nn.Module):
    """A 5x5 convolution (zero padding) + tanh: translation-equivariant away from edges."""

    def __init__(self, in_ch=3):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(in_ch, 1, 5, padding=2)

    def forward(self, x):
        return torch.tanh(self.conv(x))


def write_scene(path, width, height, crs="EPSG:32633", transform=None, count=3, dtype="uint8",
                nodata=0, seed=0, data=None, **profile) -> str:
    transform = transform or from_origin(500000.0, 4_000_000.0, 30.0, 30.0)
    if data is None:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width]
        smooth = (np.sin(xx / 17.0) + np.cos(yy / 23.0)) * 60 + 128
        data = np.clip(smooth[None] + rng.normal(0, 10, (count, height, width)), 1, 254)
        data = data.astype(dtype)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=count,
                       dtype=dtype, crs=crs, transform=transform, nodata=nodata,
                       **profile) as dst:
        dst.write(data)
    return str(path)


def pipeline_threads() -> list[str]:
    """The predict pipeline's threads still alive (none once predict has returned)."""
    return [t.name for t in threading.enumerate() if t.name.startswith("geopix2pix")]


IDENTITY = Scaling("minmax", (-1.0,), (1.0,))


def whole_scene_conv(scene, conv: torch.nn.Conv2d) -> np.ndarray:
    """ConvModel over the whole reflect-padded scene at once: what seam-free windows give."""
    with rasterio.open(scene) as src:
        scaled = Scaling("percentile", (0.0,) * 3, (255.0,) * 3).forward(
            src.read(), np.ones((src.height, src.width), bool))
    padded = torch.from_numpy(np.pad(scaled, ((0, 0), (2, 2), (2, 2)), mode="reflect"))[None]
    with torch.no_grad():
        return torch.tanh(torch.nn.functional.conv2d(padded, conv.weight, conv.bias))[0, 0].numpy()
