"""The sizes of a demo run, torch-free so that `geopix2pix demo --help` starts fast."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DemoSettings:
    """Sizes of a demo run. The defaults take about five minutes on a 2-core CPU."""

    n_train: int = 2
    train_size: int = 768
    heldout_size: int = 512
    chip_size: int = 64
    stride: int = 32
    split_block: int = 256  # side of the spatial blocks given whole to train or val
    ngf: int = 16
    ndf: int = 16
    batch_size: int = 8
    max_steps: int = 800
    device: str = "auto"
    workers: int | None = None

    @classmethod
    def small(cls) -> DemoSettings:
        """A run of a few dozen seconds, for tests and a first look."""
        return cls(n_train=1, train_size=256, heldout_size=192, split_block=128, max_steps=150)
