"""Blending overlapping window predictions: the weights and a rolling strip accumulator.

A window's output is weighted by its `--blend` window (`geopix2pix.raster.blend_windows`) along
both axes. A run of windows of one row is weighted and summed at once (`overlap_add` with numpy, or
`fold_segments` with torch where the model's outputs are, on the GPU), and `StripAccumulator` holds
the weighted sums for only the rows that windows still contribute to (at most window + stride rows,
in a buffer of twice that) and the columns of one chunk, never the whole scene.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from geopix2pix.raster.blend_windows import BLEND_WINDOWS


def window_weights(size: int, stride: int, margin: int, blend: str) -> np.ndarray:
    """(size, size) float32 weights of one window's output: the `blend` window's along both
    axes."""
    w1 = BLEND_WINDOWS[blend].weights(size, stride, margin)
    return np.outer(w1, w1).astype(np.float32)


def overlap_add(windows: np.ndarray, stride: int) -> np.ndarray:
    """Sum a row of windows (n, ..., rows, size) placed `stride` columns apart into one block
    (..., rows, (n - 1) * stride + size), in ceil(size / stride) array operations.

    Windows i and i + ceil(size / stride) never overlap, so each residue class of windows is added
    at once through a strided view of the block."""
    n, size = windows.shape[0], windows.shape[-1]
    step = math.ceil(size / stride)
    group_width = step * stride
    room = group_width * math.ceil(n / step) + (step - 1) * stride
    out = np.zeros(windows.shape[1:-1] + (room,), dtype=windows.dtype)
    for first in range(min(step, n)):
        group = windows[first::step]
        start = first * stride
        span = out[..., start:start + group.shape[0] * group_width]
        places = span.reshape(span.shape[:-1] + (group.shape[0], group_width))[..., :size]
        places += np.moveaxis(group, 0, -2)
    return out[..., :(n - 1) * stride + size]


def fold_segments(windows: torch.Tensor, weights: torch.Tensor, lengths: Sequence[int],
                  stride: int) -> list[torch.Tensor]:
    """The weighted sums of consecutive runs of a batch's windows (n, bands, size, size), where
    they are (on the GPU, so only the sums are copied back): `weights` (size, size) times each
    window, then each run of `lengths` windows, placed `stride` columns apart, summed into one
    block (bands, size, (length - 1) * stride + size) by ``F.fold``, as `overlap_add` does."""
    n, bands, size, _ = windows.shape
    weighted = (windows * weights).reshape(n, bands * size * size)
    sums, start = [], 0
    for length in lengths:
        columns = weighted[start:start + length].T.unsqueeze(0)  # (1, bands * size^2, length)
        block = F.fold(columns, (size, (length - 1) * stride + size), size, stride=stride)
        sums.append(block[0])
        start += length
    return sums


class RowWeights:
    """The sums of window weights over a row of `n` windows, and where they are positive (the
    pixels that some window's output reaches), per row length."""

    def __init__(self, weights: np.ndarray, stride: int):
        self.weights, self.stride = weights, stride
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if n not in self._rows:
            sums = overlap_add(np.broadcast_to(self.weights, (n, *self.weights.shape)),
                               self.stride)
            self._rows[n] = sums, sums > 0
        return self._rows[n]


class StripAccumulator:
    """Weighted sums, sums of weights and validity of the output columns [col0, col1) for the rows
    that windows still add to: at most `reach` rows past the first unfinished one.

    The buffers hold twice that many rows; finished rows are popped by moving a start row, and the
    rows still open are moved back to the top only when a block would run past the end, so each
    row is moved about once instead of at every window row."""

    def __init__(self, bands: int, col0: int, col1: int, reach: int, height: int):
        self.col0, self.col1, self.height = col0, col1, height
        width, rows = col1 - col0, 2 * reach
        self.sums = np.zeros((bands, rows, width), dtype=np.float32)
        self.weights = np.zeros((rows, width), dtype=np.float32)
        self.valid = np.zeros((rows, width), dtype=bool)
        self.origin = 0  # scene row of buffer row 0
        self.first = 0  # scene row of the first row not popped yet

    def add(self, sums: np.ndarray, row: int, col: int) -> None:
        """Add a block of weighted sums (bands, rows, cols) at scene (row, col), clipped to the
        scene rows and the chunk's columns."""
        places = self._places(sums.shape[-2:], row, col)
        if places:
            (wr, wc), (br, bc) = places
            self.sums[:, br, bc] += sums[:, wr, wc]

    def add_weights(self, weights: np.ndarray, valid: np.ndarray, row: int, col: int) -> None:
        """Add a block's sums of weights and validity (rows, cols) at scene (row, col)."""
        places = self._places(weights.shape, row, col)
        if places:
            (wr, wc), (br, bc) = places
            self.weights[br, bc] += weights[wr, wc]
            self.valid[br, bc] |= valid[wr, wc]

    def _places(self, shape: tuple[int, int], row: int, col: int):
        """((block rows, block cols), (buffer rows, buffer cols)) where a block of `shape` at
        scene (row, col) lands, or None when it lands on no open row or column."""
        rows, cols = shape
        r0, r1 = max(row, self.first, 0), min(row + rows, self.height)
        c0, c1 = max(col, self.col0), min(col + cols, self.col1)
        if r0 >= r1 or c0 >= c1:
            return None
        if r1 - self.origin > self.weights.shape[0]:
            self._compact()
        return ((slice(r0 - row, r1 - row), slice(c0 - col, c1 - col)),
                (slice(r0 - self.origin, r1 - self.origin), slice(c0 - self.col0, c1 - self.col0)))

    def _compact(self) -> None:
        """Move the rows from `first` on to the top of the buffers and zero the rest."""
        done = self.first - self.origin
        for arr in (self.sums, self.weights[None], self.valid[None]):
            rest = arr.shape[1] - done
            arr[:, :rest] = arr[:, done:]
            arr[:, rest:] = 0
        self.origin = self.first

    def pop(self, until: int) -> tuple[int, np.ndarray, np.ndarray]:
        """Finished rows [first, until): (first row, blended (bands, rows, cols), valid)."""
        first = self.first
        rows = slice(first - self.origin, max(min(until, self.height), first) - self.origin)
        blended = self.sums[:, rows] / np.maximum(self.weights[rows], 1e-12)
        valid = self.valid[rows].copy()
        self.first += blended.shape[1]
        return first, blended, valid
