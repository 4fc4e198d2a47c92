"""Chip footprints as polygons: filtering by AOI polygons and writing the chips.gpkg index.

This is the only module of the export path that uses geopandas/shapely; training and prediction
never import it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
import shapely.affinity

from geopix2pix.chips.layout import ChipWindow
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.gdal_log import write_error
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.write import atomic_path

INDEX_CRS = "EPSG:4326"


def footprints(chips: Sequence[ChipWindow], grid: Grid) -> np.ndarray:
    """Shapely polygons of the chips in the grid's CRS (exact corners, rotation included)."""
    t = grid.transform
    corners = np.array([[(c.col, c.row), (c.col + c.size, c.row), (c.col + c.size, c.row + c.size),
                         (c.col, c.row + c.size)] for c in chips], dtype=float).reshape(-1, 4, 2)
    xs = t.a * corners[..., 0] + t.b * corners[..., 1] + t.c
    ys = t.d * corners[..., 0] + t.e * corners[..., 1] + t.f
    return shapely.polygons(np.stack([xs, ys], axis=-1))


def _shift_lon(geometry: shapely.Geometry, degrees: float) -> shapely.Geometry:
    """`geometry` moved east by `degrees` of longitude."""
    return shapely.transform(geometry, lambda xy: xy + np.array([degrees, 0.0]))


def split_at_antimeridian(polygons: np.ndarray) -> np.ndarray:
    """EPSG:4326 footprints with longitudes in -180..180, those crossing the antimeridian split
    there into two parts (as GeoJSON, RFC 7946, asks), instead of polygons that seem to span the
    globe the other way; longitudes beyond +-180 (a grid defined past it) are brought back."""
    polygons = np.array(polygons, dtype=object)
    bounds = shapely.bounds(polygons)
    crossing = bounds[:, 2] - bounds[:, 0] > 180  # a chip is never half the globe wide
    for i in np.flatnonzero(crossing | (bounds[:, 0] < -180) | (bounds[:, 2] > 180)):
        polygon = polygons[i]
        if crossing[i]:  # take its western longitudes past +180
            polygon = shapely.transform(polygon, lambda xy: np.where(
                xy < [0.0, -np.inf], xy + [360.0, 0.0], xy))
        parts = [_shift_lon(shapely.intersection(polygon, shapely.box(lo, -90, lo + 360, 90)),
                         -lo - 180) for lo in (-540.0, -180.0, 180.0)]
        polygons[i] = shapely.union_all([p for p in parts if not p.is_empty])
    return polygons


def read_aoi(path: str | os.PathLike, layer: str | None = None) -> gpd.GeoDataFrame:
    """Read AOI polygons from any vector format (its `layer`, or its only layer, or its only
    layer holding polygons), refusing files without a CRS or polygons."""
    path = Path(path)
    if not path.exists():
        raise GeoPix2PixError(f"--aoi {path}: no such file; check the path")
    try:
        layers = [(str(name), kind) for name, kind in pyogrio.list_layers(path)]
        names = [name for name, _ in layers]
        if layer is not None and layer not in names:
            raise GeoPix2PixError(f"--aoi-layer {layer}: {path} has no such layer; its layers: "
                                  f"{', '.join(names)}")
        mapped = [name for name, kind in layers if kind is not None]  # not a table (QGIS styles)
        frames = {name: _polygons(gpd.read_file(path, layer=name))
                  for name in ([layer] if layer is not None else mapped)}
    except GeoPix2PixError:
        raise
    except Exception as exc:  # pyogrio raises several types for unreadable files
        raise GeoPix2PixError(f"--aoi {path} is not a vector file geopandas can read "
                              f"({str(exc).splitlines()[0]})") from None
    holding = [name for name, frame in frames.items() if not frame.empty]
    if len(holding) > 1:
        raise GeoPix2PixError(f"--aoi {path} holds polygons in {len(holding)} layers "
                              f"({', '.join(holding)}); choose one with --aoi-layer")
    if not holding:
        where = f" layer {layer}" if layer is not None else ""
        raise GeoPix2PixError(f"--aoi {path}{where} holds no polygons; pass polygon features")
    aoi = frames[holding[0]]
    if aoi.crs is None:
        raise GeoPix2PixError(f"--aoi {path} has no CRS; save it with one (e.g. a .prj file or "
                              "a GeoPackage)")
    return aoi


def _polygons(frame) -> gpd.GeoDataFrame:
    """The polygons of a layer read (none of a table without geometry), made valid (a
    self-intersecting ring, as hand-drawn AOIs have, would fail their union)."""
    if not isinstance(frame, gpd.GeoDataFrame):
        return gpd.GeoDataFrame(geometry=[])
    kept = frame[frame.geometry.notna() & frame.geometry.geom_type.isin(["Polygon",
                                                                         "MultiPolygon"])]
    return kept.set_geometry(shapely.make_valid(kept.geometry.values), crs=frame.crs)


def aoi_filter(chips: Sequence[ChipWindow], grid: Grid, aoi: gpd.GeoDataFrame,
               mode: str) -> np.ndarray:
    """Boolean array: which chips' footprints overlap the AOI polygons (`intersects`) or lie
    within them (`within`), up to `SLIVER` of a chip's area: an AOI drawn on chips.gpkg's
    footprints (straight in degrees, bowed once on a projected grid) shares slivers with the
    chips around it, and leaves slivers of the chips it covers outside; a chip that shares
    only an edge is outside too. A chip that meets an AOI's plot smaller than a sliver is in."""
    if not chips:
        return np.zeros(0, dtype=bool)
    area = _aoi_around_grid(aoi, grid)
    shapely.prepare(area)
    polygons = footprints(chips, grid)
    sizes = shapely.area(polygons)
    shared = np.where(shapely.contains_properly(area, polygons), sizes, 0.0)
    edge = shapely.intersects(polygons, area) & (shared == 0)  # (the costly ones alone)
    shared[edge] = shapely.area(shapely.intersection(polygons[edge], area))
    if mode == "within":
        return sizes - shared <= SLIVER * sizes
    kept = shared > SLIVER * sizes
    parts = shapely.get_parts(area)  # (each plot of an AOI, each copy a turn away its own)
    tiny = parts[shapely.area(parts) <= SLIVER * sizes.max()]
    if len(tiny):  # a plot smaller than a sliver keeps the chips it lies in
        kept[shapely.STRtree(polygons).query(tiny, predicate="intersects")[1]] = True
    return kept


SLIVER = 0.005  # of a chip's area: what an AOI's edge reprojected and back leaves of a chip


def _aoi_around_grid(aoi: gpd.GeoDataFrame, grid: Grid) -> shapely.Geometry:
    """`aoi_on_grid`, with its copies a turn east and west on a grid in degrees (one defined
    past +-180 degrees meets the AOI a turn away)."""
    area = aoi_on_grid(aoi, grid)
    if grid.crs.is_geographic:
        area = shapely.union_all([area, _shift_lon(area, 360.0), _shift_lon(area, -360.0)])
    return area


def no_chip_refusal(path, aoi: gpd.GeoDataFrame, grids: Sequence[Grid], chip_size: int,
                    mode: str, whose: str, covers: str) -> GeoPix2PixError:
    """The refusal of an --aoi that kept no chip of `whose` (e.g. "the pair(s)") on `grids`:
    with --aoi-mode within, where its polygons do cover part of a grid, that no chip fits in
    them and how large they are there; otherwise to check that it covers `covers`."""
    extent = max((_covered_pixels(aoi, grid) for grid in grids), default=None,
                 key=lambda e: 0 if e is None else e[0] * e[1]) if mode == "within" else None
    if not extent:
        return GeoPix2PixError(f"--aoi {path}: no chip of {whose} {mode} its polygons; check "
                               f"that the AOI covers {covers}")
    raster = "the raster" if len(grids) == 1 else "a raster"
    fits = min(extent) >= chip_size  # a chip would fit, but none of the stride's lattice does
    advice = ("a smaller --stride (chips laid closer, one may then fall inside), a smaller "
              "--chip-size" if fits else "a smaller --chip-size")
    return GeoPix2PixError(
        f"--aoi {path}: no {chip_size}-px chip of {whose} lies within its polygons (the AOI "
        f"covers up to about {extent[0]} x {extent[1]} pixels of {raster}): use {advice} or "
        "--aoi-mode intersects")


def _covered_pixels(aoi: gpd.GeoDataFrame, grid: Grid) -> tuple[int, int] | None:
    """Width and height in pixels of the largest part of the AOI on the grid (within its
    bounds); None where it covers none of it."""
    t = ~grid.transform
    area = shapely.affinity.affine_transform(_aoi_around_grid(aoi, grid),
                                             [t.a, t.b, t.d, t.e, t.c, t.f])
    area = shapely.intersection(area, shapely.box(0, 0, grid.width, grid.height))
    parts = [p for p in shapely.get_parts(area) if p.area > 0]
    if not parts:
        return None
    x0, y0, x1, y1 = max(parts, key=lambda p: p.area).bounds
    return round(x1 - x0), round(y1 - y0)


def aoi_on_grid(aoi: gpd.GeoDataFrame, grid: Grid) -> shapely.Geometry:
    """The AOI's polygons in the grid's CRS, as drawn in their own CRS: clipped to the grid's
    surroundings (a world-wide AOI in degrees has no shape in UTM), then densified, since a long
    edge (a parallel in degrees) is a curve in another CRS, not the chord between its ends."""
    area = shapely.union_all(aoi.geometry.values)
    if aoi.crs != grid.crs:
        around = _surroundings(grid, aoi.crs)
        if around is not None:
            box, size = around
            area = shapely.segmentize(shapely.intersection(area, box), size / DENSIFY)
        area = gpd.GeoSeries([area], crs=aoi.crs).to_crs(grid.crs).iloc[0]
    return shapely.make_valid(area) if not area.is_valid else area


DENSIFY = 1024  # AOI edges are cut into pieces of 1 / DENSIFY of the grid's surroundings


def _surroundings(grid: Grid, crs) -> tuple[shapely.Geometry, float] | None:
    """A box in `crs` around the grid, three times its extent (in degrees, with its copies a
    turn east and west: a grid across the antimeridian, or defined past it, meets an AOI stored
    in -180..180 there), and that extent; None where the grid has no finite place in `crs`."""
    t = grid.transform
    outline = shapely.segmentize(shapely.Polygon([t @ (0, 0), t @ (grid.width, 0),
                                                  t @ (grid.width, grid.height),
                                                  t @ (0, grid.height)]),
                                 max(grid.width * grid.pixel_size[0],
                                     grid.height * grid.pixel_size[1]) / 64)  # (any rotation)
    try:
        xy = shapely.get_coordinates(gpd.GeoSeries([outline], crs=grid.crs).to_crs(crs).iloc[0])
    except Exception:  # pyproj cannot place it there
        return None
    if not len(xy) or not np.isfinite(xy).all():
        return None
    xs, ys = xy[:, 0], xy[:, 1]
    if crs.is_geographic and np.ptp(xs) > 180:  # across the antimeridian: continuous longitudes
        xs = np.where(xs < 0, xs + 360.0, xs)
    width, height = np.ptp(xs), np.ptp(ys)
    box = shapely.box(xs.min() - width, ys.min() - height, xs.max() + width, ys.max() + height)
    if crs.is_geographic:
        box = shapely.union_all([box, _shift_lon(box, 360.0), _shift_lon(box, -360.0)])
    return box, 3 * max(width, height)


def write_index(path: Path, records: Sequence[dict], chips: Sequence[ChipWindow],
                grids: dict[int, Grid], columns: dict[int, dict]) -> None:
    """chips.gpkg: one feature per chip (its record: id, pair, offsets, split, valid fraction;
    the `columns` of its pair or raster, e.g. their paths; its native CRS), footprints in
    EPSG:4326 so scenes in different CRSs share one layer. `grids` and `columns` are by the
    chips' `ChipWindow.pair`."""
    frames = []
    for pair, grid in grids.items():
        rows = [(r, c) for r, c in zip(records, chips) if c.pair == pair]
        if not rows:
            continue
        frame = gpd.GeoDataFrame(
            [dict(r, **columns[pair], crs=grid.crs.to_string()) for r, _ in rows],
            geometry=footprints([c for _, c in rows], grid), crs=grid.crs,
        ).to_crs(INDEX_CRS)
        frame.geometry = split_at_antimeridian(frame.geometry.values)
        frames.append(frame)
    index = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=INDEX_CRS)
    with atomic_path(path, overwrite=True, own=True) as temp:
        try:
            with _no_journal():
                index.to_file(temp, layer="chips", driver="GPKG")
        except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
            raise write_error(path, _ogr_reason(exc), temp) from None


@contextlib.contextmanager
def _no_journal() -> Iterator[None]:
    """SQLite's rollback journal off while the block writes a GeoPackage: the index is written
    under a temporary name and renamed when complete, so the journal would protect nothing, and
    it needs room beyond the finished file (a disk with room for the index could refuse it)."""
    before = pyogrio.get_gdal_config_option("OGR_SQLITE_JOURNAL")
    pyogrio.set_gdal_config_options({"OGR_SQLITE_JOURNAL": "OFF"})
    try:
        yield
    finally:
        pyogrio.set_gdal_config_options({"OGR_SQLITE_JOURNAL": before})


def _ogr_reason(exc: Exception) -> str:
    """What went wrong in OGR's words, without the SQL it ran: SQLite's errors quote the whole
    statement ("sqlite3_exec(CREATE TABLE ...) failed: database or disk is full")."""
    text = " ".join(str(exc).split())
    if text.startswith("sqlite3_exec(") and ") failed: " in text:
        text = text.rsplit(") failed: ", 1)[1]
    return text if len(text) <= 200 else text[:200] + "..."
