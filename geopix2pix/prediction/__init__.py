"""Prediction: seamless sliding-window inference into GeoTIFFs on the input's exact grid, and
evaluation of predictions against references.

``predict(scene, out, model=...)`` (see `predictor`) and ``evaluate(pred, reference)`` (see
`evaluate`). Modules: `windows` (window lattice, padded reads), `blend` (Hann weights, strip
accumulator), `pipeline` (overlapped read/compute/blend/write), `writer` (values and GeoTIFF/COG
output), `checks` (scene vs model), `options` (predict's options), `resample` (--resample-to-model).
"""

from __future__ import annotations

from geopix2pix.prediction.predictor import SceneResult, predict, predict_scenes
from geopix2pix.settings.predict import PredictKeywords, PredictOptions

__all__ = ["PredictKeywords", "PredictOptions", "SceneResult", "predict", "predict_scenes"]

# `evaluate` lives in geopix2pix.prediction.evaluate (the module and its function share the name);
# the package top level exposes the function as geopix2pix.evaluate.
