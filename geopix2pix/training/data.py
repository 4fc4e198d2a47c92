"""Data loading for training: reproducible batch order and augmentation, resumable mid-epoch.

The order of an epoch's batches is a function of (seed, epoch) and each batch's augmentation a
function of (seed, step), so a resumed run sees exactly the batches the uninterrupted run would
have seen, even when it stopped in the middle of an epoch. Loading never draws from the global
RNG (the loader has its own generator), so dropout draws are unaffected by worker start-ups.
Under DDP the batch sampler gives each rank its slice of every global batch.
"""

from __future__ import annotations

import os
from functools import partial

import torch
from torch.utils.data import DataLoader, Sampler

from geopix2pix.chips.dataset import PAIRED_TENSORS, augment_chips
from geopix2pix.runtime.stopping import ignore_stop_signals

from .device import DeviceSetup


class EpochBatchSampler(Sampler):
    """Shuffled batches of indices, the same for the same (seed, epoch); can skip done ones.

    With ``world_size`` ranks, one step takes a global batch of ``batch_size * world_size``
    indices, cut from the same order a single process with that batch size would use, and rank
    ``r`` takes the ``r``-th slice of ``batch_size`` of it: the ranks' batches are disjoint and
    together they are exactly the one-process run's batches (a DistributedSampler that keeps
    the global order). ``skip`` and ``batches_per_epoch`` count global batches (steps).
    """

    def __init__(self, size: int, batch_size: int, seed: int, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, with_epoch: bool = False) -> None:
        self.size = size
        # (epoch, index) items: a dataset that draws per epoch (`ChipDataset(unpaired=True)`)
        # then draws the same in persistent loader workers, whose copy never sees `set_epoch`
        self.with_epoch = with_epoch
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.drop_last = shuffle and size >= self.global_batch
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Serve ``epoch``'s batches, leaving out its first ``skip`` (already trained on)."""
        self.epoch, self.skip = epoch, skip

    def batches_per_epoch(self) -> int:
        full, rest = divmod(self.size, self.global_batch)
        return full if self.drop_last else full + (rest > 0)

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        for index in range(self.skip, self.batches_per_epoch()):
            start = index * self.global_batch + self.rank * self.batch_size
            batch = order[start:min(start + self.batch_size, (index + 1) * self.global_batch)]
            if batch:  # a short last global batch (no drop_last) may leave a rank nothing
                yield [(self.epoch, i) for i in batch] if self.with_epoch else batch

    def __len__(self) -> int:
        first = self.rank * self.batch_size  # this rank's offset in a global batch
        return sum(1 for index in range(self.skip, self.batches_per_epoch())
                   if index * self.global_batch + first < self.size)


def make_loader(dataset, sampler: EpochBatchSampler, workers: int, setup: DeviceSetup,
                seed: int) -> DataLoader:
    """A DataLoader over ``dataset`` in ``sampler``'s batches (pinned, persistent on CUDA)."""
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=setup.is_cuda,
        persistent_workers=workers > 0,
        worker_init_fn=partial(ignore_stop_signals, main=os.getpid()) if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if workers > 0 else None,
    )


def augment_batch(batch: dict, mode: str, seed: int, step: int,
                  groups: tuple[tuple[str, ...], ...] = (PAIRED_TENSORS,)) -> dict:
    """Apply ``mode`` (none|flip|d4) to each chip of a batch, drawn from (seed, step) alone,
    so a resumed run and any number of loader workers draw the same: one transform per chip
    for all the tensors of a group (a pair's bands and validity masks; an unpaired item's
    ``UNPAIRED_GROUPS``, each domain's chip its own)."""
    if mode == "none":
        return batch
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step + 7)
    augmented = dict(batch)
    for group in groups:
        keys = [key for key in group if key in batch]
        parts = [augment_chips(chip, mode, generator) for chip in zip(*(batch[k] for k in keys))]
        augmented.update({key: torch.stack(items) for key, items in zip(keys, zip(*parts))})
    return augmented


UNPAIRED_GROUPS = (("source", "source_valid"), ("target", "target_valid"))
