"""geopix2pix: Pix2Pix image-to-image translation for georeferenced rasters.

The Python API under the `geopix2pix` command. Data flows one way: raster I/O and grids
(`geopix2pix.raster`) -> chips (`geopix2pix.chips`) -> model (`geopix2pix.models`) -> training
(`geopix2pix.training`) -> prediction (`geopix2pix.prediction`); `geopix2pix.cli` sits on top.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "export_chips", "ChipDataset", "GeoPix2PixError"]

from geopix2pix.errors import GeoPix2PixError


def __getattr__(name: str):
    # Imported lazily so `import geopix2pix` stays light and the train/predict paths never pull
    # in geopandas.
    if name == "export_chips":
        from geopix2pix.chips.export import export_chips

        return export_chips
    if name == "ChipDataset":
        from geopix2pix.chips.dataset import ChipDataset

        return ChipDataset
    raise AttributeError(f"module 'geopix2pix' has no attribute {name!r}")
