"""Prediction: seamless sliding-window inference into GeoTIFFs on the input's exact grid.

``predict(scene, out, model=...)`` (see `predictor`; its options are `geopix2pix.settings.predict`).
The per-scene API lives here: `predictor` (predict, SceneResult), `checks` (scene vs model),
`grouped` (small scenes in one run), `resample` (--resample-to-model), `distributed` (torchrun).
Below it, `engine` runs rasters through the model into GeoTIFFs window by window. Evaluation of
predictions against references is `geopix2pix.evaluation`.

The names below are imported on first use, so that importing a torch-free module of the package
(such as `engine.windows`) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geopix2pix.prediction.predictor import SceneResult, predict, predict_scenes
    from geopix2pix.settings.predict import PredictKeywords, PredictOptions

__all__ = ["PredictKeywords", "PredictOptions", "SceneResult", "predict", "predict_scenes"]

_LAZY = {"PredictKeywords": "geopix2pix.settings.predict",
         "PredictOptions": "geopix2pix.settings.predict",
         "SceneResult": "geopix2pix.prediction.predictor",
         "predict": "geopix2pix.prediction.predictor",
         "predict_scenes": "geopix2pix.prediction.predictor"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
