"""Per-band statistics of chips' valid pixels, computed streaming with a bounded memory.

Count, min, max, mean and std are exact (running sums in float64). The 1st/99th percentiles (and
the spread that ``centre`` scaling uses) come from a uniform random sample: every valid pixel is
kept with the same probability `rate`, chosen from the number of pixels expected, so the sample
stays near `sample_size` pixels per band and memory never grows with the dataset.

With ``count_classes`` (the targets), bands of integers also get exact per-value pixel counts
(``classes``), as long as they hold at
most `MAX_CLASSES` distinct values: the class table of a categorical target (land cover codes, a
road mask), which `geopix2pix train --categorical` learns. A band with more values is not a
class map; its counts are dropped as soon as it has too many, so memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAX_CLASSES = 256


class ClassCounts:
    """Exact pixels per value of each band of integers, while it holds at most `MAX_CLASSES`
    values (a band of floats, or with more values, is no class map: its counts become None)."""

    def __init__(self, bands: int) -> None:
        self.counts: list[dict[int, int] | None] = [{} for _ in range(bands)]

    def add(self, values: np.ndarray) -> None:
        """Add valid pixels, (bands, pixels)."""
        for band, counts in enumerate(self.counts):
            if counts is None:
                continue
            if values.dtype.kind not in "iu":
                self.counts[band] = None
                continue
            if values.dtype.kind == "u" and values.dtype.itemsize <= 2:  # fast: a histogram
                numbers = np.bincount(values[band].ravel())
                codes = np.flatnonzero(numbers)
                numbers = numbers[codes]
            else:
                codes, numbers = np.unique(values[band], return_counts=True)
            self._add(band, zip(codes.tolist(), numbers.tolist()))

    def merge(self, other: ClassCounts) -> None:
        """Fold in another's counts (e.g. from a worker process)."""
        for band, counts in enumerate(other.counts):
            if counts is None:
                self.counts[band] = None
            else:
                self._add(band, counts.items())

    def _add(self, band: int, pairs) -> None:
        counts = self.counts[band]
        if counts is None:
            return
        for code, number in pairs:
            counts[code] = counts.get(code, 0) + number
        if len(counts) > MAX_CLASSES:
            self.counts[band] = None

    def table(self, band: int) -> list[list[int]] | None:
        """[[value, pixels], ...] by value, or None when the band is no class map."""
        counts = self.counts[band]
        return None if counts is None else [[int(c), int(n)] for c, n in sorted(counts.items())]

    def tables(self) -> list[list[list[int]] | None]:
        """`table` of every band."""
        return [self.table(band) for band in range(len(self.counts))]


class BandStatistics:
    """Accumulates statistics of valid pixels for a fixed number of bands."""

    def __init__(self, bands: int, rate: float = 1.0, seed: int | Sequence[int] = 0,
                 count_classes: bool = False):
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
        self._firsts: list[np.ndarray] = []  # each accumulator's first valid pixel, (bands, 1)
        self.classes = ClassCounts(bands) if count_classes else None

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
        if self.classes is not None:
            self.classes.add(values)
        if not self._firsts:  # (the percentiles' sample where every chip's few valid pixels
            self._firsts.append(values[:, :1].astype(np.float64))  # missed the rate)
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
        self._firsts.extend(other._firsts)
        if self.classes is not None and other.classes is not None:
            self.classes.merge(other.classes)

    def summary(self) -> list[dict]:
        """Per-band dicts: count, min, max, mean, std, p01, p99, abs_dev_p99, and classes:
        [[value, pixels], ...] by value for a band of integers with at most `MAX_CLASSES`
        values, else None."""
        if self.count == 0:
            return [dict(count=0, min=None, max=None, mean=None, std=None, p01=None, p99=None,
                         abs_dev_p99=None, classes=None) for _ in range(self.bands)]
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean**2, 0.0))
        if self._values:
            values = np.concatenate(self._values, axis=1)
            deviations = np.concatenate(self._deviations, axis=1)
        else:  # no pixel met the rate: each worker's first one stands for the sample (in
            values = np.concatenate(self._firsts, axis=1)  # any order, the same percentiles)
            deviations = np.abs(values - mean[:, None])
        p01, p99 = np.percentile(values, [1, 99], axis=1)
        spread = np.percentile(deviations, 99, axis=1)
        return [
            dict(count=int(self.count), min=float(self.min[b]), max=float(self.max[b]),
                 mean=float(mean[b]), std=float(std[b]), p01=float(p01[b]), p99=float(p99[b]),
                 abs_dev_p99=float(spread[b]),
                 classes=None if self.classes is None else self.classes.table(b))
            for b in range(self.bands)
        ]
