"""geopix2pix: Pix2Pix image-to-image translation for georeferenced rasters.

The Python API under the `geopix2pix` command. Its layers, earliest first; each imports only
from itself and earlier ones (tests/test_layers.py checks it):
- `errors`, `jsonvalues`, `metrics`: shared support;
- `runtime`: device selection, torchrun ranks, stopping, output folders;
- `raster`: raster I/O, grids, writing, the blend windows;
- `settings`: every command's options, declared once and torch-free;
- `chips`: chip export and the chip dataset;
- `models`: the generators, discriminators and the model file;
- `training`: training runs;
- `prediction`: its `engine` (rasters through a model into GeoTIFFs, window by window) and the
  per-scene API above it; it never imports training;
- `evaluation`: predictions against reference rasters;
- `demo`, `plot`: the demo run and the quicklooks;
- `cli`: the commands, a thin skin over the rest (nothing imports it).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "GeoPix2PixError", "GeoPix2PixWarning", "export_chips", "ChipDataset",
           "train", "predict", "evaluate", "load_model", "make_demo_scenes", "run_demo",
           "show_chips", "show_results", "plot_metrics", "plot_footprints", "write_quicklook",
           "ExportSummary", "TrainResult", "SceneResult", "EvaluationReport", "LoadedModel",
           "ModelMetadata", "DemoScenes", "DemoRecipe", "DemoResult", "DemoSettings"]

from typing import TYPE_CHECKING

from geopix2pix.errors import GeoPix2PixError, GeoPix2PixWarning

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time `_LAZY` imports on first use
    from geopix2pix.chips.dataset import ChipDataset
    from geopix2pix.chips.export import export_chips
    from geopix2pix.chips.summary import ExportSummary
    from geopix2pix.demo.pipeline import DemoResult, run_demo
    from geopix2pix.demo.recipes import DemoRecipe
    from geopix2pix.demo.scenes import DemoScenes, make_demo_scenes
    from geopix2pix.evaluation.evaluate import EvaluationReport, evaluate
    from geopix2pix.models.io import LoadedModel, load_model
    from geopix2pix.models.metadata import ModelMetadata
    from geopix2pix.plot import (
        plot_footprints,
        plot_metrics,
        show_chips,
        show_results,
        write_quicklook,
    )
    from geopix2pix.prediction.predictor import SceneResult, predict
    from geopix2pix.settings.demo import DemoSettings
    from geopix2pix.training.trainer import TrainResult, train

_LAZY = {
    "export_chips": "geopix2pix.chips.export:export_chips",
    "ChipDataset": "geopix2pix.chips.dataset:ChipDataset",
    "train": "geopix2pix.training.trainer:train",
    "load_model": "geopix2pix.models.io:load_model",
    "predict": "geopix2pix.prediction.predictor:predict",
    "evaluate": "geopix2pix.evaluation.evaluate:evaluate",
    "make_demo_scenes": "geopix2pix.demo.scenes:make_demo_scenes",
    "run_demo": "geopix2pix.demo.pipeline:run_demo",
    "show_chips": "geopix2pix.plot:show_chips",
    "show_results": "geopix2pix.plot:show_results",
    "plot_metrics": "geopix2pix.plot:plot_metrics",
    "plot_footprints": "geopix2pix.plot:plot_footprints",
    "write_quicklook": "geopix2pix.plot:write_quicklook",
    # what they return
    "ExportSummary": "geopix2pix.chips.summary:ExportSummary",
    "TrainResult": "geopix2pix.training.trainer:TrainResult",
    "SceneResult": "geopix2pix.prediction.predictor:SceneResult",
    "EvaluationReport": "geopix2pix.evaluation.evaluate:EvaluationReport",
    "LoadedModel": "geopix2pix.models.io:LoadedModel",
    "ModelMetadata": "geopix2pix.models.metadata:ModelMetadata",
    "DemoScenes": "geopix2pix.demo.scenes:DemoScenes",
    "DemoRecipe": "geopix2pix.demo.recipes:DemoRecipe",
    "DemoResult": "geopix2pix.demo.pipeline:DemoResult",
    "DemoSettings": "geopix2pix.settings.demo:DemoSettings",  # what sizes a demo run
}


def __getattr__(name: str) -> object:
    # Imported lazily so `import geopix2pix` stays light and the train/predict paths never pull
    # in geopandas (or matplotlib, which only the plotting helpers use).
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name].split(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'geopix2pix' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The lazy names too: tab completion and ``dir(geopix2pix)`` show the whole API."""
    return sorted({*globals(), *__all__})
