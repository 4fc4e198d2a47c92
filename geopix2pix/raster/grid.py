"""Pixel grids: a CRS, an affine transform and a size, and how two rasters' grids relate.

The SOURCE raster of a pair is the reference grid. Everything else (the target raster, AOIs, chip
footprints) is expressed in that grid's pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine
from rasterio._err import CPLE_BaseError
from rasterio.crs import CRS
from rasterio.warp import transform
from rasterio.windows import Window

from geopix2pix.errors import GeoPix2PixError

Bounds = tuple[float, float, float, float]
LATTICE = 32  # steps per side of the source points tried inside a target (overlap_window)
# A raster resampled to finer pixels holds at most this many pixels per pixel of its own (export
# --pixel-size, predict --resample-to-model): past it, hours and gigabytes of interpolated pixels.
MAX_PIXELS_FACTOR = 64


ROTATION_TOLERANCE = 0.01  # pixels a grid's rotation terms move its far corner: below, none


def orientation(transform: Affine, width: int = 1, height: int = 1) -> str | None:
    """How a grid's pixel order differs from north-up (rows from north to south, columns from
    west to east), in words; None when north-up. Rotation terms that move no corner of a
    `width` x `height` grid by `ROTATION_TOLERANCE` of a pixel are rounding, not rotation."""
    x_size, y_size = math.hypot(transform.a, transform.d), math.hypot(transform.b, transform.e)
    if abs(transform.b) * height > ROTATION_TOLERANCE * x_size or \
            abs(transform.d) * width > ROTATION_TOLERANCE * y_size:
        return "rotated (its geotransform has rotation terms)"
    if transform.e > 0:
        return "bottom-up (its rows run from south to north)"
    if transform.a < 0:
        return "mirrored (its columns run from east to west)"
    return None


def not_north_up_warning(name: str, grid: Grid, use: str, flips_learnt: bool = False
                         ) -> str | None:
    """A warning for a raster `name` on `grid` whose pixels are not stored north-up: models see
    pixels in their stored order, so its ground looks turned against north-up rasters' to a
    model; `use` says what is done with it (e.g. 'its chips are cut in that order'). A model
    that learnt flips (`flips_learnt`: --augment flip or d4) minds a bottom-up or mirrored one
    not."""
    stored = orientation(grid.transform, grid.width, grid.height)
    if stored is None or (flips_learnt and not stored.startswith("rotated")):
        return None
    northup = f"{Path(name).with_suffix('')}_northup.tif"
    return (f"{name} is stored {stored}: {use}, so a model sees its ground turned against "
            "north-up rasters' (a hillshade's sun, a radar's look direction), and learns or "
            f"predicts it so; warp it north-up first (gdalwarp {name} {northup})")


@dataclass(frozen=True)
class Grid:
    """A raster's pixel grid: CRS, affine transform (pixel corner based) and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int
    # A raster without CRS may still be placed on the Earth by ground control points or RPCs:
    # rasterio's creation keywords for them (gcps and their crs, rpcs), kept on outputs
    control_points: dict[str, Any] = field(default_factory=dict, compare=False)
    # Its AREA_OR_POINT tag, kept on outputs: GDAL reads a Point raster's transform shifted by
    # half a pixel (none with GTIFF_POINT_GEO_IGNORE=TRUE), and writes one so it reads back
    area_or_point: str | None = field(default=None, compare=False)

    @classmethod
    def of(cls, dataset) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(dataset.crs, dataset.transform, dataset.width, dataset.height,
                   control_points(dataset), dataset.tags().get("AREA_OR_POINT"))

    @property
    def bounds(self) -> Bounds:
        """(left, bottom, right, top) in the grid's CRS."""
        corners = [self.transform @ (c, r) for c in (0, self.width) for r in (0, self.height)]
        xs, ys = zip(*corners)
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def pixel_size(self) -> tuple[float, float]:
        """(x, y) pixel size in CRS units, both positive."""
        a, b, _, d, e, _ = self.transform[:6]
        return math.hypot(a, d), math.hypot(b, e)

    def window_transform(self, window: Window) -> Affine:
        """The transform of a window of this grid (exact, no rounding)."""
        return self.transform @ Affine.translation(window.col_off, window.row_off)

    def moved(self, dx: float, dy: float) -> Grid:
        """This grid moved by (dx, dy) of its own pixels (columns, rows)."""
        return Grid(self.crs, self.transform @ Affine.translation(dx, dy), self.width,
                    self.height, self.control_points, self.area_or_point)

    def is_same(self, other: Grid) -> bool:
        """True when both grids are the same pixels: same CRS, transform and size."""
        return (
            self.crs == other.crs
            and self.transform.almost_equals(other.transform, precision=1e-9)
            and (self.width, self.height) == (other.width, other.height)
        )

    def integer_offset(self, other: Grid, tolerance: float = 1e-6) -> tuple[int, int] | None:
        """(row, col) of this grid's origin in `other`'s pixels when both share CRS, pixel size
        and rotation and differ by a whole number of pixels (no resampling needed), else None."""
        if self.crs != other.crs or self.crs is None:
            return None
        if not all(math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)
                   for x, y in zip(self.transform[:2] + self.transform[3:5],
                                   other.transform[:2] + other.transform[3:5])):
            return None
        cols, rows = points_in_pixels(np.array([self.transform.c]),
                                      np.array([self.transform.f]), self.crs, other)
        col, row = float(cols[0]), float(rows[0])  # a grid in degrees may be written 360 off
        if abs(col - round(col)) > tolerance or abs(row - round(row)) > tolerance:
            return None
        col = round(col)
        if self.crs.is_geographic and self.width * self.pixel_size[0] >= 360.0 - 1e-9:
            turn = 360.0 / self.pixel_size[0]  # (the columns of one turn of the globe)
            if abs(turn - round(turn)) < 1e-6:  # this grid's start at or west of `other`'s
                col -= round(turn) * math.ceil(col / round(turn))
            if col > 0 or other.width - col > self.width:
                return None  # (`other` runs past this grid's edge, onto its other end: warped)
        return int(round(row)), int(col)


def control_points(dataset) -> dict[str, Any]:
    """The GCPs (with their CRS) and RPCs of a raster without CRS, as creation keywords."""
    if dataset.crs is not None:
        return {}
    keywords: dict[str, Any] = {}
    gcps, gcp_crs = dataset.gcps
    if gcps:
        keywords.update(gcps=gcps, crs=gcp_crs)
    if dataset.rpcs is not None:
        keywords["rpcs"] = dataset.rpcs
    return keywords


def _edge_points(grid: Grid, per_edge: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Points along the grid's outline (corners included), in its CRS: (xs, ys)."""
    steps = np.linspace(0.0, 1.0, per_edge)
    cols = np.concatenate([steps, np.ones_like(steps), steps[::-1], np.zeros_like(steps)])
    rows = np.concatenate([np.zeros_like(steps), steps, np.ones_like(steps), steps[::-1]])
    t = grid.transform
    cols, rows = cols * grid.width, rows * grid.height
    return t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f


def outline_in_pixels(grid: Grid, reference: Grid) -> tuple[np.ndarray, np.ndarray]:
    """`grid`'s densified outline in `reference`'s pixel coordinates: (cols, rows)."""
    return points_in_pixels(*_edge_points(grid), grid.crs, reference)


def points_in_pixels(xs: np.ndarray, ys: np.ndarray, crs: CRS | None,
                     reference: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Points in `crs` as `reference`'s pixel coordinates: (cols, rows).

    Longitudes in a geographic reference CRS are taken on the same side of the antimeridian as
    the reference's centre, so a footprint crossing it (e.g. a UTM zone 60 scene seen from a
    grid spanning 179.5..180.5 degrees) is not read as spanning the globe the other way.
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if crs != reference.crs:
        try:
            xs, ys = (np.asarray(v) for v in transform(crs, reference.crs, xs, ys))
        except CPLE_BaseError:  # a point outside the reference CRS's domain: none is placed
            return np.full_like(xs, np.inf), np.full_like(ys, np.inf)
    if reference.crs is not None and reference.crs.is_geographic:  # -179.9 is 180.1 here
        centre = reference.transform @ (reference.width / 2, reference.height / 2)
        xs = centre[0] + (xs - centre[0] + 180.0) % 360.0 - 180.0
    inverse = ~reference.transform
    return (inverse.a * xs + inverse.b * ys + inverse.c,
            inverse.d * xs + inverse.e * ys + inverse.f)


def overlap_window(source: Grid, target: Grid, source_name: str, target_name: str) -> Window:
    """The window of the source grid, in whole pixels, covered by both rasters' footprints:
    the target's outline seen in source pixels, with the source pixels that see the target (a
    target's outline does not bound it everywhere: around a pole, a polar target's outline is a
    ring that the land inside it lies outside of, in degrees).

    Raises GeoPix2PixError (with both bounds) when they do not overlap.
    """
    cols, rows = outline_in_pixels(target, source)
    seen_cols, seen_rows = _pixels_seeing(source, target)
    if _outside_box(seen_cols, seen_rows, cols, rows):  # the outline does not bound the target
        step_c, step_r = source.width / LATTICE, source.height / LATTICE  # between the points
        cols = np.concatenate([cols, [seen_cols.min() - step_c, seen_cols.max() + step_c]])
        rows = np.concatenate([rows, [seen_rows.min() - step_r, seen_rows.max() + step_r]])
    finite = np.isfinite(cols) & np.isfinite(rows)  # points PROJ cannot transform are inf
    if finite.any():
        cols, rows = cols[finite], rows[finite]
        col0 = max(0, math.ceil(cols.min() - 1e-6))
        row0 = max(0, math.ceil(rows.min() - 1e-6))
        col1 = min(source.width, math.floor(cols.max() + 1e-6))
        row1 = min(source.height, math.floor(rows.max() + 1e-6))
    if not finite.any() or col1 <= col0 or row1 <= row0:
        raise GeoPix2PixError(
            f"{source_name} and {target_name} do not overlap: source bounds "
            f"({_format_bounds(source)}) in "
            f"{source.crs} vs target bounds ({_format_bounds(target)}) in {target.crs}; pass a "
            "target that covers the source scene"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)


def _outside_box(cols: np.ndarray, rows: np.ndarray, box_cols: np.ndarray,
                 box_rows: np.ndarray) -> bool:
    """Whether any point (cols, rows) lies outside the bounding box of the finite box points
    (with a pixel's slack)."""
    finite = np.isfinite(box_cols) & np.isfinite(box_rows)
    if not len(cols):
        return False
    if not finite.any():
        return True
    inner = (cols >= box_cols[finite].min() - 1) & (cols <= box_cols[finite].max() + 1) \
        & (rows >= box_rows[finite].min() - 1) & (rows <= box_rows[finite].max() + 1)
    return not inner.all()


def _pixels_seeing(source: Grid, target: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Points, in source pixels, of a `LATTICE` x `LATTICE` lattice over the source that fall
    inside the target; empty arrays when none does."""
    fractions = np.linspace(0.0, 1.0, LATTICE + 1)
    cols, rows = np.meshgrid(fractions * source.width, fractions * source.height)
    xs, ys = source.transform @ (cols.ravel(), rows.ravel())
    tcols, trows = points_in_pixels(xs, ys, source.crs, target)
    inside = (tcols >= 0) & (tcols <= target.width) & (trows >= 0) & (trows <= target.height)
    if not inside.any():
        return np.empty(0), np.empty(0)
    cols, rows = cols.ravel()[inside], rows.ravel()[inside]
    return cols, rows


def _format_bounds(grid: Grid) -> str:
    """Bounds to a millimetre in metres, 1e-7 degree or better (10 significant digits)."""
    return ", ".join(f"{v:.10g}" for v in grid.bounds)
