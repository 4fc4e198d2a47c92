"""geopix2pix: Pix2Pix image-to-image translation for georeferenced rasters.

The Python API under the `geopix2pix` command. Data flows one way: raster I/O and grids
(`geopix2pix.raster`) -> chips (`geopix2pix.chips`) -> model (`geopix2pix.models`) -> training
(`geopix2pix.training`) -> prediction (`geopix2pix.prediction`); `geopix2pix.cli` sits on top.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "GeoPix2PixError", "export_chips", "ChipDataset", "train", "predict",
           "evaluate", "load_model", "make_demo_scenes", "run_demo", "show_chips", "show_results",
           "plot_metrics", "plot_footprints"]

from geopix2pix.errors import GeoPix2PixError

_LAZY = {
    "export_chips": "geopix2pix.chips.export:export_chips",
    "ChipDataset": "geopix2pix.chips.dataset:ChipDataset",
    "train": "geopix2pix.training.trainer:train",
    "load_model": "geopix2pix.models.io:load_model",
    "predict": "geopix2pix.prediction.predictor:predict",
    "evaluate": "geopix2pix.prediction.evaluate:evaluate",
    "make_demo_scenes": "geopix2pix.demo.scenes:make_demo_scenes",
    "run_demo": "geopix2pix.demo.pipeline:run_demo",
    "show_chips": "geopix2pix.plot:show_chips",
    "show_results": "geopix2pix.plot:show_results",
    "plot_metrics": "geopix2pix.plot:plot_metrics",
    "plot_footprints": "geopix2pix.plot:plot_footprints",
}


def __getattr__(name: str):
    # Imported lazily so `import geopix2pix` stays light and the train/predict paths never pull
    # in geopandas (or matplotlib, which only the plotting helpers use).
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'geopix2pix' has no attribute {name!r}")
