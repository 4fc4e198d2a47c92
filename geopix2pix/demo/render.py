"""Rendering a `Landscape` into the rasters of each demo task (numpy only, deterministic).

- ``dsm2image``: elevation (float32 m, a -9999 void) -> shaded relief (uint8, sun from the
  north-west at 45 degrees, 0 = nodata), the way ``gdaldem hillshade -az 315 -alt 45`` shades.
- ``sat2map``: a satellite-like RGB texture (uint8) -> a cartographic map (uint8 RGB, flat colours
  per land cover class, like a topographic map's area fills).
- ``sar2optical``: SAR-like backscatter (float32 dB, VV and VH, multiplicative speckle, NaN outside
  the swath) -> the optical RGB image (uint8).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from geopix2pix.demo.terrain import BARE, FIELD, FOREST, ROAD, URBAN, WATER, Landscape

DEM_NODATA = -9999.0
SUN_AZIMUTH = 315.0
SUN_ALTITUDE = 45.0

# Satellite-like surface colours (RGB) and how strongly the fine texture modulates each class.
SURFACE = {WATER: (34, 58, 80), FOREST: (46, 74, 40), FIELD: (150, 150, 95), URBAN: (158, 146, 140),
           BARE: (146, 134, 118), ROAD: (118, 116, 112)}
TEXTURE = {WATER: 0.05, FOREST: 0.22, FIELD: 0.06, URBAN: 0.18, BARE: 0.16, ROAD: 0.04}
CROPS = np.array([(92, 128, 58), (132, 150, 70), (186, 166, 106), (140, 108, 78)], np.float32)
# Cartographic fills (RGB), in the spirit of common web-map styles.
MAP_COLOURS = {WATER: (170, 211, 223), FOREST: (173, 209, 158), FIELD: (238, 240, 213),
               URBAN: (214, 178, 178), BARE: (226, 218, 200), ROAD: (247, 186, 90)}
# Mean backscatter per class, dB (VV, VH): water is a mirror, towns are corner reflectors.
BACKSCATTER = {WATER: (-21.0, -28.0), FOREST: (-7.0, -12.0), FIELD: (-13.0, -21.0),
               URBAN: (-1.0, -9.0), BARE: (-11.0, -19.0), ROAD: (-17.0, -25.0)}


@dataclass
class RenderedPair:
    """A source and target array (bands, rows, cols) with what the GeoTIFFs need to say."""

    source: np.ndarray
    target: np.ndarray
    source_nodata: float | None
    target_nodata: float | None
    source_descriptions: list[str] = field(default_factory=list)
    target_descriptions: list[str] = field(default_factory=list)
    source_units: list[str] = field(default_factory=list)
    target_units: list[str] = field(default_factory=list)


def _lookup(cover: np.ndarray, table: dict) -> np.ndarray:
    """Per-class values (a dict class -> scalar or tuple) -> (bands, rows, cols) float32."""
    size = max(table) + 1
    first = np.atleast_1d(np.asarray(next(iter(table.values())), dtype=np.float32))
    lut = np.zeros((size, first.size), dtype=np.float32)
    for cls, value in table.items():
        lut[cls] = value
    return np.moveaxis(lut[cover], -1, 0)


def surface_gradient(dem: np.ndarray, pixel_size: float) -> tuple[np.ndarray, np.ndarray]:
    """(dz/dEast, dz/dNorth) with Horn's 3x3 kernel (edges replicated), as gdaldem computes it."""
    z = np.pad(dem.astype(np.float64), 1, mode="edge")
    a, b, c = z[:-2, :-2], z[:-2, 1:-1], z[:-2, 2:]
    d, f = z[1:-1, :-2], z[1:-1, 2:]
    g, h, i = z[2:, :-2], z[2:, 1:-1], z[2:, 2:]
    dz_east = ((c + 2 * f + i) - (a + 2 * d + g)) / (8 * pixel_size)
    dz_south = ((g + 2 * h + i) - (a + 2 * b + c)) / (8 * pixel_size)
    return dz_east, -dz_south


def illumination(dem: np.ndarray, pixel_size: float, azimuth: float = SUN_AZIMUTH,
                 altitude: float = SUN_ALTITUDE) -> np.ndarray:
    """Cosine of the angle between the surface normal and the sun, clipped at 0 (shadow)."""
    dz_east, dz_north = surface_gradient(dem, pixel_size)
    az, alt = np.radians(azimuth), np.radians(altitude)
    sun = (np.sin(az) * np.cos(alt), np.cos(az) * np.cos(alt), np.sin(alt))
    cos = (-dz_east * sun[0] - dz_north * sun[1] + sun[2]) / np.sqrt(1 + dz_east**2 + dz_north**2)
    return np.clip(cos, 0.0, 1.0)


def void_mask(shape: tuple[int, int], rng: np.random.Generator, radius: float = 0.06) -> np.ndarray:
    """An irregular elliptical hole, like a DEM void under cloud or in radar shadow."""
    rows, cols = shape
    r0, c0 = rng.uniform(0.25, 0.75) * rows, rng.uniform(0.25, 0.75) * cols
    ry, rx = radius * rows * rng.uniform(0.7, 1.3), radius * cols * rng.uniform(0.7, 1.3)
    r = np.arange(rows)[:, None]
    c = np.arange(cols)[None, :]
    return ((r - r0) / ry) ** 2 + ((c - c0) / rx) ** 2 <= 1.0


def _dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation."""
    padded = np.pad(mask, 1)
    out = np.zeros_like(mask)
    for dr in range(3):
        for dc in range(3):
            out |= padded[dr:dr + mask.shape[0], dc:dc + mask.shape[1]]
    return out


def render_dsm2image(land: Landscape, rng: np.random.Generator) -> RenderedPair:
    """DEM with a -9999 void -> hillshade (uint8 1..255; 0 where any 3x3 neighbour is void)."""
    void = void_mask(land.shape, rng)
    dem = np.where(void, DEM_NODATA, land.dem).astype(np.float32)
    shade = 1 + np.rint(254 * illumination(land.dem, land.pixel_size))
    shade[_dilate(void)] = 0
    return RenderedPair(dem[None], shade.astype(np.uint8)[None], DEM_NODATA, 0.0,
                        ["elevation"], ["hillshade az315 alt45"], ["metre"], [""])


def optical(land: Landscape, rng: np.random.Generator) -> np.ndarray:
    """A satellite-like true-colour image (3, rows, cols) uint8 of the landscape."""
    cover = land.cover
    rgb = _lookup(cover, SURFACE)
    crop = CROPS[np.minimum((land.parcel * len(CROPS)).astype(int), len(CROPS) - 1)]
    fields = cover == FIELD
    rgb[:, fields] = np.moveaxis(crop, -1, 0)[:, fields]
    roofs = rng.uniform(0.75, 1.3, (cover.shape[0] // 3 + 1, cover.shape[1] // 3 + 1))
    roofs = roofs.repeat(3, 0).repeat(3, 1)[: cover.shape[0], : cover.shape[1]]
    grain = 1 + _lookup(cover, TEXTURE)[0] * land.texture
    grain = np.where(cover == URBAN, grain * roofs, grain)
    light = 0.55 + 0.6 * illumination(land.dem, land.pixel_size)
    rgb = rgb * (grain * light)[None] + rng.normal(0, 2.0, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def cartographic(cover: np.ndarray) -> np.ndarray:
    """The map: one flat colour per land cover class, (3, rows, cols) uint8."""
    return _lookup(cover, MAP_COLOURS).astype(np.uint8)


def render_sat2map(land: Landscape, rng: np.random.Generator) -> RenderedPair:
    """Satellite-like RGB -> cartographic RGB map (both uint8, no nodata)."""
    return RenderedPair(optical(land, rng), cartographic(land.cover), None, None,
                        ["red", "green", "blue"], ["red", "green", "blue"])


def backscatter(land: Landscape, rng: np.random.Generator, looks: int = 4) -> np.ndarray:
    """SAR-like (VV, VH) backscatter in dB: class means, parcel and texture variation, slopes
    facing the sensor (looking west from the east) brighter, then multiplicative speckle."""
    db = _lookup(land.cover, BACKSCATTER)
    fields = land.cover == FIELD
    db[:, fields] += 5.0 * (land.parcel[fields] - 0.5)
    db += 1.0 * land.texture[None]
    dz_east, _ = surface_gradient(land.dem, land.pixel_size)
    db += np.clip(-6.0 * dz_east, -4.0, 4.0)[None]
    intensity = 10 ** (db / 10) * rng.gamma(looks, 1.0 / looks, db.shape)
    return (10 * np.log10(intensity)).astype(np.float32)


def swath_edge(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Pixels beyond a slanted swath edge across one corner (no SAR data there)."""
    rows, cols = shape
    r = np.arange(rows)[:, None] / rows
    c = np.arange(cols)[None, :] / cols
    return r + c * rng.uniform(0.8, 1.2) > rng.uniform(1.65, 1.8)


def render_sar2optical(land: Landscape, rng: np.random.Generator) -> RenderedPair:
    """SAR dB (NaN beyond the swath and in a void) -> optical RGB uint8."""
    sar = backscatter(land, rng)
    sar[:, swath_edge(land.shape, rng) | void_mask(land.shape, rng, radius=0.03)] = np.nan
    return RenderedPair(sar, optical(land, rng), float("nan"), None, ["VV", "VH"],
                        ["red", "green", "blue"], ["dB", "dB"], [])


RENDERERS = {"dsm2image": render_dsm2image, "sat2map": render_sat2map,
             "sar2optical": render_sar2optical}
