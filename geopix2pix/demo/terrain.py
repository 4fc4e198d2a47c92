"""Procedural landscapes for the demo: fractal terrain and the land cover that grows on it.

Everything here is numpy only and deterministic for a `numpy.random.Generator`: the same seed gives
the same landscape on every machine. The renderers in `geopix2pix.demo.render` turn a `Landscape`
into the rasters each task translates between.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WATER, FOREST, FIELD, URBAN, BARE, ROAD = 1, 2, 3, 4, 5, 6
CLASS_NAMES = {WATER: "water", FOREST: "forest", FIELD: "field", URBAN: "urban", BARE: "bare",
               ROAD: "road"}


@dataclass
class Landscape:
    """One scene's ground truth: elevation (m), land cover classes, and per-pixel detail fields."""

    dem: np.ndarray  # float32 (rows, cols), metres
    cover: np.ndarray  # uint8 (rows, cols), the class constants above
    parcel: np.ndarray  # float32 (rows, cols) in [0, 1): one random value per field parcel
    texture: np.ndarray  # float32 (rows, cols), fine fractal texture, zero mean, unit std
    pixel_size: float  # metres

    @property
    def shape(self) -> tuple[int, int]:
        return self.dem.shape


def fractal_noise(shape: tuple[int, int], rng: np.random.Generator, beta: float,
                  cutoff: float = 0.0) -> np.ndarray:
    """Spectral synthesis: white noise filtered to a 1/f**beta power spectrum; zero mean, unit std.

    `cutoff` (cycles per pixel) removes the largest scales so the field does not look periodic.
    """
    rows, cols = shape
    fy = np.fft.fftfreq(rows)[:, None]
    fx = np.fft.rfftfreq(cols)[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2)
    amplitude[f < cutoff] = 0.0
    amplitude[0, 0] = 0.0
    spectrum = np.fft.rfft2(rng.standard_normal(shape)) * amplitude
    field = np.fft.irfft2(spectrum, s=shape)
    return ((field - field.mean()) / (field.std() or 1.0)).astype(np.float32)


def _rank(values: np.ndarray) -> np.ndarray:
    """Values mapped to their quantile in [0, 1] (a uniform distribution of the same order)."""
    order = np.argsort(values, axis=None, kind="stable")
    ranks = np.empty(values.size, dtype=np.float32)
    ranks[order] = np.linspace(0.0, 1.0, values.size, dtype=np.float32)
    return ranks.reshape(values.shape)


def terrain(shape: tuple[int, int], rng: np.random.Generator, relief_per_km: float = 80.0,
            base: float = 320.0, pixel_size: float = 10.0) -> np.ndarray:
    """A DEM in metres: rolling fractal hills (a 1/f**4 spectrum, like real relief) plus creased
    ridges and a little fine roughness, float32.

    The height range grows with the scene's extent (`relief_per_km` of it per km of side), as it
    does for such a spectrum, so slopes look alike in scenes of any size.
    """
    hills = fractal_noise(shape, rng, beta=4.0)
    ridges = 1.0 - np.abs(fractal_noise(shape, rng, beta=4.0))
    detail = fractal_noise(shape, rng, beta=3.0)
    height = hills + 0.6 * ridges**2 + 0.03 * detail
    height = (height - height.min()) / (np.ptp(height) or 1.0)
    relief = relief_per_km * np.sqrt(shape[0] * shape[1]) * pixel_size / 1000
    return (base + relief * height**1.4).astype(np.float32)


def carve_river(dem: np.ndarray, rng: np.random.Generator, width: float = 3.0,
                depth: float = 12.0) -> np.ndarray:
    """Cut a meandering river across the scene; returns the river mask (and lowers `dem`)."""
    rows, cols = dem.shape
    wander = fractal_noise((1, cols), rng, beta=4.0)[0]
    centre = rows * (0.3 + 0.4 * rng.random()) + 0.12 * rows * wander
    r = np.arange(rows, dtype=np.float32)[:, None]
    distance = np.abs(r - centre[None, :])
    mask = distance <= width
    valley = np.exp(-(distance / (8 * width)) ** 2)
    dem -= (depth + 0.3 * (dem - dem.min())) * valley
    return mask


def parcels(shape: tuple[int, int], rng: np.random.Generator, mean_size: int = 28) -> np.ndarray:
    """A random rectangular tiling (field parcels), one uniform [0, 1) value per parcel."""
    rows, cols = shape

    def cuts(length: int) -> np.ndarray:
        sizes = rng.integers(mean_size // 2, mean_size * 3 // 2 + 1, size=length // 8 + 2)
        return np.searchsorted(np.cumsum(sizes), np.arange(length), side="right")

    row_id, col_id = cuts(rows), cuts(cols)
    values = rng.random((row_id.max() + 1, col_id.max() + 1)).astype(np.float32)
    return values[row_id[:, None], col_id[None, :]]


def draw_roads(shape: tuple[int, int], rng: np.random.Generator, count: int = 3,
               width: float = 1.2) -> np.ndarray:
    """Straight roads crossing the scene at random angles, as a mask."""
    rows, cols = shape
    r = np.arange(rows, dtype=np.float32)[:, None]
    c = np.arange(cols, dtype=np.float32)[None, :]
    mask = np.zeros(shape, dtype=bool)
    for _ in range(count):
        angle = rng.uniform(0, np.pi)
        r0, c0 = rng.uniform(0.15, 0.85) * rows, rng.uniform(0.15, 0.85) * cols
        distance = np.abs((r - r0) * np.cos(angle) - (c - c0) * np.sin(angle))
        mask |= distance <= width
    return mask


def slope_degrees(dem: np.ndarray, pixel_size: float) -> np.ndarray:
    dy, dx = np.gradient(dem.astype(np.float64), pixel_size)
    return np.degrees(np.arctan(np.hypot(dx, dy))).astype(np.float32)


def land_cover(dem: np.ndarray, rng: np.random.Generator, pixel_size: float,
               river: np.ndarray | None = None) -> np.ndarray:
    """Classes from terrain and noise: water in the lowest hollows and the river, bare rock on high
    and steep ground, towns on flat low land, forest on slopes and in noisy patches, fields
    elsewhere, and roads over everything but water."""
    shape = dem.shape
    height = _rank(dem)
    slope = slope_degrees(dem, pixel_size)
    forest_noise = fractal_noise(shape, rng, beta=2.8)
    town_noise = _rank(fractal_noise(shape, rng, beta=3.4) - 2.0 * height)
    cover = np.full(shape, FIELD, dtype=np.uint8)
    cover[(forest_noise + 0.03 * slope > 0.7) | (slope > 32)] = FOREST
    blocky = town_noise[::8, ::8].repeat(8, 0).repeat(8, 1)[: shape[0], : shape[1]]
    cover[(blocky > 0.9) & (slope < 14)] = URBAN
    cover[(height > 0.94) | (slope > 42)] = BARE
    cover[height < 0.05] = WATER
    if river is not None:
        cover[river] = WATER
    roads = draw_roads(shape, rng) & (cover != WATER)
    cover[roads] = ROAD
    return cover


def make_landscape(shape: tuple[int, int], seed: int, pixel_size: float = 10.0) -> Landscape:
    """The landscape of one scene, fully determined by `seed` and `shape`."""
    rng = np.random.default_rng(seed)
    dem = terrain(shape, rng, pixel_size=pixel_size)
    river = carve_river(dem, rng)
    cover = land_cover(dem, rng, pixel_size, river)
    return Landscape(dem=dem.astype(np.float32), cover=cover, parcel=parcels(shape, rng),
                     texture=fractal_noise(shape, rng, beta=1.6), pixel_size=pixel_size)
