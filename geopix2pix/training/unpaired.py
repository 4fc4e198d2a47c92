"""`UnpairedChips`: a paired chips folder read as two unpaired collections (for CycleGAN).

Item ``i`` is source chip ``i`` (domain A) and a target chip (domain B) drawn at random from a
generator seeded by (seed, epoch, i), each with its own validity, in the keys of an unpaired
`ChipDataset` item (``source``, ``source_valid``, ``target``, ``target_valid``), so a resumed
run draws the same chips as the uninterrupted one. (With loader workers, which hold their own
copy of the dataset, the epoch stays the one they started with.)
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from geopix2pix.chips.dataset import ChipDataset


class UnpairedChips(Dataset):
    """The chips of ``chips`` (a paired `ChipDataset`), their pairing ignored."""

    def __init__(self, chips: ChipDataset, seed: int) -> None:
        self.chips, self.seed, self.epoch = chips, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.chips)

    def target_index(self, index: int) -> int:
        """The target chip item ``index`` draws in this epoch."""
        return int(np.random.default_rng([self.seed, self.epoch, index]).integers(len(self)))

    def __getitem__(self, index: int) -> dict:
        a, b = self.chips[index], self.chips[self.target_index(index)]
        return {"source": a["source"], "source_valid": a["valid"],
                "target": b["target"], "target_valid": b["valid"]}
