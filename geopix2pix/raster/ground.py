"""Pixel sizes in metres on the ground, whatever the CRS: what --pixel-size means for unpaired
exports, and what predict compares a scene's pixels with the training's by.

A CRS's units are not always ground metres: degrees are not (their east-west length shrinks with
the latitude), and a projection's metres are ground metres only where its scale is 1. Web
Mercator's (EPSG:3857) are 1 / cos(latitude) ground metres: 1.62 at 51.9 degrees north, so its
"10 m" pixels are 6.2 m on the ground there. A pixel is measured by geodesic distances on the
WGS84 ellipsoid at a grid's centre, along each of its axes (a non-conformal projection stretches
them differently). Where both are within `SCALE_TOLERANCE` of a projection's own units (UTM
everywhere in its zone), those are taken as they are, so `--pixel-size 10` on a UTM raster is
exactly 10 of its units.
"""

from __future__ import annotations

import math

import pyproj
from pyproj.exceptions import CRSError, ProjError

from geopix2pix.raster.grid import Grid

SCALE_TOLERANCE = 0.01
WGS84 = pyproj.Geod(ellps="WGS84")


def ground_pixel_size(grid: Grid) -> tuple[float, float] | None:
    """(x, y) size in metres on the ground of a pixel at `grid`'s centre: the geodesic length
    of one pixel's step along each of the grid's axes there (any projection, axis order, unit
    or prime meridian); a projected CRS's own units where both are within `SCALE_TOLERANCE` of
    them. None without a CRS, for one not placed on the Earth (a local engineering CRS), or
    where PROJ cannot place the centre."""
    if grid.crs is None:
        return None
    try:
        crs = pyproj.CRS.from_user_input(grid.crs.to_wkt())
        if crs.geodetic_crs is None:
            return None
        ground = _geodesic_steps(crs, grid)
        if crs.is_projected:
            metres = crs.axis_info[0].unit_conversion_factor
            own = tuple(size * metres for size in grid.pixel_size)
            if all(abs(g / o - 1) <= SCALE_TOLERANCE for g, o in zip(ground, own)):
                return own
    except (CRSError, ProjError, IndexError, ValueError, ZeroDivisionError):
        return None
    return ground if all(math.isfinite(g) and g > 0 for g in ground) else None


def _geodesic_steps(crs: pyproj.CRS, grid: Grid) -> tuple[float, float]:
    """Metres on the WGS84 ellipsoid from the grid's centre to one pixel along each axis."""
    col, row = grid.width / 2, grid.height / 2
    points = [grid.transform @ (col, row), grid.transform @ (col + 1, row),
              grid.transform @ (col, row + 1)]
    to_lonlat = pyproj.Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lons, lats = to_lonlat.transform([p[0] for p in points], [p[1] for p in points])
    return tuple(WGS84.inv(lons[0], lats[0], lons[k], lats[k])[2] for k in (1, 2))


def ground_list(grid: Grid) -> list[float] | None:
    """`ground_pixel_size` as dataset.json records it (rounded to a micrometre), or None."""
    size = ground_pixel_size(grid)
    return None if size is None else [round(v, 6) for v in size]
