"""Training on a chips folder: ``train(chips_dir, out_dir, **options)``, of a model family
(`families`: Pix2Pix, or CycleGAN with ``model="cyclegan"``, which also writes
model-ba.safetensors).

Options are named like `geopix2pix train`'s (see ``TrainConfig``). A run writes into its folder
model.safetensors (latest), model-best.safetensors, checkpoint.pt, metrics.csv, samples/ and
train.json.
"""

from geopix2pix.settings.train import TrainConfig

from .trainer import TrainingStopped, TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "TrainingStopped", "train"]
