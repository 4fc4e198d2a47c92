"""Pixel sizes in metres on the ground, whatever the CRS: what --pixel-size means for unpaired
exports, and what predict compares a scene's pixels with the training's by.

A CRS's units are not always ground metres: degrees are not (their east-west length shrinks with
the latitude), and a projection's metres are ground metres only where its scale is 1. Web
Mercator's (EPSG:3857) are 1 / cos(latitude) ground metres: 1.62 at 51.9 degrees north, so its
"10 m" pixels are 6.2 m on the ground there. Where a projection's scale at a grid's centre is
within `SCALE_TOLERANCE` of 1 (UTM everywhere in its zone), its units are taken as they are, so
`--pixel-size 10` on a UTM raster is exactly 10 of its units.
"""

from __future__ import annotations

import math

import pyproj
from pyproj.exceptions import CRSError, ProjError

from geopix2pix.raster.grid import Grid

METRES_PER_DEGREE_LAT, METRES_PER_DEGREE_LON = 110_574.0, 111_320.0  # at the equator
SCALE_TOLERANCE = 0.01


def ground_pixel_size(grid: Grid) -> tuple[float, float] | None:
    """(x, y) size in metres on the ground of a pixel at `grid`'s centre; None without a CRS or
    for a CRS whose units PROJ cannot measure."""
    if grid.crs is None:
        return None
    x, y = grid.pixel_size
    centre = grid.transform @ (grid.width / 2, grid.height / 2)
    try:
        crs = pyproj.CRS.from_user_input(grid.crs.to_wkt())
        if crs.is_geographic:
            latitude = _latitude(crs, centre)
            return (x * METRES_PER_DEGREE_LON * math.cos(math.radians(latitude)),
                    y * METRES_PER_DEGREE_LAT)
        metres = crs.axis_info[0].unit_conversion_factor
        scale = _scale(crs, centre)
    except (CRSError, ProjError, IndexError, ValueError):
        return None
    if abs(scale - 1) <= SCALE_TOLERANCE or not math.isfinite(scale) or scale <= 0:
        scale = 1.0
    return x * metres / scale, y * metres / scale


def _latitude(crs: pyproj.CRS, point: tuple[float, float]) -> float:
    """The latitude of `point` (in a geographic `crs`, whatever its axis order)."""
    to_lonlat = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    return max(-90.0, min(90.0, to_lonlat.transform(*point)[1]))


def _scale(crs: pyproj.CRS, point: tuple[float, float]) -> float:
    """The projection's scale (projected distance per ground distance) at `point`: the mean of
    its meridional and parallel scales (equal in a conformal projection); 1 where PROJ cannot
    say."""
    geodetic = crs.geodetic_crs
    if geodetic is None:
        return 1.0
    lon, lat = pyproj.Transformer.from_crs(crs, geodetic, always_xy=True).transform(*point)
    if not (math.isfinite(lon) and math.isfinite(lat)):
        return 1.0
    factors = pyproj.Proj(crs).get_factors(lon, lat)
    return (factors.meridional_scale + factors.parallel_scale) / 2


def ground_list(grid: Grid) -> list[float] | None:
    """`ground_pixel_size` as dataset.json records it (rounded to a micrometre), or None."""
    size = ground_pixel_size(grid)
    return None if size is None else [round(v, 6) for v in size]
