"""Prediction: seamless sliding-window inference into GeoTIFFs on the input's exact grid, and
evaluation of predictions against references.

``predict(scene, out, model=...)`` (see `predictor`) and ``evaluate(pred, reference)`` (see
`evaluate`). Modules: `windows` (window lattice, padded reads), `blend` (Hann weights, strip
accumulator), `pipeline` (overlapped read/compute/blend/write), `writer` (values and GeoTIFF/COG
output), `checks` (scene vs model).
"""

from __future__ import annotations

from geopix2pix.prediction.predictor import PredictOptions, SceneResult, predict, predict_scenes

__all__ = ["PredictOptions", "SceneResult", "predict", "predict_scenes", "evaluate",
           "EvaluationReport"]


def __getattr__(name: str):
    if name in ("evaluate", "EvaluationReport"):
        from geopix2pix.prediction import evaluate as module

        return getattr(module, name)
    raise AttributeError(f"module 'geopix2pix.prediction' has no attribute {name!r}")
