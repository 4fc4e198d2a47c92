"""Per-band statistics of chips' valid pixels, computed streaming with a bounded memory.

Exact min, max, mean and std come from running sums; the 1st/99th percentiles (and the spread used
by ``centre`` scaling) come from a uniform random sample of at most `sample_size` pixels per band
(bottom-k sampling: every pixel gets a random key and the smallest keys are kept), so memory never
grows with the dataset.
"""

from __future__ import annotations

import numpy as np


class BandStatistics:
    """Accumulates statistics of valid pixels for a fixed number of bands."""

    def __init__(self, bands: int, sample_size: int = 200_000, seed: int = 0):
        self.bands = bands
        self.sample_size = sample_size
        self.count = 0
        self.sum = np.zeros(bands)
        self.sumsq = np.zeros(bands)
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._values = np.empty((bands, 0))
        self._deviations = np.empty((bands, 0))

    def add(self, data: np.ndarray, valid: np.ndarray) -> None:
        """Add a chip: data (bands, rows, cols), valid (rows, cols)."""
        values = data[:, valid].astype(np.float64)
        if values.shape[1] == 0:
            return
        self.add_values(values)

    def add_values(self, values: np.ndarray) -> None:
        """Add the valid pixels of one chip as (bands, n) values."""
        self.count += values.shape[1]
        self.sum += values.sum(axis=1)
        self.sumsq += np.square(values).sum(axis=1)
        self.min = np.minimum(self.min, values.min(axis=1))
        self.max = np.maximum(self.max, values.max(axis=1))
        deviations = np.abs(values - values.mean(axis=1, keepdims=True))
        keys = self._rng.random(values.shape[1])
        if keys.size > self.sample_size:
            pick = np.argpartition(keys, self.sample_size)[: self.sample_size]
            keys, values, deviations = keys[pick], values[:, pick], deviations[:, pick]
        self._keep(keys, values, deviations)

    def _keep(self, keys: np.ndarray, values: np.ndarray, deviations: np.ndarray) -> None:
        keys = np.concatenate([self._keys, keys])
        values = np.concatenate([self._values, values], axis=1)
        deviations = np.concatenate([self._deviations, deviations], axis=1)
        if keys.size > self.sample_size:
            keep = np.argpartition(keys, self.sample_size)[: self.sample_size]
            keys, values, deviations = keys[keep], values[:, keep], deviations[:, keep]
        self._keys, self._values, self._deviations = keys, values, deviations

    def merge(self, other: BandStatistics) -> None:
        """Fold another accumulator (e.g. from a worker process) into this one."""
        if other.count == 0:
            return
        self.count += other.count
        self.sum += other.sum
        self.sumsq += other.sumsq
        self.min = np.minimum(self.min, other.min)
        self.max = np.maximum(self.max, other.max)
        self._keep(other._keys, other._values, other._deviations)

    def summary(self) -> list[dict]:
        """Per-band dicts: count, min, max, mean, std, p01, p99, abs_dev_p99."""
        if self.count == 0:
            return [dict(count=0, min=None, max=None, mean=None, std=None, p01=None, p99=None,
                         abs_dev_p99=None) for _ in range(self.bands)]
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean**2, 0.0))
        p01, p99 = np.percentile(self._values, [1, 99], axis=1)
        spread = np.percentile(self._deviations, 99, axis=1)
        return [
            dict(count=int(self.count), min=float(self.min[b]), max=float(self.max[b]),
                 mean=float(mean[b]), std=float(std[b]), p01=float(p01[b]), p99=float(p99[b]),
                 abs_dev_p99=float(spread[b]))
            for b in range(self.bands)
        ]
