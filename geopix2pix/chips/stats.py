"""Per-band statistics of chips' valid pixels, computed streaming with a bounded memory.

Count, min, max, mean and std are exact (running sums in float64). The 1st/99th percentiles (and
the spread that ``centre`` scaling uses) come from a uniform random sample: every valid pixel is
kept with the same probability `rate`, chosen from the number of pixels expected, so the sample
stays near `sample_size` pixels per band and memory never grows with the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class BandStatistics:
    """Accumulates statistics of valid pixels for a fixed number of bands."""

    def __init__(self, bands: int, rate: float = 1.0, seed: int | Sequence[int] = 0):
        self.bands = bands
        self.rate = min(1.0, rate)
        self.count = 0
        self.sum = np.zeros(bands)
        self.sumsq = np.zeros(bands)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)
        self._rng = np.random.default_rng(seed)
        self._values: list[np.ndarray] = []
        self._deviations: list[np.ndarray] = []

    @staticmethod
    def rate_for(sample_size: int, expected_pixels: int) -> float:
        """The keep probability that gives about `sample_size` sampled pixels."""
        return min(1.0, sample_size / max(expected_pixels, 1))

    def add(self, data: np.ndarray, valid: np.ndarray) -> None:
        """Add a chip: data (bands, rows, cols), valid (rows, cols)."""
        values = data.reshape(data.shape[0], -1) if valid.all() else data[:, valid]
        n = values.shape[1]
        if n == 0:
            return
        self.count += n
        self.sum += values.sum(axis=1, dtype=np.float64)
        self.sumsq += np.square(values, dtype=np.float64).sum(axis=1)
        self.min = np.minimum(self.min, values.min(axis=1))
        self.max = np.maximum(self.max, values.max(axis=1))
        keep = self._rng.binomial(n, self.rate)
        if keep:
            picked = values[:, self._rng.choice(n, keep, replace=False) if keep < n
                            else slice(None)].astype(np.float64)
            means = values.mean(axis=1, dtype=np.float64)[:, None]
            self._values.append(picked)
            self._deviations.append(np.abs(picked - means))

    def merge(self, other: BandStatistics) -> None:
        """Fold another accumulator (e.g. from a worker process) into this one."""
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self._values.extend(other._values)
        self._deviations.extend(other._deviations)

    def summary(self) -> list[dict]:
        """Per-band dicts: count, min, max, mean, std, p01, p99, abs_dev_p99."""
        if self.count == 0:
            return [dict(count=0, min=None, max=None, mean=None, std=None, p01=None, p99=None,
                         abs_dev_p99=None) for _ in range(self.bands)]
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean**2, 0.0))
        values = np.concatenate(self._values, axis=1)
        p01, p99 = np.percentile(values, [1, 99], axis=1)
        spread = np.percentile(np.concatenate(self._deviations, axis=1), 99, axis=1)
        return [
            dict(count=int(self.count), min=float(self.min[b]), max=float(self.max[b]),
                 mean=float(mean[b]), std=float(std[b]), p01=float(p01[b]), p99=float(p99[b]),
                 abs_dev_p99=float(spread[b]))
            for b in range(self.bands)
        ]
