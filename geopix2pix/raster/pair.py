"""Reading a source/target raster pair window by window on the source's grid.

The source grid is the reference. The target is read without any resampling when it lies on
the same grid or on a grid shifted by whole pixels (chips are then bit-exact copies); otherwise
through a GDAL warped view onto the source grid, whatever its CRS, resolution or extent.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
from rasterio.windows import Window

from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import open_raster, read_window, warped_view
from geopix2pix.raster.nodata import Override


@dataclass(frozen=True)
class PairRead:
    """One window of a pair: data in each file's dtype and each one's validity (``valid``:
    both together, the pixels a model can learn from)."""

    source: np.ndarray
    target: np.ndarray
    source_valid: np.ndarray
    target_valid: np.ndarray

    @property
    def valid(self) -> np.ndarray:
        return self.source_valid & self.target_valid


class PairReader:
    """Opens a pair once and reads aligned windows from it (one per process or thread). A
    `shift` (dx, dy) in source pixels, where the target's content lies against the source's,
    is corrected: the target is warped onto the source grid moved by it, so its content lands
    where the source's is (resampled, even on the same grid, unless the shift is zero). The
    `nodata` given (source's, target's) are read as the files' nodata tags (`raster.nodata`)."""

    def __init__(self, source: str | os.PathLike, target: str | os.PathLike,
                 source_bands: Sequence[int], target_bands: Sequence[int],
                 resampling: str = "bilinear", shift: tuple[float, float] | None = None,
                 nodata: tuple[Override | None, Override | None] = (None, None)):
        self._stack = ExitStack()
        self.source = self._stack.enter_context(open_raster(source, nodata=nodata[0]))
        self.target_file = self._stack.enter_context(open_raster(target, nodata=nodata[1]))
        self.source_bands = list(source_bands)
        self.target_bands = list(target_bands)
        self.grid = Grid.of(self.source)
        shift = shift if shift is not None and any(shift) else None  # (0, 0): no move
        offset = None if shift else Grid.of(self.target_file).integer_offset(self.grid)
        if offset is not None:
            # target pixel (0, 0) sits at source pixel `offset`: read it directly, no resampling
            self.target, self._shift = self.target_file, (-offset[0], -offset[1])
        else:
            self.target = self._stack.enter_context(
                warped_view(self.target_file, self.grid.moved(*shift) if shift else self.grid,
                            resampling))
            self._shift = (0, 0)

    @property
    def resampled(self) -> bool:
        """True when the target is warped rather than copied pixel for pixel."""
        return self.target is not self.target_file

    def read(self, window: Window) -> PairRead:
        """Read `window` (in source pixels) from both rasters."""
        source, source_valid = read_window(self.source, self.source_bands, window)
        target_window = Window(window.col_off + self._shift[1], window.row_off + self._shift[0],
                               window.width, window.height)
        target, target_valid = read_window(self.target, self.target_bands, target_window)
        return PairRead(source, target, source_valid, target_valid)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> PairReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
