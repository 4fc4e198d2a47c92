"""Writing predictions: values back to the target's dtype and units, and the output GeoTIFF.

- Values: the blended [-1, 1] output goes through the target's `Scaling.inverse` and `to_dtype`
  (rounded and clipped for integers), the same code that made the training chips.
- Nodata: invalid scene pixels get the target's nodata. A valid pixel whose prediction equals the
  nodata value is nudged off it (to nodata + 1, or - 1 at the top of an integer range; the next
  representable float for floats), so it is not mistaken for nodata. A float target without nodata
  gets NaN. An integer target without nodata gets no nodata value: invalid pixels are 0 and an
  internal GDAL mask (255 = valid) marks them, as GDAL does for masked integer rasters.
- File: tiled 512, compressed with the predictor suited to the dtype, BIGTIFF=IF_SAFER, written in
  row bands aligned to the 512-pixel blocks so no compressed block is written twice. With
  ``cog=True`` the finished tiled GTiff is converted in one pass by GDAL's COG driver, which builds
  the overviews (average for floats, nearest for integers, which may be class maps).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil

from geopix2pix.chips.scaling import Scaling, to_dtype
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.write import COMPRESSIONS, gtiff_profile

BLOCK = 512


@dataclass(frozen=True)
class OutputSpec:
    """What the output raster holds: the model's target bands, dtype, nodata and units."""

    dtype: str
    count: int
    nodata: float | None
    internal_mask: bool
    descriptions: tuple[str | None, ...]
    scaling: Scaling

    @classmethod
    def for_target(cls, dtype: str, count: int, nodata: float | None,
                   descriptions: Sequence[str | None], scaling: Scaling) -> OutputSpec:
        floating = np.issubdtype(np.dtype(dtype), np.floating)
        internal_mask = nodata is None and not floating
        if nodata is None and floating:
            nodata = math.nan
        descs = tuple(descriptions)[:count] + (None,) * max(0, count - len(descriptions))
        return cls(dtype, count, nodata, internal_mask, descs, scaling)


def _nudge(nodata: float, dtype: np.dtype):
    """The value a valid pixel predicted exactly at `nodata` gets instead."""
    if np.issubdtype(dtype, np.integer):
        return nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
    return np.nextafter(dtype.type(nodata), dtype.type(np.inf))


def to_output(blended: np.ndarray, valid: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Blended [-1, 1] (bands, rows, cols) -> values in the target's dtype, nodata where invalid."""
    return finish(spec.scaling.inverse(blended), valid, spec)


def finish(values: np.ndarray, valid: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Values in data units -> the target's dtype (rounded, clipped), nodata where invalid."""
    out = to_dtype(np.nan_to_num(values), spec.dtype)
    if spec.nodata is None:
        out[:, ~valid] = 0
        return out
    if not math.isnan(spec.nodata):
        hit = (out == out.dtype.type(spec.nodata)) & valid
        out[hit] = _nudge(spec.nodata, out.dtype)
    out[:, ~valid] = spec.nodata
    return out


def creation_profile(grid: Grid, spec: OutputSpec, compress: str) -> dict:
    """The tiled, compressed GTiff profile of the output."""
    if compress not in COMPRESSIONS:
        raise ValueError(f"compress {compress!r}: use one of {', '.join(COMPRESSIONS)}")
    profile = gtiff_profile(spec.dtype, spec.count, grid.crs, grid.transform, grid.width,
                            grid.height, spec.nodata, compress=compress, blocksize=BLOCK)
    profile["NUM_THREADS"] = "ALL_CPUS"
    return profile


class BandWriter:
    """Writes finished row strips of column chunks, buffered into block-aligned row bands."""

    def __init__(self, dataset, spec: OutputSpec):
        self.dataset, self.spec = dataset, spec
        self.strips: list[tuple[int, np.ndarray, np.ndarray]] = []
        self.col0: int | None = None
        if any(spec.descriptions):
            for i, desc in enumerate(spec.descriptions, start=1):
                if desc:
                    dataset.set_band_description(i, desc)

    def add(self, row0: int, col0: int, data: np.ndarray, valid: np.ndarray) -> None:
        """Queue rows [row0, row0 + rows) of the chunk starting at `col0`; write full bands."""
        if self.col0 is not None and col0 != self.col0:
            self.flush()
        self.col0 = col0
        if data.shape[1]:
            self.strips.append((row0, data, valid))
        first = self.strips[0][0] if self.strips else row0
        end = row0 + data.shape[1]
        aligned = end // BLOCK * BLOCK
        if aligned > first and aligned - first >= BLOCK:
            self._write(until=aligned)

    def flush(self) -> None:
        if self.strips:
            self._write(until=None)
        self.col0 = None

    def _write(self, until: int | None) -> None:
        first = self.strips[0][0]
        data = np.concatenate([s[1] for s in self.strips], axis=1)
        valid = np.concatenate([s[2] for s in self.strips], axis=0)
        n = data.shape[1] if until is None else until - first
        self.strips = [] if n == data.shape[1] else [(first + n, data[:, n:], valid[n:])]
        window = rasterio.windows.Window(self.col0, first, data.shape[2], n)
        self.dataset.write(data[:, :n], window=window)
        if self.spec.internal_mask:
            self.dataset.write_mask(np.where(valid[:n], 255, 0).astype(np.uint8), window=window)


def open_output(path: Path, grid: Grid, spec: OutputSpec, compress: str):
    """Open the tiled GTiff for writing (call inside the thread that writes it)."""
    return rasterio.open(path, "w", **creation_profile(grid, spec, compress))


def convert_to_cog(tiled: Path, out: Path, spec: OutputSpec, compress: str) -> None:
    """Copy a finished tiled GTiff to a Cloud-Optimized GeoTIFF with overviews."""
    floating = np.issubdtype(np.dtype(spec.dtype), np.floating)
    options = dict(COMPRESS=compress.upper(), BLOCKSIZE=BLOCK, BIGTIFF="IF_SAFER",
                   OVERVIEWS="AUTO", NUM_THREADS="ALL_CPUS",
                   RESAMPLING="AVERAGE" if floating else "NEAREST")
    if compress != "none":
        options["PREDICTOR"] = "YES"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        rasterio.shutil.copy(str(tiled), str(out), driver="COG", **options)
