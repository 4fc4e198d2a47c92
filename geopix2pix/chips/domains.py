"""The two collections of an unpaired export (`chips.unpaired`): which rasters make each domain
(--source/--target, a --rasters CSV with path,domain columns, or lists), checked before any
raster is opened; the grid each raster's chips are cut on (its own, or resampled to
--pixel-size); and the warning when the domains' ground pixel sizes are far apart."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from affine import Affine

from geopix2pix.chips.pairs import csv_rows, listed_file
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.grid import MAX_PIXELS_FACTOR, Grid
from geopix2pix.raster.ground import ground_pixel_size
from geopix2pix.raster.io import full_path, raster_path

DOMAINS = ("source", "target")
PIXEL_SIZE_RATIO = 2.0  # domains whose ground pixel sizes differ more than this are warned of
# metres per degree (WGS84 mean): a geographic raster's ground size; a chip's is what matters

Listed = list[tuple[Path | str, str]]  # (raster, domain)


def domain_rasters(unpaired: bool, paired_inputs: bool, sources, targets, rasters) -> Listed:
    """Each raster of an unpaired export with its domain, sources first; one-line errors for
    rasters listed by domain without `unpaired`, `unpaired` with SOURCE TARGET or --pairs
    (`paired_inputs`), both --source/--target and --rasters, a domain without any raster, and
    a raster listed twice."""
    given = [name for name, value in (("--source", sources), ("--target", targets),
                                      ("--rasters", rasters)) if value]
    if not unpaired:
        raise GeoPix2PixError(f"{'/'.join(given)} list(s) the rasters of an unpaired export: add "
                              "--unpaired (for pairs, give SOURCE TARGET or --pairs)")
    if paired_inputs:
        raise GeoPix2PixError("--unpaired takes its rasters from --source/--target or --rasters, "
                              "not from SOURCE TARGET or --pairs")
    if rasters is not None and (sources or targets):
        raise GeoPix2PixError("give the unpaired rasters as --source/--target or as --rasters "
                              "CSV, not both")
    listed = _from_csv_or_list(rasters) if rasters is not None else \
        [(path, "source") for path in _paths(sources, "sources")] + \
        [(path, "target") for path in _paths(targets, "targets")]
    for domain in DOMAINS:
        if not any(d == domain for _, d in listed):
            raise GeoPix2PixError(f"--unpaired needs rasters of both domains and none is of the "
                                  f"{domain} domain: add --{domain} RASTER (or a {domain} row "
                                  "to --rasters)")
    _check_distinct(listed)
    return sorted(listed, key=lambda item: DOMAINS.index(item[1]))


def _paths(paths, name: str) -> list[Path | str]:
    """A domain's rasters given as a list of paths (a single path is a list of one)."""
    if paths is None:
        return []
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, Sequence) or not all(isinstance(p, (str, os.PathLike))
                                                  for p in paths):
        raise GeoPix2PixError(f"{name}={paths!r}: expected a list of raster paths")
    return [raster_path(p) for p in paths]


def _from_csv_or_list(rasters) -> Listed:
    if isinstance(rasters, (str, os.PathLike)):
        return read_rasters_csv(rasters)
    if not isinstance(rasters, Sequence):
        raise GeoPix2PixError(f"rasters={rasters!r}: expected a path,domain CSV or a list of "
                              "(path, domain) pairs")
    listed = []
    for index, item in enumerate(rasters):
        if not (isinstance(item, Sequence) and len(item) == 2
                and isinstance(item[0], (str, os.PathLike)) and item[1] in DOMAINS):
            raise GeoPix2PixError(f"rasters[{index}]={item!r}: expected a (path, domain) pair "
                                  "with domain 'source' or 'target'")
        listed.append((raster_path(item[0]), item[1]))
    return listed


def read_rasters_csv(path: str | os.PathLike) -> Listed:
    """(raster, domain) from a CSV with `path,domain` columns, paths relative to the CSV's
    folder, each domain `source` or `target`."""
    listed = []
    for where, row in csv_rows(path, "--rasters", ("path", "domain"), "one path and one domain"):
        typed, domain = ((row.get(name) or "").strip() for name in ("path", "domain"))
        if not typed:
            raise GeoPix2PixError(f"{where}: a path is needed; fill it in or remove the line")
        if domain.lower() not in DOMAINS:
            raise GeoPix2PixError(f"{where}: domain {domain!r} is neither source nor target; "
                                  "write source or target")
        listed.append((listed_file(typed, Path(path), where, "raster"), domain.lower()))
    return listed


def _check_distinct(listed: Listed) -> None:
    """A raster listed twice would give its chips twice (or to both domains)."""
    seen: dict[str, str] = {}
    for path, domain in listed:
        key = full_path(path)
        if key in seen:
            raise GeoPix2PixError(f"{path} is listed twice ({seen[key]} and {domain}); list "
                                  "each raster once, in one domain")
        seen[key] = domain


def ground_size(grid: Grid) -> tuple[float, float]:
    """(x, y) pixel size in metres on the ground (`raster.ground`), or in the grid's units where
    they cannot be measured (no CRS)."""
    return ground_pixel_size(grid) or grid.pixel_size


def cut_grid(grid: Grid, pixel_size: float | None) -> Grid:
    """The grid a raster's chips are cut on: its own, or with --pixel-size the north-up grid of
    `pixel_size` metres over the same bounds in its CRS (origin at its top-left corner)."""
    if pixel_size is None:
        return grid
    metres_x, metres_y = ground_size(grid)
    dx = pixel_size * grid.pixel_size[0] / metres_x
    dy = pixel_size * grid.pixel_size[1] / metres_y
    left, bottom, right, top = grid.bounds
    return Grid(grid.crs, Affine(dx, 0.0, left, 0.0, -dy, top),
                max(1, round((right - left) / dx)), max(1, round((top - bottom) / dy)))


def check_cut_size(native: Grid, grid: Grid, path, domain: str, pixel_size: float) -> None:
    """Refuse a --pixel-size that would cut a raster on a grid of more than `MAX_PIXELS_FACTOR`
    times its own pixels (a 300 m raster at 10 m: 900 times, interpolated, no finer)."""
    factor = grid.width * grid.height / (native.width * native.height)
    if factor > MAX_PIXELS_FACTOR:
        own = "x".join(f"{v:.3g}" for v in ground_size(native))
        raise GeoPix2PixError(
            f"--pixel-size {pixel_size:g}: the {domain} raster {path} has {own} m pixels, so its "
            f"chips would be cut on a {grid.width} x {grid.height} grid ({factor:.0f} times its "
            "pixels, interpolated, no finer); use a --pixel-size nearer the rasters' own, or "
            "leave that raster out")


def mixed_domain_warnings(rasters: dict[str, list[tuple[str, Grid]]],
                          pixel_size: float | None) -> list[str]:
    """A warning per domain whose rasters' ground pixels (`rasters`: its (path, native grid)
    pairs) differ by more than `PIXEL_SIZE_RATIO` without --pixel-size: their chips cover ground
    of very different extent, and the model file records the first raster's pixel size, which
    predict compares a scene's with (a training raster at the other size was warned of)."""
    if pixel_size is not None:
        return []
    warnings = []
    for domain, found in rasters.items():
        sizes = [sum(ground_size(grid)) / 2 for _, grid in found]
        if len(sizes) < 2 or max(sizes) <= PIXEL_SIZE_RATIO * min(sizes):
            continue
        fine, coarse = found[sizes.index(min(sizes))][0], found[sizes.index(max(sizes))][0]
        warnings.append(
            f"the {domain} rasters have ground pixels from {min(sizes):.3g} m ({fine}) to "
            f"{max(sizes):.3g} m ({coarse}), {max(sizes) / min(sizes):.1f}x apart: their chips "
            "cover ground of very different extent; pass --pixel-size METRES to resample every "
            "raster to one ground resolution")
    return warnings


def pixel_size_warning(grids: dict[str, list[Grid]], pixel_size: float | None) -> list[str]:
    """A warning when the domains' ground pixel sizes (each domain's mean) differ by more than
    `PIXEL_SIZE_RATIO` without --pixel-size: a chip would cover ground of very different extent
    in each domain."""
    if pixel_size is not None:
        return []
    sizes = {domain: sum(sum(ground_size(g)) / 2 for g in found) / len(found)
             for domain, found in grids.items()}
    ratio = max(sizes.values()) / min(sizes.values())
    if ratio <= PIXEL_SIZE_RATIO:
        return []
    return [f"the source rasters' pixels are {sizes['source']:.3g} m and the target rasters' "
            f"{sizes['target']:.3g} m ({ratio:.1f}x apart): a chip covers {ratio:.1f}x more "
            "ground in one domain than in the other; pass --pixel-size METRES to resample both "
            "to one ground resolution"]
