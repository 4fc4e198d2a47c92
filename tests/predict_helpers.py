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
from geopix2pix.raster.band_metadata import BandMetadata


def side(bands, dtype, nodata, scaling: Scaling, descriptions=None, raster_bands=None,
         band_metadata: BandMetadata | None = None, classes=None) -> SideMetadata:
    return SideMetadata(list(bands), dtype, nodata,
                        descriptions or [f"band {b}" for b in bands], scaling, raster_bands,
                        band_metadata or BandMetadata(), classes)


def metadata(in_ch=3, out_ch=1, target_dtype="float32", target_nodata=-9999.0,
             target_scaling=None, source_scaling=None, descriptions=None, pixel_size=(30, 30),
             crs="EPSG:32633", chip_size=64, source_bands=None,
             source_raster_bands=None, classes=None,
             target_band_metadata: BandMetadata | None = None,
             ground_pixel_size=None) -> dict:
    """A model file's metadata; with `classes` (the codes of the `out_ch` channels) that of a
    categorical model of a one-band target."""
    target_bands = out_ch if classes is None else 1
    source_scaling = source_scaling or Scaling("percentile", (0.0,) * in_ch, (255.0,) * in_ch)
    target_scaling = target_scaling or Scaling("minmax", (100.0,) * target_bands,
                                               (3000.0,) * target_bands)
    return ModelMetadata(side(source_bands or range(1, in_ch + 1), "uint8", 0.0, source_scaling,
                              raster_bands=source_raster_bands),
                         side(range(1, target_bands + 1), target_dtype, target_nodata,
                              target_scaling, descriptions, band_metadata=target_band_metadata,
                              classes=classes),
                         chip_size, crs, pixel_size, version="0.1.0",
                         ground_pixel_size=ground_pixel_size).to_dict()


def _spec(in_ch: int, out_ch: int, meta: dict, **fields) -> GeneratorSpec:
    """A 64-pixel U-Net's spec: logits for a categorical model (`meta` has classes)."""
    output = "tanh" if meta.get("classes") is None else "logits"
    return GeneratorSpec(name="unet", in_channels=in_ch, out_channels=out_ch, chip_size=64,
                         output=output, **fields)


def unet_file(path, in_ch=3, out_ch=1, **meta) -> str:
    """A real (untrained) U-Net model file."""
    spec = _spec(in_ch, out_ch, meta, ngf=4)
    torch.manual_seed(0)
    save_model(path, init_weights(build(spec)).eval(), spec,
               metadata(in_ch, out_ch, **meta))
    return str(path)


def loaded(module: nn.Module, in_ch=3, out_ch=1, **meta) -> LoadedModel:
    """A LoadedModel around any module (stand-in generators for seam/equivariance tests)."""
    return LoadedModel(module.eval(), _spec(in_ch, out_ch, meta), metadata(in_ch, out_ch, **meta))


# a categorical target: uint8 land cover codes with nodata 255 and a colour table
CLASSES = [10, 20, 30, 40]
PALETTE = tuple((17 * i % 256, 40 * i % 256, 200 - 4 * i, 255) for i in range(50))
LAND_COVER = BandMetadata(units=(None,), scales=(1.0,), offsets=(0.0,), colorinterp=("palette",),
                          colormap=PALETTE)


def categorical_meta(classes=None, **meta) -> dict:
    """`metadata` keywords of a categorical model of the land cover target (`CLASSES`)."""
    return {"classes": list(classes or CLASSES), "target_dtype": "uint8", "target_nodata": 255.0,
            "descriptions": ["land cover"], "target_band_metadata": LAND_COVER,
            "target_scaling": Scaling("minmax", (10.0,), (40.0,)), **meta}


class PixelLogits(nn.Module):
    """Class scores that are a fixed function of each input pixel alone: minus the distance of
    band 1 from each class's centre (`CENTRES`, in DNs of the helpers' percentile 0..255 source
    scaling), so the argmax is the class of the nearest centre. Translation-equivariant: every
    window gives a pixel the same scores. The midpoints between centres are half DNs, so no
    integer pixel is near a tie (scores differ by at least 0.25)."""

    CENTRES = (40.0, 101.0, 160.0, 221.0)

    def __init__(self):
        super().__init__()
        scaled = (torch.tensor(self.CENTRES) - 127.5) / 127.5  # as the source scaling maps DNs
        self.centres = nn.Parameter(scaled.view(1, -1, 1, 1), requires_grad=False)

    def forward(self, x):
        return -32.0 * (x[:, :1] - self.centres).abs()

    @classmethod
    def expected(cls, band1: np.ndarray) -> np.ndarray:
        """The code of each pixel's nearest centre, from band 1's DNs (rows, cols)."""
        distance = np.abs(band1[None].astype(float) - np.array(cls.CENTRES)[:, None, None])
        return np.array(CLASSES, dtype="uint8")[distance.argmin(0)]


class PixelValue(nn.Module):
    """Output = band 1 of the scaled input, pixel by pixel: with the helpers' percentile 0..255
    source scaling and a minmax 0..255 target scaling, each pixel's band 1 DN."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1), requires_grad=False)

    def forward(self, x):
        return x[:, :1] + self.dummy


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
