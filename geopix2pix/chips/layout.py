"""Where chips go: a regular lattice of windows over each pair's overlap, and a spatial,
block-based train/val split in which no pixel is shared between a train chip and a val chip."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window


@dataclass(frozen=True)
class ChipWindow:
    """A chip's place: pair index and top-left offset in the pair's source pixels."""

    pair: int
    row: int
    col: int
    size: int

    @property
    def window(self) -> Window:
        return Window(self.col, self.row, self.size, self.size)

    @property
    def id(self) -> str:
        return f"p{self.pair:03d}_r{self.row:06d}_c{self.col:06d}"


def lattice(start: int, length: int, size: int, stride: int) -> list[int]:
    """Offsets of chips of `size` every `stride` pixels in [start, start + length), the last one
    moved back to end exactly at the edge so the whole extent is covered."""
    if length < size:
        return []
    offsets = list(range(start, start + length - size + 1, stride))
    if offsets[-1] != start + length - size:
        offsets.append(start + length - size)
    return offsets


def chip_windows(pair: int, overlap: Window, size: int, stride: int) -> list[ChipWindow]:
    """All candidate chips of a pair inside its overlap window (row-major, the files' order)."""
    rows = lattice(int(overlap.row_off), int(overlap.height), size, stride)
    cols = lattice(int(overlap.col_off), int(overlap.width), size, stride)
    return [ChipWindow(pair, r, c, size) for r in rows for c in cols]


def _blocks(chip: ChipWindow, origin: tuple[int, int], block: int) -> set[tuple[int, int, int]]:
    """The split blocks a chip touches."""
    r0, c0 = chip.row - origin[0], chip.col - origin[1]
    return {(chip.pair, br, bc)
            for br in range(r0 // block, (r0 + chip.size - 1) // block + 1)
            for bc in range(c0 // block, (c0 + chip.size - 1) // block + 1)}


def assign_splits(chips: Sequence[ChipWindow], origins: dict[int, tuple[int, int]], block: int,
                  val_fraction: float, seed: int) -> list[str | None]:
    """'train', 'val' or None (straddles both: dropped) for each chip.

    Each pair's source is cut into square blocks of `block` pixels anchored at its chip lattice's
    origin. Blocks are visited in an order shuffled with `seed`; a block goes to val when that
    brings the val share closer to `val_fraction` (never taking every chip); every other block is
    train. A chip touching blocks of both
    splits is dropped, so no pixel is shared across the split even with overlapping chips.
    """
    touched = [_blocks(c, origins[c.pair], block) for c in chips]
    home = Counter(min(t) for t in touched)
    order = sorted(home)
    np.random.default_rng(seed).shuffle(order)
    wanted = val_fraction * len(chips)
    val_blocks: set[tuple[int, int, int]] = set()
    val_count = 0
    for key in order:
        closer = abs(val_count + home[key] - wanted) < abs(val_count - wanted)
        takes_all = val_count + home[key] >= len(chips) and val_fraction < 1
        if not closer or takes_all:
            continue
        val_blocks.add(key)
        val_count += home[key]
    splits: list[str | None] = []
    for blocks in touched:
        in_val = len(blocks & val_blocks)
        splits.append("val" if in_val == len(blocks) else "train" if in_val == 0 else None)
    return splits
