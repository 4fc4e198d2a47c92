"""The model as prediction runs it: its generator, its file's metadata and the output it writes.

A `PredictionModel` is made once per `predict` call from a `LoadedModel` (`PredictionModel.of`)
and is what the engine and the per-scene code take, instead of a loaded model and its metadata
travelling side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geopix2pix.models import GeneratorSpec, LoadedModel
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.prediction.engine.writer import OutputSpec


@dataclass(frozen=True)
class PredictionModel:
    """A generator ready to predict with, the metadata of its model file and its `output`: the
    model's target bands, dtype, nodata, band metadata and scaling; for a categorical model (its
    target's class codes) one band of class codes."""

    generator: nn.Module
    spec: GeneratorSpec
    info: ModelMetadata
    output: OutputSpec

    @classmethod
    def of(cls, loaded: LoadedModel, info: ModelMetadata | None = None) -> PredictionModel:
        """`loaded` with its metadata (read from it unless given) and the output it writes."""
        info = ModelMetadata.of(loaded) if info is None else info
        target = info.target
        output = OutputSpec.for_target(target.dtype, loaded.spec.out_channels, target.nodata,
                                       target.descriptions, target.scaling,
                                       target.band_metadata, target.classes)
        return cls(loaded.generator, loaded.spec, info, output)

    @property
    def device(self) -> torch.device:
        """Where the generator's weights are (and so where it runs)."""
        return next(self.generator.parameters()).device

    @property
    def in_channels(self) -> int:
        """The number of scene bands the generator takes (without a validity band, which the
        engine adds)."""
        return self.spec.source_bands
