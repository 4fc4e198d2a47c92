"""Running the predict pipeline over rasters into their output GeoTIFFs.

`predict_targets` opens each target's output in its format (`formats`: a tiled GeoTIFF, or with
--cog a temporary tiled GeoTIFF converted into the COG when complete), runs the pipeline once
over all the targets, and closes the outputs. The callers (`predictor`, `grouped`) open the
scenes, check them against the model and write each output under a temporary name renamed only
when complete.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import rasterio
from tqdm.auto import tqdm

from geopix2pix.errors import GeoPix2PixError, data_errors, describe
from geopix2pix.prediction.engine import pipeline, reading
from geopix2pix.prediction.engine.formats import open_tiled, tiled_output
from geopix2pix.prediction.engine.model import PredictionModel
from geopix2pix.prediction.engine.windows import chunk_width_for, make_layout, strip_cache_bytes
from geopix2pix.prediction.engine.writer import BLOCK, BandWriter, OutputSpec, write_errors_said_of
from geopix2pix.raster.gdal_log import check_written, signalled_errors
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import warped_view
from geopix2pix.raster.nodata import Override, retagged

if TYPE_CHECKING:
    from geopix2pix.settings.predict import PredictOptions


@dataclass
class Target:
    """A raster to predict and where its output goes."""

    source: object  # the scene, or a view of it (WarpedVRT) on `grid`
    bands: list[int]
    grid: Grid
    path: Path  # the output (a temporary name, renamed when complete)
    spec: OutputSpec
    reopen: Callable[[], contextlib.AbstractContextManager] | None  # another handle on `source`
    name: Path | None = None  # the output's final name, for messages (default `path`)
    warn: Callable[[str], None] | None = None  # told when the output is all nodata


def predict_targets(targets: Sequence[Target], model: PredictionModel,
                    options: PredictOptions, desc: str) -> list[int]:
    """Run the pipeline once over all `targets` into their GTiff/COG outputs; the number of
    windows of each."""
    device = model.device
    workers = reading.read_workers(device)
    jobs, writers, caches = [], [], []
    for target in targets:
        layout = make_layout(target.grid.height, target.grid.width, model.info.chip_size,
                             options.overlap, options.blend)
        spec = target.spec
        chunks = layout.chunks(chunk_width_for(options.chunk_width, spec.channels, layout.size))
        band = BLOCK * max(c.width for c in chunks) * spec.count * np.dtype(spec.dtype).itemsize
        caches.append(strip_cache_bytes(target.source, layout, chunks, band))
        jobs.append(reading.Source(target.source, target.bands, layout, chunks, workers,
                                   target.reopen))
    total = sum(job.layout.count(job.chunks) for job in jobs)
    # the blocks of every source read at once, so none is decoded twice
    cache = sum(sorted(caches)[-reading.sources_at_once(jobs):])
    outputs = [(target.path, target.name or target.path) for target in targets]
    with write_errors_said_of(outputs), contextlib.ExitStack() as stack:
        failures = stack.enter_context(signalled_errors())  # a full disk does not raise
        stack.enter_context(rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True, GDAL_CACHEMAX=cache))
        for target in targets:
            tiled = stack.enter_context(tiled_output(target.path, target.spec, options,
                                                     target.name))
            dst = stack.enter_context(_created(tiled, target, options))
            writers.append(BandWriter(dst, target.spec))
        # said before the partial outputs are removed, while their disk is still full
        stack.enter_context(write_errors_said_of(outputs))
        bar = stack.enter_context(tqdm(total=total, unit="window", desc=desc,
                                       disable=not options.progress, leave=False))
        pipeline.run([pipeline.Job(source, target.spec, writer.add, writer.finish)
                      for source, target, writer in zip(jobs, targets, writers)],
                     model.generator, device, model.info.source.scaling,
                     max(1, options.batch_size),
                     on_batch=bar.update, validity=model.spec.validity)
    for target, writer in zip(targets, writers):  # closed (and converted into COGs) now
        check_written(target.path, target.name or target.path, failures)
        if not writer.any_valid and target.warn is not None:
            target.warn(_all_nodata(target))
    return [job.layout.count(job.chunks) for job in jobs]


def predict_to_file(source, bands: list[int], grid: Grid, path: Path, model: PredictionModel,
                    spec: OutputSpec, options: PredictOptions,
                    reopen: Callable[[], contextlib.AbstractContextManager] | None,
                    name: Path, warn: Callable[[str], None] | None = None) -> int:
    """Run the pipeline over `source` alone (a dataset or VRT on `grid`; `reopen` gives another
    handle on it for another thread reading it) into the GTiff/COG `path` (to be `name`); the
    number of windows. `warn` hears when no pixel of the scene is valid."""
    return predict_targets([Target(source, bands, grid, path, spec, reopen, name, warn)], model,
                           options, Path(_scene_name(source)).name)[0]


def _scene_name(source) -> str:
    """The scene's name, also of a view of it (a WarpedVRT's name is "WarpedVRT(...)")."""
    return str(getattr(source, "src_dataset", source).name)


def _all_nodata(target: Target) -> str:
    """The warning for a scene whose output holds no valid pixel."""
    bands = ",".join(map(str, target.bands))
    return (f"{_scene_name(target.source)}: no pixel is valid in band(s) {bands} (all nodata, "
            f"NaN or masked), so its output {target.name or target.path} is all nodata; check "
            "the scene, its nodata value and --bands")


def _created(tiled: Path, target: Target, options: PredictOptions):
    """`open_tiled`, a failure to create the file said of the output's final name."""
    name = target.name or target.path
    try:
        return open_tiled(tiled, target.grid, target.spec, options)
    except data_errors() as exc:
        reason = describe(exc).replace(str(tiled), str(name))
        raise GeoPix2PixError(f"cannot create {name}: {reason}; choose another output "
                              "folder") from None


@contextlib.contextmanager
def reopen_scene(scene: Path | str, grid: Grid | None = None, resampling: str = "bilinear",
                 nodata: Override | None = None) -> Iterator:
    """Another handle on `scene` (warped onto `grid` with `resampling` when given; read as if
    tagged with the `nodata` given: `raster.nodata`), for another thread reading it."""
    with rasterio.open(scene) as opened:
        dataset = retagged(opened, nodata, scene)
        if grid is None:
            yield dataset
        else:
            with warped_view(dataset, grid, resampling) as vrt:
                yield vrt
