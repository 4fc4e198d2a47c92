"""Co-registration check for one chip pair: the sub-pixel shift of the target against the source.

Works across modalities (SAR -> optical, DEM -> hillshade, image -> map) by correlating edge
structure rather than intensities: each side is band-averaged after per-band standardisation and
seen as its gradient magnitude (edges), its level and its gradient's two components (slope), each
standardised over the valid pixels, zero on the invalid ones and Hann-apodised. Edges are
phase-correlated with edges, and each side's level with the other's slope (a hillshade is its
DEM's slope along the sun: its correlations with both components combine as a root sum of
squares, whatever the azimuth); the most distinct peak wins (whitened cross-power spectra, tapered
to LOWPASS cycles/px), and is refined to 1/20 px with an upsampled DFT (Guizar-Sicairos et
al. 2008, as in scikit-image's `phase_cross_correlation`). The confidence is the peak-to-sidelobe
ratio of the correlation surface: how many standard deviations the peak stands above the rest.

Numpy only (no torch): it runs in export's worker processes.

Convention: `Shift(dx, dy)` is where the target's content lies against the source's, in source
pixels: dx > 0 means the target's features sit dx columns to the right (east on a north-up grid),
dy > 0 means dy rows down (south)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

UPSAMPLE = 20  # sub-pixel refinement to 1/UPSAMPLE px
SIDELOBE_EXCLUDE = 3  # the peak's neighbourhood (+-px) left out of the sidelobe statistics
MIN_VALID_SHARE = 0.25  # fewer valid gradient pixels than this: no estimate
LOWPASS = 0.35  # spectrum taper's cut-off, cycles per pixel
# a slope pairing whose surface, along the peak's direction, holds a trough deeper than this
# share of its peak is a dipole: a level correlated with its own gradient (a monotone function
# of a DEM, not a hillshade) peaks on a ring a feature's width off the true shift, with a
# mirrored trough; real DEM -> hillshade chips stay below 0.6, such rings above 0.75
DIPOLE = 0.7
CONFIDENT = 15.0  # peak-to-sidelobe ratio from which a shift is trusted (docs/benchmarks.md)
# confident chips a pair's shift needs: one or two can be chance peaks (random texture whose
# bands only partly agree gave one confident chip 1.7 px off), a median of three agrees or not
MIN_CONFIDENT_CHIPS = 3
# and they must agree: confident chips spread more than this around their median are chance
# peaks too (SAR -> RGB at 32 px chips: 3 of 35 confident, 2.9 px apart), not a shift
MAX_SPREAD = 1.0


@dataclass(frozen=True)
class Shift:
    """The target's shift against the source in source pixels (see the module's convention) and
    the peak-to-sidelobe ratio of the correlation (0 where nothing could be estimated)."""

    dx: float
    dy: float
    confidence: float

    @property
    def confident(self) -> bool:
        return self.confidence >= CONFIDENT

    @property
    def size(self) -> float:
        return float(np.hypot(self.dx, self.dy))


NO_SHIFT = Shift(float("nan"), float("nan"), 0.0)


def estimate_shift(source: np.ndarray, target: np.ndarray,
                   valid: np.ndarray | None = None) -> Shift:
    """The shift of `target` against `source`: (bands, rows, cols) or (rows, cols) arrays of one
    chip's extent, any band count and dtype; `valid` (rows, cols) marks the pixels both sides hold
    (non-finite values are treated as invalid too). `NO_SHIFT` where too few pixels are valid."""
    source = _as_bands(source)
    target = _as_bands(target)
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"source {source.shape[1:]} and target {target.shape[1:]} chips "
                         "differ in size")
    mask = np.ones(source.shape[1:], bool) if valid is None else np.asarray(valid, bool).copy()
    mask &= np.isfinite(source).all(0) & np.isfinite(target).all(0)
    inner = _interior(mask)
    if inner.mean() < MIN_VALID_SHARE:
        return NO_SHIFT
    window = np.outer(np.hanning(mask.shape[0]), np.hanning(mask.shape[1]))
    a = Views(_band_mean(source, mask), inner, window)
    b = Views(_band_mean(target, mask), inner, window)
    best = None
    for first, second in PAIRINGS:
        found = _correlate([(x, y) for x in getattr(a, first) for y in getattr(b, second)])
        if best is None or found[0] > best[0]:
            best = found
    return _refined(*best) if best[0] > 0 else NO_SHIFT



@dataclass(frozen=True)
class SceneShift:
    """A pair's systematic shift: the median of its confident chips' shifts, their spread (the
    median distance from it, px) and how many chips were confident out of how many estimated."""

    dx: float
    dy: float
    spread: float
    confident: int
    chips: int

    @property
    def measured(self) -> bool:
        """Whether enough chips were confident (`MIN_CONFIDENT_CHIPS`), and agree within
        `MAX_SPREAD` px, for a scene shift."""
        return self.confident >= MIN_CONFIDENT_CHIPS and self.spread <= MAX_SPREAD

    @property
    def size(self) -> float:
        return float(np.hypot(self.dx, self.dy))

    def describe(self) -> str:
        """One line for the summary."""
        if self.confident >= MIN_CONFIDENT_CHIPS and not self.measured:
            return (f"shift not measurable: the {self.confident} of {self.chips} chips that "
                    f"matched their source confidently disagree by {self.spread:.1f} px")
        if not self.measured:
            found = "no chip" if not self.confident else f"only {self.confident}"
            return (f"shift not measurable: {found} of {self.chips} chips matched its source "
                    f"confidently (a shift needs {MIN_CONFIDENT_CHIPS})")
        return (f"target is shifted by ({self.dx:+.1f}, {self.dy:+.1f}) px against the source, "
                f"consistent within {self.spread:.1f} px over {self.confident} of {self.chips} "
                "chips")


def scene_shift(shifts: list[Shift]) -> SceneShift:
    """The robust scene shift of a pair's chip shifts (nan where fewer than
    `MIN_CONFIDENT_CHIPS` are confident)."""
    confident = [s for s in shifts if s.confident]
    if len(confident) < MIN_CONFIDENT_CHIPS:
        nan = float("nan")
        return SceneShift(nan, nan, nan, len(confident), len(shifts))
    dx = float(np.median([s.dx for s in confident]))
    dy = float(np.median([s.dy for s in confident]))
    spread = float(np.median([np.hypot(s.dx - dx, s.dy - dy) for s in confident]))
    return SceneShift(dx, dy, spread, len(confident), len(shifts))


# which views of the two sides are correlated; the most distinct peak wins: edges with edges
# (SAR -> optical, image -> map), or a side with the other's slope (DEM -> hillshade and back:
# a hillshade is the DEM's slope along the sun, whatever its azimuth)
PAIRINGS = (("edges", "edges"), ("level", "slope"), ("slope", "level"))


class Views:
    """One side's band mean seen three ways, each a list of images standardised over the interior
    valid pixels, zero elsewhere and Hann-apodised: its level, its gradient magnitude (edges) and
    its gradient's components (slope: gx, gy, scaled together)."""

    def __init__(self, mean: np.ndarray, inner: np.ndarray, window: np.ndarray):
        gy, gx = np.gradient(mean)
        self.level = [_standardised(mean, inner) * window]
        self.edges = [_standardised(np.hypot(gx, gy), inner) * window]
        rms = np.sqrt(np.mean(gx[inner] ** 2 + gy[inner] ** 2))
        scale = window / rms if rms > 0 else 0.0
        self.slope = [np.where(inner, g, 0.0) * scale for g in (gx, gy)]


def _as_bands(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, np.float64)
    return array[None] if array.ndim == 2 else array


def _interior(mask: np.ndarray) -> np.ndarray:
    """Valid pixels whose four neighbours are valid too (where a central difference is defined)."""
    inner = np.zeros_like(mask)
    inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1]
                         & mask[1:-1, :-2] & mask[1:-1, 2:])
    return inner


def _standardised(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`values` with zero mean and unit deviation over `mask`, and zero outside it."""
    inside = values[mask]
    spread = inside.std()
    out = np.zeros_like(values)
    if spread > 0:
        out[mask] = (inside - inside.mean()) / spread
    return out


def _band_mean(bands: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The mean of the bands, each standardised over `mask`; invalid pixels hold the mean (0)."""
    return np.mean([_standardised(np.where(mask, band, 0.0), mask) for band in bands], axis=0)


def _correlate(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, np.ndarray, list]:
    """The peak-to-sidelobe ratio, the whole-pixel peak (rows, cols) and the whitened
    cross-power spectra of `pairs` (refined by `_refined` for the pairing that wins only)."""
    products = []
    for a, b in pairs:
        product = np.conj(np.fft.fft2(a)) * np.fft.fft2(b)
        products.append(product * _lowpass(a.shape) / np.maximum(np.abs(product), 1e-12))
    surfaces = [np.fft.ifft2(p).real for p in products]
    surface = _combined(surfaces)
    peak = np.unravel_index(np.argmax(surface), surface.shape)
    projected = _projected(surfaces, peak)
    confidence = _peak_to_sidelobe(projected, peak)
    if len(surfaces) > 1 and -projected.min() > DIPOLE * projected[peak]:
        confidence = 0.0  # a level against its own derivative: no match (see DIPOLE)
    coarse = np.array([p - n if p > n // 2 else p for p, n in zip(peak, surface.shape)], float)
    return confidence, coarse, products


def _refined(confidence: float, coarse: np.ndarray, products: list) -> Shift:
    fine = _refine(products, coarse)
    return Shift(float(fine[1]), float(fine[0]), confidence)


def _combined(surfaces: list[np.ndarray]) -> np.ndarray:
    """One correlation surface: the real part, or the root sum of squares of several (a slope
    correlates with either sign, along any direction)."""
    if len(surfaces) == 1:
        return surfaces[0].real
    return np.sqrt(sum(s.real ** 2 for s in surfaces))


@lru_cache(maxsize=8)
def _lowpass(shape: tuple[int, int]) -> np.ndarray:
    """A Hann taper of the spectrum to its Nyquist limit: whitening lifts the high frequencies,
    where the two modalities share the least and resampling noise lives."""
    fy = np.abs(np.fft.fftfreq(shape[0]))[:, None]
    fx = np.abs(np.fft.fftfreq(shape[1]))[None, :]
    radius = np.minimum(np.hypot(fx, fy) / LOWPASS, 1.0)
    return 0.5 * (1 + np.cos(np.pi * radius))


def _projected(surfaces: list[np.ndarray], peak: tuple[int, ...]) -> np.ndarray:
    """The surfaces' combination along their direction at `peak` (the slope's azimuth there): a
    plain correlation surface whose sidelobes compare with a single pair's, where the root sum of
    squares would lift them all."""
    weights = np.array([s[peak] for s in surfaces])
    norm = np.sqrt(np.sum(weights ** 2))
    if len(surfaces) == 1 or norm == 0:
        return surfaces[0]
    return sum(w / norm * s for w, s in zip(weights, surfaces))


def _peak_to_sidelobe(surface: np.ndarray, peak: tuple[int, ...]) -> float:
    rows = (np.arange(-SIDELOBE_EXCLUDE, SIDELOBE_EXCLUDE + 1) + peak[0]) % surface.shape[0]
    cols = (np.arange(-SIDELOBE_EXCLUDE, SIDELOBE_EXCLUDE + 1) + peak[1]) % surface.shape[1]
    side = np.ones(surface.shape, bool)
    side[np.ix_(rows, cols)] = False
    rest = surface[side]
    spread = rest.std()
    return float((surface[peak] - rest.mean()) / spread) if spread > 0 else 0.0


def _refine(products: list[np.ndarray], coarse: np.ndarray) -> np.ndarray:
    """The correlation peak near `coarse` (rows, cols), from inverse DFTs of `products` sampled
    every 1/UPSAMPLE px over +-0.75 px around it."""
    coarse = np.round(coarse * UPSAMPLE) / UPSAMPLE
    region = int(np.ceil(UPSAMPLE * 1.5))
    centre = region // 2
    offsets = coarse * UPSAMPLE - centre
    kernels = []
    for axis in (0, 1):
        positions = (np.arange(region) + offsets[axis]) / UPSAMPLE
        frequencies = np.fft.fftfreq(products[0].shape[axis])
        kernels.append(np.exp(2j * np.pi * positions[:, None] * frequencies[None, :])
                       / len(frequencies))
    # numpy's own loops, not BLAS's matmul: its threads, on a busy machine or beside export's
    # other workers, made these small products many times slower (docs/benchmarks.md)
    surface = _combined([np.einsum("ij,jk->ik", np.einsum("ij,jk->ik", kernels[0], p),
                                   kernels[1].T) for p in products])
    peak = np.unravel_index(np.argmax(surface), surface.shape)
    return coarse + (np.array(peak, float) - centre) / UPSAMPLE
