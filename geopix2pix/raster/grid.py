"""Pixel grids: a CRS, an affine transform and a size, and how two rasters' grids relate.

The SOURCE raster of a pair is the reference grid. Everything else (the target raster, AOIs, chip
footprints) is expressed in that grid's pixel coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine
from rasterio.crs import CRS
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds

from geopix2pix.errors import GeoPix2PixError

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class Grid:
    """A raster's pixel grid: CRS, affine transform (pixel corner based) and size."""

    crs: CRS | None
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset) -> Grid:
        """The grid of an open rasterio dataset."""
        return cls(dataset.crs, dataset.transform, dataset.width, dataset.height)

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
        col, row = ~other.transform @ (self.transform.c, self.transform.f)
        if abs(col - round(col)) > tolerance or abs(row - round(row)) > tolerance:
            return None
        return int(round(row)), int(round(col))


def bounds_in(bounds: Bounds, src_crs: CRS, dst_crs: CRS) -> Bounds:
    """Bounds reprojected to another CRS, densified so curved edges are enclosed."""
    if src_crs == dst_crs:
        return bounds
    return transform_bounds(src_crs, dst_crs, *bounds, densify_pts=21)


def overlap_window(source: Grid, target: Grid, source_name: str, target_name: str) -> Window:
    """The window of the source grid, in whole pixels, covered by both rasters' footprints.

    Raises GeoPix2PixError (with both bounds in the source CRS) when they do not overlap.
    """
    target_bounds = bounds_in(target.bounds, target.crs, source.crs)
    window = from_bounds(*target_bounds, transform=source.transform)
    col0 = max(0, math.ceil(window.col_off - 1e-6))
    row0 = max(0, math.ceil(window.row_off - 1e-6))
    col1 = min(source.width, math.floor(window.col_off + window.width + 1e-6))
    row1 = min(source.height, math.floor(window.row_off + window.height + 1e-6))
    if col1 <= col0 or row1 <= row0:
        sb = ", ".join(f"{v:.6g}" for v in source.bounds)
        tb = ", ".join(f"{v:.6g}" for v in target_bounds)
        raise GeoPix2PixError(
            f"{source_name} and {target_name} do not overlap: source bounds ({sb}) vs target "
            f"bounds ({tb}) in {source.crs}; pass a target that covers the source scene"
        )
    return Window(col0, row0, col1 - col0, row1 - row0)
