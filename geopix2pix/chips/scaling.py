"""Scaling between raster values and the generator's [-1, 1] range, and back.

This is the one place where values are scaled: the chip dataset uses `forward`, prediction uses
`inverse` with the statistics stored in the model file, so both always agree.

Modes, per side of a pair:
- ``percentile``: the 1st..99th percentiles of the training pixels map to [-1, 1] (clipped).
  Robust to outliers and speckle; the default for inputs.
- ``minmax``: min..max of the training pixels map to [-1, 1]. The default for targets: a
  prediction can reach every value seen in training (a rare class or road value is never clipped
  away).
- ``centre``: each chip or window minus its own mean, divided by the 99th percentile of absolute
  deviations from chip means. For elevation inputs: a hillshade or image depends on the relief, not
  on the absolute height. Not invertible, so inputs only. Clipped at +-`CENTRE_CLIP`, not +-1: a
  window of steeper relief than the training chips' keeps its shape (a clip at 1 flattened the
  steep parts of a real DEM, and with them its hillshade; docs/benchmarks.md). The clip
  is part of the scaling (`clip`, stored with it): a model trained before it was recorded read
  its inputs clipped at +-1, and is given them so again. Invalid pixels (a DEM's voids) are
  filled from the valid ones around them (GDAL's FillNodata) rather than set to the mean: a
  cliff down to the mean at a void's edge would give its valid neighbours a slope, and their
  hillshade a shadow, that is not there (docs/benchmarks.md, quality, "Voids").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from geopix2pix.settings.export import SCALING_MODES

CENTRE_CLIP = 8.0  # centre-scaled values are clipped to +-this (outliers), not to +-1


@dataclass(frozen=True)
class Scaling:
    """Per-band affine map from data units to [-1, 1]."""

    mode: str
    low: tuple[float, ...]
    high: tuple[float, ...]
    clip: float = 1.0  # |scaled values| are clipped to this

    @classmethod
    def from_stats(cls, stats: list[dict], mode: str) -> Scaling:
        """Build from dataset.json per-band statistics."""
        if mode not in SCALING_MODES:
            raise ValueError(f"scaling mode {mode!r}: use one of {', '.join(SCALING_MODES)}")
        if mode == "percentile":
            low, high = [s["p01"] for s in stats], [s["p99"] for s in stats]
        elif mode == "minmax":
            low, high = [s["min"] for s in stats], [s["max"] for s in stats]
        else:
            spread = [s["abs_dev_p99"] or 1.0 for s in stats]
            low, high = [-v for v in spread], spread
        return cls(mode, tuple(map(float, low)), tuple(map(float, high)),
                   CENTRE_CLIP if mode == "centre" else 1.0)

    @classmethod
    def from_dict(cls, data: dict) -> Scaling:
        """Read back `to_dict`; a scaling stored without `clip` (before it was) clips at 1."""
        return cls(data["mode"], tuple(data["low"]), tuple(data["high"]),
                   float(data.get("clip", 1.0)))

    def to_dict(self) -> dict:
        return asdict(self)

    def _centre_and_half_range(self, bands: int) -> tuple[np.ndarray, np.ndarray]:
        low = np.asarray(self.low, dtype=np.float64)[:bands]
        high = np.asarray(self.high, dtype=np.float64)[:bands]
        half = (high - low) / 2
        half[~(half > 0)] = 1.0  # a constant band maps to 0 instead of dividing by zero
        return ((low + high) / 2)[:, None, None], half[:, None, None]

    def forward(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(bands, rows, cols) values -> float32 in [-clip, clip] (1, or `CENTRE_CLIP` for a
        ``centre`` scaling); invalid pixels become 0, or under ``centre`` scaling the values
        FillNodata interpolates from the valid ones around them."""
        with np.errstate(invalid="ignore"):  # signalling NaNs (garbage bits) are invalid anyway
            values = data.astype(np.float64)
        filled = self.mode == "centre" and valid.any() and not valid.all()
        if self.mode == "centre":
            count = max(int(valid.sum()), 1)
            means = np.where(valid, values, 0).sum(axis=(1, 2)) / count
            values = (fill_invalid(values, valid) if filled else values) - means[:, None, None]
        centre, half = self._centre_and_half_range(values.shape[0])
        scaled = np.clip((values - centre) / half, -self.clip, self.clip)
        if not filled:
            scaled[:, ~valid] = 0.0
        return np.nan_to_num(scaled, nan=0.0).astype(np.float32)

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """[-1, 1] (bands, rows, cols) -> float64 values in data units."""
        if self.mode == "centre":
            raise ValueError("centre scaling is relative to each window and cannot be inverted; "
                             "use percentile or minmax for targets")
        centre, half = self._centre_and_half_range(scaled.shape[0])
        values = scaled.astype(np.float64)
        values *= half  # in place: no float64 temporaries (predict's writer runs this per strip)
        values += centre
        return values


def with_validity(scaled: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Scaled values (..., bands, rows, cols) and their validity band (1 valid, 0 not) after
    them: the input of a generator trained with ``--validity-band``; `valid` (..., rows,
    cols)."""
    band = np.expand_dims(valid, -3).astype(scaled.dtype)
    return np.concatenate([scaled, band], axis=-3)


def fill_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(bands, rows, cols) float64 values with each invalid pixel interpolated from the valid
    ones around it (GDAL's FillNodata, inverse-distance, no smoothing); `valid` (rows, cols)
    holds at least one valid pixel."""
    from rasterio.fill import fillnodata

    mask = valid.astype(np.uint8)
    reach = float(max(valid.shape))
    return np.stack([fillnodata(band.copy(), mask=mask, max_search_distance=reach,
                                smoothing_iterations=0) for band in values])


def to_dtype(values: np.ndarray, dtype: str, overwrite: bool = False) -> np.ndarray:
    """Values in data units -> `dtype`, rounded and clipped to its range for integer types (in
    `values` itself with `overwrite`, sparing the temporaries)."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        rounded = np.rint(values, out=values if overwrite else None)
        return np.clip(rounded, info.min, info.max, out=rounded).astype(dtype)
    return values.astype(dtype)
