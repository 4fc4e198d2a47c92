"""Where chips go: a regular lattice of windows over each pair's overlap, and a spatial,
block-based train/val split in which no pixel is shared between a train chip and a val chip
(by default with the largest blocks that give val a share near the one asked for)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.grid import Grid, points_in_pixels

_EDGE = 1e-6  # pixels: footprints meeting at a block edge do not touch across it


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


def split_extents(chips: Sequence[ChipWindow], grids: Mapping[int, Grid],
                  origin: tuple[int, int], frame_key: int | None = None) -> np.ndarray:
    """Each chip's (frame, row0, col0, row1, col1): its extent in the split frame, the pixels
    of grid `frame_key` (by default the first pair's source) counted from `origin` (its chip
    lattice's top-left), whatever the chip's own pair's CRS and resolution (the bounding box of
    its densified outline there); frame 0.
    A chip the frame's CRS cannot place (the far side of the Earth) keeps its own pixels, in a
    frame of its pair's (pair + 1), so its blocks are its own."""
    frame = grids[min(grids) if frame_key is None else frame_key]
    extents = np.empty((len(chips), 5))
    by_pair: dict[int, list[int]] = {}
    for i, chip in enumerate(chips):
        by_pair.setdefault(chip.pair, []).append(i)
    for pair, members in by_pair.items():
        grid = grids[pair]
        if grid.is_same(frame):  # exact: the corners, no round trip
            corners = np.array([[(c.col, c.row), (c.col + c.size, c.row + c.size)]
                                for c in (chips[i] for i in members)], dtype=float)
            cols, rows = corners[..., 0], corners[..., 1]
        else:
            outline = np.array([_outline(c) for c in (chips[i] for i in members)], dtype=float)
            xs, ys = grid.transform @ (outline[..., 0], outline[..., 1])
            cols, rows = points_in_pixels(xs.ravel(), ys.ravel(), grid.crs, frame)
            cols, rows = cols.reshape(xs.shape), rows.reshape(ys.shape)
        extents[members] = np.stack([np.zeros(len(members)),
                                     rows.min(1) - origin[0], cols.min(1) - origin[1],
                                     rows.max(1) - origin[0], cols.max(1) - origin[1]], axis=1)
        for i in members:
            if not np.isfinite(extents[i]).all():
                chip = chips[i]
                extents[i] = [pair + 1, chip.row, chip.col, chip.row + chip.size,
                              chip.col + chip.size]
    return extents


EDGE_POINTS = 8  # per chip side: a chip's edges may bend in another CRS (high latitudes)


def _outline(chip: ChipWindow) -> list[tuple[float, float]]:
    """(col, row) points around a chip's outline, corners included."""
    steps = np.linspace(0.0, chip.size, EDGE_POINTS + 1)
    top, left = chip.row, chip.col
    return ([(left + t, top) for t in steps] + [(left + t, top + chip.size) for t in steps]
            + [(left, top + t) for t in steps] + [(left + chip.size, top + t) for t in steps])


def _blocks(extent: np.ndarray, block: int) -> set[tuple[int, int, int]]:
    """The split blocks (frame, row, col) a chip's extent touches (a shared edge is not
    touching)."""
    r0, c0, r1, c1 = (extent[1:] + [_EDGE, _EDGE, -_EDGE, -_EDGE]) / block
    return {(int(extent[0]), br, bc) for br in range(math.floor(r0), math.floor(r1) + 1)
            for bc in range(math.floor(c0), math.floor(c1) + 1)}


def assign_splits(extents: np.ndarray, block: int, val_fraction: float,
                  seed: int) -> list[str | None]:
    """'train', 'val' or None (straddles both: dropped) for each chip, from `split_extents`.

    The split frame (the first pair's source grid, from its chip lattice's origin) is cut into
    square blocks of `block` pixels, shared by every pair: scenes over the same ground (several
    dates, or overlapping scenes in other CRSs) get the same split there. Blocks are visited in
    an order shuffled with `seed`; a block goes to val when that brings the val share closer to
    `val_fraction` (never taking every chip); every other block is train. A chip touching
    blocks of both splits is dropped, so no pixel is shared across the split even with
    overlapping chips or scenes.
    """
    touched = [_blocks(extent, block) for extent in extents]
    home = Counter(min(t) for t in touched)
    order = sorted(home)
    np.random.default_rng(seed).shuffle(order)
    wanted = val_fraction * len(extents)
    val_blocks: set[tuple[int, int, int]] = set()
    val_count = 0
    for key in order:
        closer = abs(val_count + home[key] - wanted) < abs(val_count - wanted)
        takes_all = val_count + home[key] >= len(extents) and val_fraction < 1
        if not closer or takes_all:
            continue
        val_blocks.add(key)
        val_count += home[key]
    splits: list[str | None] = []
    for blocks in touched:
        in_val = len(blocks & val_blocks)
        splits.append("val" if in_val == len(blocks) else "train" if in_val == 0 else None)
    return splits


DEFAULT_BLOCKS = (8, 4, 2, 1)  # default --split-block, in chip sizes, tried in turn


def choose_split(extents, split_block: int | None, chip_size: int, val_fraction: float,
            seed: int) -> tuple[list[str | None], int]:
    """The split and the --split-block it used: the one given or, by default, the largest of
    `DEFAULT_BLOCKS` chip sizes whose val share is near `val_fraction` (a small scene holds
    too few big blocks: one may be half of it), else the one nearest it."""
    if split_block is not None:
        return assign_splits(extents, split_block, val_fraction, seed), split_block
    tried = []
    for factor in DEFAULT_BLOCKS:
        splits = assign_splits(extents, factor * chip_size, val_fraction, seed)
        miss = abs(_val_share(splits) - val_fraction)
        if miss <= _share_tolerance(val_fraction):
            return splits, factor * chip_size
        tried.append((miss, -factor, splits))
    miss, factor, splits = min(tried, key=lambda t: t[:2])
    return splits, -factor * chip_size


def _val_share(splits: Sequence[str | None]) -> float:
    kept = [s for s in splits if s is not None]
    return sum(s == "val" for s in kept) / len(kept) if kept else 0.0


def _share_tolerance(val_fraction: float) -> float:
    """How far the val share may be from --val-fraction before it is worth a word."""
    return max(0.05, 0.25 * val_fraction)


def share_is_off(kept: Mapping[str, int], val_fraction: float) -> bool:
    """Whether val's share of the `kept` chips (counts by split) is too far from
    --val-fraction (0: no val asked, never off) to pass without a word."""
    total = kept.get("train", 0) + kept.get("val", 0)
    return bool(val_fraction and total) and \
        abs(kept.get("val", 0) / total - val_fraction) > _share_tolerance(val_fraction)


def no_train_error(val: int, skipped: Mapping[str, int], val_fraction: float, split_block: int,
                   chip_size: int, invalid: bool = False) -> GeoPix2PixError:
    """The error for an export that leaves no chip to train on (`val` chips, all in val): a
    small area cut into few big --split-block blocks, whose chips are either in val or
    straddle it; or train chips all `skipped` (with `invalid`, some for invalid pixels)."""
    dropped = "; ".join(f"{n} {reason}" for reason, n in skipped.items() if n) or "none"
    smaller = (f"a smaller --split-block (down to the chip size, {chip_size}) or "
               if split_block > chip_size else "")
    nodata = " (or a higher --max-nodata)" if invalid else ""
    return GeoPix2PixError(
        f"no train chip: {val} chip(s) in val and none in train (skipped: {dropped}) with "
        f"--split-block blocks of {split_block} px and --val-fraction {val_fraction}; there "
        f"would be nothing to train on: use {smaller}a smaller --val-fraction{nodata}")


def val_warnings(kept: Counter, val_fraction: float, split_block: int, chip_size: int,
                 given: bool = True, straddling: int = 0) -> list[str]:
    """A warning when val was asked for but holds no chip (train then has nothing to validate
    on) or a share far from --val-fraction: few, big blocks (a smaller --split-block is
    suggested only where one was `given`: the default already tried down to the chip size,
    `choose_split`; else another --seed, another draw of the blocks), or, with val short, the
    `straddling` chips dropped (overlapping chips around small blocks: a larger one)."""
    if val_fraction == 0:
        return []
    total = kept["train"] + kept["val"]
    short = val_fraction * (total + straddling) - kept["val"]  # (as if none were dropped)
    if straddling and short > 0 and (not kept["val"] or share_is_off(kept, val_fraction)) \
            and straddling >= short:
        return [f"val holds {kept['val']} of {total} chips ({kept['val'] / max(total, 1):.0%}, "
                f"--val-fraction {val_fraction}): the {straddling} chips straddling train and "
                f"val blocks of {split_block} px were dropped, which takes most from the smaller "
                "side; use a larger --split-block (fewer chips straddle the blocks' edges) or a "
                "--stride nearer the chip size"]
    smaller = (f"a smaller --split-block (down to the chip size, {chip_size}) or "
               if given and split_block > chip_size else "")
    if not kept["val"]:
        return [f"0 val chips: the {kept['train']} chips lie in too few --split-block blocks "
                f"of {split_block} px to give any whole block to val at --val-fraction "
                f"{val_fraction}; use {smaller}a larger --val-fraction"]
    smaller = smaller or ("" if given else "another --seed (another draw of the blocks) or ")
    if not share_is_off(kept, val_fraction):
        return []
    share = kept["val"] / total
    return [f"val holds {kept['val']} of {total} chips ({share:.0%}, --val-fraction "
            f"{val_fraction}): --split-block blocks of {split_block} px are too few to come "
            f"nearer; use {smaller}more data"]
