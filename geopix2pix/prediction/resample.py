"""`predict --resample-to-model`: predict a scene at the training pixel size, written back on the
scene's exact grid.

The scene is predicted through a view of it at the training pixel size (`model_grid`) into a
float temporary in data units, nodata (NaN) where its own coarse pixels are invalid. That is
warped back onto the scene's grid and written block by block, masked by the scene's validity.
Warping back spreads the temporary's nodata onto the scene's valid pixels beside its nodata (a
valid pixel whose coarse pixel is mostly nodata): such a pixel takes the value of its nearest
predicted neighbours (`fill_missing`), within `fill_margin` pixels read around each block.
Filling from the predictions rather than predicting the invalid coarse pixels too keeps values
made from the nodata's zero-filled input out of the output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.prediction.checks import ratio_text
from geopix2pix.prediction.engine.formats import open_tiled, tiled_output
from geopix2pix.prediction.engine.model import PredictionModel
from geopix2pix.prediction.engine.runner import predict_to_file, reopen_scene
from geopix2pix.prediction.engine.windows import MIN_CACHE
from geopix2pix.prediction.engine.writer import BLOCK, BandWriter, OutputSpec, finish
from geopix2pix.raster.band_metadata import BandMetadata
from geopix2pix.raster.gdal_log import check_written, signalled_errors
from geopix2pix.raster.grid import MAX_PIXELS_FACTOR, Grid
from geopix2pix.raster.io import raster_path, read_window, warped_view
from geopix2pix.raster.nodata import override_of
from geopix2pix.runtime.partials import discard, partial_name
from geopix2pix.settings.predict import PredictOptions

MAX_FILL_MARGIN = 128  # scene pixels: two model pixels of a scene up to 63x finer than it
# the 8 neighbours, the 4 sharing a side first (the one whose code a missing pixel takes)
NEIGHBOURS = ((0, -1), (0, 1), (-1, 0), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))


Ratios = tuple[float, float]  # scene pixel size / training pixel size along x and y


def model_grid(grid: Grid, ratios: Ratios) -> Grid:
    """The scene's extent at the training pixel size (scene pixel size / ratio, each axis)."""
    rx, ry = ratios
    return Grid(grid.crs, grid.transform @ Affine.scale(1 / rx, 1 / ry),
                max(1, math.ceil(grid.width * rx)), max(1, math.ceil(grid.height * ry)))


def check_resampled_size(dataset, ratios: Ratios) -> None:
    """Refuse --resample-to-model when the training pixels are so much smaller than the scene's
    that the prediction at their size would hold more than `MAX_PIXELS_FACTOR` times the scene's
    pixels (a 300 m Landsat scene and a 4.5 m model: a 52700 x 47900 grid, hours and gigabytes
    for a result no finer than the scene)."""
    grid = model_grid(Grid.of(dataset), ratios)
    factor = grid.width * grid.height / (dataset.width * dataset.height)
    if factor > MAX_PIXELS_FACTOR:
        raise GeoPix2PixError(
            f"{dataset.name}: its pixels are {ratio_text(ratios)} the training's, so "
            "--resample-to-model "
            f"would predict a {grid.width} x {grid.height} grid ({factor:.0f} times the scene's "
            "pixels); predict without --resample-to-model, or use a model trained nearer the "
            "scene's pixel size")


def predict_resampled(dataset, bands: list[int], ratios: Ratios, path: Path,
                      model: PredictionModel, options: PredictOptions, name: Path,
                      warn: Callable[[str], None] | None = None) -> int:
    """Predict at the training resolution (through a WarpedVRT) into a float temporary in data
    units (a categorical model's: class codes), then warp that back onto the scene's grid
    (bilinear; nearest for integer targets and class codes, which must not be averaged) into
    `path`; the number of windows. `warn` hears when no pixel of the scene is valid."""
    scene_grid, coarse = Grid.of(dataset), model_grid(Grid.of(dataset), ratios)
    ratio = min(ratios)  # (the finer axis: more scene pixels a model pixel)
    spec = model.output
    temp = partial_name(name)  # beside the output, named after it (a killed run's is removed)
    tiled_opts = PredictOptions(**{**options.__dict__, "cog": False, "compress": "deflate",
                                   "creation_options": {}})
    resampling = scene_resampling(ratio)
    try:
        with warped_view(dataset, coarse, resampling) as vrt:
            windows = predict_to_file(vrt, bands, coarse, temp, model, temporary_spec(spec),
                                      tiled_opts, name=name, warn=warn,
                                      reopen=partial(reopen_scene, raster_path(dataset.name),
                                                     coarse, resampling, override_of(dataset)))
        exact = spec.categorical or spec.dtype[0] in "iu"
        with signalled_errors() as failures, rasterio.open(temp) as pred, \
                warped_view(pred, scene_grid, "nearest" if exact else "bilinear") as back:
            write_on_grid(dataset, bands, back, path, scene_grid, spec, options, name,
                          Fill(fill_margin(ratio), average=not exact))
        check_written(path, name, failures)  # a full disk does not raise
    finally:
        discard(temp)  # and the .aux.xml GDAL may have written beside it
    return windows


def scene_resampling(ratio: float) -> str:
    """How the scene is resampled to the training pixel size: averaged when the training pixels
    are larger (each then holds several scene pixels, and is valid when any of them is, so a
    small valid patch beside nodata still gets a prediction: bilinear would call a 30 m pixel
    with one valid 10 m pixel of nine invalid), bilinear when they are smaller."""
    return "average" if ratio < 1 else "bilinear"


def temporary_spec(spec: OutputSpec) -> OutputSpec:
    """The float temporary of `predict_resampled`: the output's values (class codes for a
    categorical model) in float32 (float64 for codes float32 cannot hold exactly), NaN where
    invalid, no band metadata."""
    exact = not spec.categorical or all(abs(code) <= 2**24 for code in spec.classes)
    return dataclasses.replace(spec, dtype="float32" if exact else "float64", nodata=math.nan,
                               internal_mask=False, band_metadata=BandMetadata())


@dataclasses.dataclass(frozen=True)
class Fill:
    """How the missing pixels of the warped-back temporary are filled: from predictions up to
    `margin` pixels away, with the mean of the neighbours' values (`average`) or, for codes, one
    neighbour's."""

    margin: int
    average: bool


def fill_margin(ratio: float) -> int:
    """The scene pixels (at most `MAX_FILL_MARGIN`) within which a valid pixel finds a
    prediction: two model pixels (1 / `ratio` scene pixels each: one of nodata spread by warping
    back, one of a model pixel mostly nodata) and one more."""
    return min(MAX_FILL_MARGIN, math.ceil(2 / ratio) + 1)


def write_on_grid(dataset, bands: list[int], values, path: Path, grid: Grid, spec: OutputSpec,
                  options: PredictOptions, name: Path, fill: Fill) -> None:
    """Stream `values` (a view on `grid`, data units, NaN where missing) into the output, masked
    by the scene, a valid pixel missing in `values` filled from its neighbours (`fill`)."""
    step = max(BLOCK, options.chunk_width // BLOCK * BLOCK)
    with tiled_output(path, spec, options, name) as tiled, \
            rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=MIN_CACHE), \
            open_tiled(tiled, grid, spec, options) as dst:
        writer = BandWriter(dst, spec)
        for col in range(0, grid.width, step):
            for row in range(0, grid.height, BLOCK):
                window = Window(col, row, min(step, grid.width - col),
                                min(BLOCK, grid.height - row))
                valid = read_window(dataset, bands, window)[1]
                data = read_filled(values, window, grid, spec.count, fill, valid)
                valid &= ~np.isnan(data).any(0)  # no prediction within the margin
                writer.add(row, col, finish(data.astype("float64"), valid, spec), valid)
            writer.flush()


def read_filled(values, window: Window, grid: Grid, count: int, fill: Fill,
                wanted: np.ndarray) -> np.ndarray:
    """`values` (bands 1..count) over `window`, read with `fill.margin` pixels around it (within
    `grid`) so that its `wanted` (rows, cols) pixels missing there take their nearest
    neighbours' values."""
    r0, c0 = max(0, window.row_off - fill.margin), max(0, window.col_off - fill.margin)
    r1 = min(grid.height, window.row_off + window.height + fill.margin)
    c1 = min(grid.width, window.col_off + window.width + fill.margin)
    data = values.read(list(range(1, count + 1)), window=Window(c0, r0, c1 - c0, r1 - r0))
    inner = (slice(window.row_off - r0, window.row_off - r0 + window.height),
             slice(window.col_off - c0, window.col_off - c0 + window.width))
    needed = np.zeros(data.shape[1:], bool)
    needed[inner] = wanted
    return fill_missing(data, fill.margin, fill.average, needed)[(slice(None), *inner)]


def fill_missing(values: np.ndarray, steps: int, average: bool,
                 needed: np.ndarray | None = None) -> np.ndarray:
    """(bands, rows, cols) `values` (overwritten) with each missing pixel (NaN in any band)
    within `steps` pixels (chessboard distance) of a present one given the values of its
    nearest present neighbours: their mean when `average`, else the first one's in `NEIGHBOURS`
    order (a code, never a mean of codes). Stops early once the `needed` pixels are present; a
    pixel's value depends only on the values within its distance, so blocks read with a margin
    of `steps` fill their pixels as the whole raster would."""
    for _ in range(steps):
        missing = np.isnan(values).any(0)
        if not (missing if needed is None else missing & needed).any():
            break
        _fill_step(values, missing, average)
    return values


def _fill_step(values: np.ndarray, missing: np.ndarray, average: bool) -> None:
    """Give each `missing` pixel with a present neighbour its neighbours' values (see
    `fill_missing`), from the values before this step."""
    rows, cols = missing.shape
    padded = np.pad(values, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
    present = np.pad(~missing, 1, constant_values=False)
    total = np.zeros_like(values) if average else None
    count = np.zeros(missing.shape, np.int8)
    for dr, dc in NEIGHBOURS:
        cells = (slice(1 + dr, 1 + dr + rows), slice(1 + dc, 1 + dc + cols))
        there = present[cells] & missing
        if average:
            total[:, there] += padded[(slice(None), *cells)][:, there]
        else:
            there &= count == 0
            values[:, there] = padded[(slice(None), *cells)][:, there]
        count += there
    if average:
        filled = count > 0
        values[:, filled] = total[:, filled] / count[filled]
