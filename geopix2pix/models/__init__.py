"""Networks of geopix2pix: the Pix2Pix U-Net and PatchGAN, CycleGAN's ResNet generators, smp
generators, and the model file.

Build networks with ``build_generator(GeneratorSpec(...))`` and ``build_discriminator(...)``;
save a trained generator with ``save_model`` and read it back with ``load_model``; its
metadata reads as a ``ModelMetadata`` (``ModelMetadata.of(loaded)``).
"""

from .factory import GeneratorSpec, build_discriminator, build_generator
from .init import init_weights
from .io import LoadedModel, load_model, save_model
from .metadata import ModelMetadata, SideMetadata

__all__ = [
    "GeneratorSpec",
    "LoadedModel",
    "ModelMetadata",
    "SideMetadata",
    "build_discriminator",
    "build_generator",
    "init_weights",
    "load_model",
    "save_model",
]
