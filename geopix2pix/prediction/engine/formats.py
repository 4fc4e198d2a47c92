"""The output formats of `predict`: a tiled GeoTIFF (GTiff), or with ``--cog`` a Cloud-Optimized
GeoTIFF (COG).

The writer always streams a tiled, compressed GeoTIFF (`writer.BandWriter`). An `OutputFormat`
says what becomes of it: written as the output itself, or (`converts`) into a temporary beside
the output that its driver converts into the output once complete (`tiled_output`); which driver
the user's creation options (``--co``) are for; and how they are checked before any work
(`check_output_options`: written on a 512 x 512 raster in memory with the output's profile).
A new format is one class here and its entry in `FORMATS`.

- GTiff: the user's creation options go over ours (`writer.creation_profile`); tiles must divide
  the 512-row bands the writer writes.
- COG: GDAL's COG driver converts the finished tiled GTiff in one pass and builds the overviews
  (average for floats, nearest for integers, which may be class maps, and for class codes of any
  dtype); the user's creation options go to the COG driver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.crs import CRS
from rasterio.io import MemoryFile

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.prediction.engine.writer import (
    BLOCK,
    OutputSpec,
    creation_profile,
    open_output,
    write_errors_said_of,
)
from geopix2pix.raster.creation import (
    check_compression_options,
    check_creation_options,
    with_creation_options,
)
from geopix2pix.raster.gdal_log import check_written, signalled_errors
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.heap import release_free_heap
from geopix2pix.runtime.partials import partial_name

if TYPE_CHECKING:
    from geopix2pix.settings.predict import PredictOptions

# GDAL block cache while building the COG, whatever the RAM: the conversion fills whatever cache it
# is given, and a small one costs it no time since it reads each block once per overview level
# (docs/benchmarks.md, predict, "Memory").
COG_CACHE = 32 * 2**20


class OutputFormat:
    """A format of the output: `driver`, the GDAL driver the user's creation options are for;
    `converts`, whether the tiled GTiff is converted into the output (by `convert`)."""

    driver: str
    converts: bool = False

    def tiled_options(self, creation_options: Mapping[str, str]) -> Mapping[str, str]:
        """The user's creation options for the tiled GTiff the writer streams."""
        return {} if self.converts else creation_options

    def check_options(self, creation_options: Mapping[str, str]) -> None:
        """Refuse creation options this format cannot honour (before GDAL is asked)."""

    def convert(self, tiled: str, out: str, spec: OutputSpec, compress: str,
                creation_options: Mapping[str, str]) -> None:
        """Write `out` from the complete tiled GTiff `tiled` (formats that convert)."""
        raise NotImplementedError


class GeoTIFF(OutputFormat):
    """The tiled GeoTIFF itself, with the user's creation options."""

    driver = "GTiff"

    def check_options(self, creation_options: Mapping[str, str]) -> None:
        """The tiled output is written in bands of `BLOCK` rows and chunks of a multiple of
        `BLOCK` columns: tiles that do not divide those would be written in parts, then
        rewritten."""
        for name, value in creation_options.items():
            key = name.upper()
            if key == "TILED" and value.upper() in ("NO", "FALSE", "OFF", "0"):
                raise GeoPix2PixError(f"--co {name}={value}: predict writes a tiled GeoTIFF (use "
                                      "gdal_translate on it for a striped one)")
            if key in ("BLOCKXSIZE", "BLOCKYSIZE") and not (
                    value.isdigit() and int(value) >= 16 and BLOCK % int(value) == 0):
                raise GeoPix2PixError(f"--co {name}={value}: predict writes the output in bands "
                                      f"of {BLOCK} rows, so tiles must divide {BLOCK}: "
                                      f"{_divisors(BLOCK)} (with --cog, BLOCKSIZE: a multiple "
                                      "of 16, at least 128)")


class CloudOptimizedGeoTIFF(OutputFormat):
    """A Cloud-Optimized GeoTIFF with overviews, converted from the complete tiled GTiff."""

    driver = "COG"
    converts = True

    def convert(self, tiled: str, out: str, spec: OutputSpec, compress: str,
                creation_options: Mapping[str, str]) -> None:
        rasterio.shutil.copy(tiled, out, driver="COG",
                             **cog_options(spec, compress, creation_options))


FORMATS: dict[str, OutputFormat] = {"GTiff": GeoTIFF(), "COG": CloudOptimizedGeoTIFF()}


def _divisors(block: int, smallest: int = 16) -> str:
    """"16, 32, ... or 512": the tile sides from `smallest` that divide `block`."""
    sides = [str(side) for side in range(smallest, block + 1) if block % side == 0]
    return ", ".join(sides[:-1]) + f" or {sides[-1]}"


def output_format(cog: bool) -> OutputFormat:
    """The format of predict's output: COG with ``--cog``, else GTiff."""
    return FORMATS["COG" if cog else "GTiff"]


def cog_options(spec: OutputSpec, compress: str,
                creation_options: Mapping[str, str] | None = None) -> dict:
    """The COG driver's options for the output, with the user's over ours."""
    floating = np.issubdtype(np.dtype(spec.dtype), np.floating)
    options = dict(COMPRESS=compress.upper(), BLOCKSIZE=BLOCK, BIGTIFF="IF_SAFER",
                   OVERVIEWS="AUTO", NUM_THREADS="ALL_CPUS",
                   RESAMPLING="AVERAGE" if floating and not spec.categorical else "NEAREST")
    if compress != "none":
        options["PREDICTOR"] = "YES"
    return with_creation_options(options, creation_options or {})


@contextlib.contextmanager
def tiled_output(path: Path, spec: OutputSpec, options: PredictOptions,
                 name: Path | None = None) -> Iterator[Path]:
    """Yield where to write the tiled GeoTIFF: `path` itself, or for a format that converts a
    temporary that is converted into `path` once the block completes (and removed in any
    case)."""
    form = output_format(options.cog)
    if not form.converts:
        yield path
        return
    tiled = partial_name(path)
    try:
        with signalled_errors() as failures:
            yield tiled
        check_written(tiled, name or path, failures)  # before GDAL reads it back
        with write_errors_said_of([(path, name or path)]):
            release_free_heap()  # the pipeline's freed buffers, before GDAL allocates its own
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=COG_CACHE):
                form.convert(str(tiled), str(path), spec, options.compress,
                             options.creation_options)
    finally:
        tiled.unlink(missing_ok=True)


def open_tiled(tiled: Path, grid: Grid, spec: OutputSpec, options: PredictOptions):
    """Open the tiled GTiff: the output itself, with the user's creation options, or the
    temporary a format converts from (the options then go to its driver)."""
    return open_output(tiled, grid, spec, options.compress,
                       output_format(options.cog).tiled_options(options.creation_options))


def check_output_options(spec: OutputSpec, compress: str, cog: bool,
                         creation_options: Mapping[str, str]) -> None:
    """Refuse creation options the output's driver (GTiff, or COG with `cog`) would refuse or
    ignore (also those its compression does not use), by writing a `BLOCK` x `BLOCK` raster in
    memory with the output's profile and them."""
    # 1 m pixels, north up (rasterio's from_origin composes with `*`, which affine deprecates)
    grid = Grid(CRS.from_epsg(32633), Affine(1, 0, 0, 0, -1, BLOCK), BLOCK, BLOCK)
    zeros = np.zeros((spec.count, BLOCK, BLOCK), dtype=spec.dtype)
    form = output_format(cog)
    form.check_options(creation_options)
    check_compression_options(creation_options, compress, form.driver)

    def probe() -> None:
        with MemoryFile() as tiled:
            ours = form.tiled_options(creation_options)
            with tiled.open(**creation_profile(grid, spec, compress, ours)) as dst:
                spec.band_metadata.apply(dst)  # before the data, as `BandWriter` does
                dst.write(zeros)
            if form.converts:
                with MemoryFile() as out:
                    form.convert(tiled.name, out.name, spec, compress, creation_options)

    check_creation_options(creation_options, form.driver, probe)
