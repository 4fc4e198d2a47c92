"""Writing predictions: values back to the target's dtype and units, and the output GeoTIFF.

- Values: the blended [-1, 1] output goes through the target's `Scaling.inverse` and `to_dtype`
  (rounded and clipped for integers), the same code that made the training chips.
- Classes: for a categorical model (`OutputSpec.categorical`: the spec lists the target's class
  codes) the blended output is one probability per class, and the output is one band: the code
  of the most probable class (`class_codes`), already of the target's dtype (no scaling).
- Band metadata: the target's descriptions, units, scales, offsets, colour interpretation and
  colour table (`BandMetadata`, from the model file) are written with the values, which are in the
  target's dtype and so mean what the target's did (DNs with a scale of 1e-4 stay reflectance).
- Nodata: invalid scene pixels get the target's nodata. A valid pixel whose prediction equals the
  nodata value is nudged off it (to nodata + 1, or - 1 at the top of an integer range; the next
  representable float for floats), so it is not mistaken for nodata. A float target without nodata
  gets NaN. An integer target without nodata gets no nodata value: invalid pixels are 0 and an
  internal GDAL mask (255 = valid) marks them, as GDAL does for masked integer rasters. Class
  codes are masked the same way (export counts classes on valid pixels only, so no class code is
  the nodata value and none is nudged).
- File: tiled 512, compressed with the predictor suited to the dtype, BIGTIFF=IF_SAFER, written in
  row bands aligned to the 512-pixel blocks so no compressed block is written twice. What becomes
  of it (the output itself, or converted into a COG) and where the user's GDAL creation options
  (`--co`) go is the output format's (`formats`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.env import env_ctx_if_needed

from geopix2pix.chips.scaling import Scaling, to_dtype
from geopix2pix.errors import GeoPix2PixError, data_errors, describe
from geopix2pix.raster.band_metadata import BandMetadata
from geopix2pix.raster.creation import with_creation_options
from geopix2pix.raster.gdal_log import no_room_errno, write_error
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.write import OUTPUT_BLOCK, gtiff_profile
from geopix2pix.settings.predict import COMPRESSIONS

BLOCK = OUTPUT_BLOCK  # the output's tiles; rows are written in bands of this many


@dataclass(frozen=True)
class OutputSpec:
    """What the output raster holds: the model's target bands, dtype, nodata and units (band
    metadata: none by default, as for a temporary in data units), and for a categorical model
    its class codes in the order of the generator's channels (None: values regressed)."""

    dtype: str
    count: int
    nodata: float | None
    internal_mask: bool
    descriptions: tuple[str | None, ...]
    scaling: Scaling
    band_metadata: BandMetadata = field(default_factory=BandMetadata)
    classes: tuple[int, ...] | None = None

    @classmethod
    def for_target(cls, dtype: str, channels: int, nodata: float | None,
                   descriptions: Sequence[str | None], scaling: Scaling,
                   band_metadata: BandMetadata | None = None,
                   classes: Sequence[int] | None = None) -> OutputSpec:
        """The output of a generator with `channels` output channels: one band each, or with
        `classes` (a categorical model, one channel per class) one band of class codes."""
        floating = np.issubdtype(np.dtype(dtype), np.floating)
        internal_mask = nodata is None and not floating
        if nodata is None and floating:
            nodata = math.nan
        count = channels if classes is None else 1
        descs = tuple(descriptions)[:count] + (None,) * max(0, count - len(descriptions))
        return cls(dtype, count, nodata, internal_mask, descs, scaling,
                   (band_metadata or BandMetadata()).fitted(count),
                   None if classes is None else tuple(int(c) for c in classes))

    @property
    def categorical(self) -> bool:
        """Whether the output is the code of the most probable of a categorical model's
        classes."""
        return self.classes is not None

    @property
    def channels(self) -> int:
        """The channels blended into the output: one probability per class, or one per band."""
        return self.count if self.classes is None else len(self.classes)


def _nudge(nodata: float, dtype: np.dtype):
    """The value a valid pixel predicted exactly at `nodata` gets instead."""
    if np.issubdtype(dtype, np.integer):
        return nodata + 1 if nodata < np.iinfo(dtype).max else nodata - 1
    return np.nextafter(dtype.type(nodata), dtype.type(np.inf))


def to_output(blended: np.ndarray, valid: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Blended (channels, rows, cols) -> values in the target's dtype, nodata where invalid:
    [-1, 1] values through the target's scaling, or a categorical model's class probabilities
    as the code of the most probable class (one band)."""
    if spec.categorical:
        return masked(class_codes(blended, spec), valid, spec)
    return finish(spec.scaling.inverse(blended), valid, spec)


def class_codes(probabilities: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """(classes, rows, cols) -> (1, rows, cols): the code of the most probable class (the first
    of equals), in the output's dtype."""
    codes = np.asarray(spec.classes, dtype=spec.dtype)
    return codes[np.argmax(probabilities, axis=0)][None]


def finish(values: np.ndarray, valid: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Values in data units (float64, overwritten) -> the target's dtype (rounded, clipped),
    nodata where invalid."""
    if not np.isfinite(values).all():  # one pass where all are finite, as they mostly are
        np.nan_to_num(values, copy=False)
    return masked(to_dtype(values, spec.dtype, overwrite=True), valid, spec)


def masked(out: np.ndarray, valid: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Values in the output's dtype (bands, rows, cols; overwritten): nodata (0 under an
    internal mask) where not `valid`, and valid values equal to nodata nudged off it."""
    if spec.nodata is None:
        out[:, ~valid] = 0
        return out
    if not math.isnan(spec.nodata):
        hit = (out == out.dtype.type(spec.nodata)) & valid
        out[hit] = _nudge(spec.nodata, out.dtype)
    out[:, ~valid] = spec.nodata
    return out


def creation_profile(grid: Grid, spec: OutputSpec, compress: str,
                     creation_options: Mapping[str, str] | None = None) -> dict:
    """The tiled, compressed GTiff profile of the output, with the user's creation options (see
    `with_creation_options`) over it."""
    if compress not in COMPRESSIONS:
        raise GeoPix2PixError(f"compress {compress!r}: use one of {', '.join(COMPRESSIONS)}")
    profile = gtiff_profile(spec.dtype, spec.count, grid.crs, grid.transform, grid.width,
                            grid.height, spec.nodata, compress=compress, blocksize=BLOCK)
    if grid.transform.is_identity:  # pixel coordinates (no CRS, or a CRS only: --allow-no-crs)
        del profile["transform"]  # nothing to write (rasterio would warn)
    profile.update(grid.control_points)  # a scene placed by GCPs or RPCs: its output too
    profile["NUM_THREADS"] = "ALL_CPUS"
    return with_creation_options(profile, creation_options or {})


class BandWriter:
    """Writes finished row strips of column chunks through one block-aligned row band buffer:
    each band of `BLOCK` rows is written once it is full (or the chunk ends), so no compressed
    block is written twice and no more than one band is held."""

    def __init__(self, dataset, spec: OutputSpec):
        self.dataset, self.spec = dataset, spec
        self.data: np.ndarray | None = None  # (count, BLOCK, chunk width)
        self.valid: np.ndarray | None = None
        self.col0: int | None = None
        self.first = self.rows = 0  # scene row of the band's first row, rows filled
        self.any_valid = False  # whether any pixel written is valid (else all nodata)
        if any(spec.descriptions):
            for i, desc in enumerate(spec.descriptions, start=1):
                if desc:
                    dataset.set_band_description(i, desc)
        spec.band_metadata.apply(dataset)

    def add(self, row0: int, col0: int, data: np.ndarray, valid: np.ndarray) -> None:
        """Rows [row0, row0 + rows) of the chunk starting at `col0`, following the rows added
        before for that chunk; full bands are written."""
        if self.col0 is not None and col0 != self.col0:
            self.flush()
        self.col0 = col0
        self.any_valid = self.any_valid or bool(valid.any())
        if self.data is None or self.data.shape[2] != data.shape[2]:
            self.data = np.empty((data.shape[0], BLOCK, data.shape[2]), dtype=data.dtype)
            self.valid = np.empty((BLOCK, data.shape[2]), dtype=bool)
        done = 0
        while done < data.shape[1]:
            if self.rows == 0:
                self.first = row0 + done
            take = min(data.shape[1] - done, BLOCK - self.first % BLOCK - self.rows)
            self.data[:, self.rows:self.rows + take] = data[:, done:done + take]
            self.valid[self.rows:self.rows + take] = valid[done:done + take]
            self.rows += take
            done += take
            if (self.first + self.rows) % BLOCK == 0:
                self._write()

    def flush(self) -> None:
        if self.rows:
            self._write()
        self.col0 = None

    def finish(self) -> None:
        """Write what is held and let the buffer go (the output is complete)."""
        self.flush()
        self.data = self.valid = None

    def _write(self) -> None:
        window = rasterio.windows.Window(self.col0, self.first, self.data.shape[2], self.rows)
        # rasterio's handler of GDAL's errors is per thread: without it in the writer thread,
        # GDAL prints a write failure (a full disk) as "ERROR 1: ..." besides raising it
        with env_ctx_if_needed():
            self.dataset.write(self.data[:, :self.rows], window=window)
            if self.spec.internal_mask:
                self.dataset.write_mask(np.where(self.valid[:self.rows], 255, 0)
                                        .astype(np.uint8), window=window)
        self.rows = 0


def open_output(path: Path, grid: Grid, spec: OutputSpec, compress: str,
                creation_options: Mapping[str, str] | None = None):
    """Open the tiled GTiff for writing (call inside the thread that writes it), tagged
    AREA_OR_POINT as the scene is (a Point scene's output read as Area would lie half a pixel
    off it where GTIFF_POINT_GEO_IGNORE=TRUE; a COG keeps the tag)."""
    dataset = rasterio.open(path, "w", **creation_profile(grid, spec, compress,
                                                          creation_options))
    if grid.area_or_point:
        dataset.update_tags(AREA_OR_POINT=grid.area_or_point)
    return dataset


@contextlib.contextmanager
def write_errors_said_of(outputs: Sequence[tuple[Path, Path]]) -> Iterator[None]:
    """A GDAL error raised while writing on a full disk, said as the disk being full, of the
    output (path, final name) whose folder is full (GDAL says "TIFFAppendToStrip:Write error at
    scanline 0", or "Failed to create mask")."""
    try:
        yield
    except data_errors() as exc:
        reason = describe(exc)
        writing = any(word in reason.lower() for word in ("writ", "space", "too large",
                                                             "create"))
        for path, name in outputs if writing else []:  # a read error is not the disk's
            if no_room_errno(reason, path):
                raise write_error(name, reason, path) from exc
        raise
