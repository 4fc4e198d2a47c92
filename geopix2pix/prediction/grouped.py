"""Many small scenes predicted through one pipeline run.

Every pipeline run pays a fixed cost: starting its threads, filling the pipeline at the start and
draining it at the end (docs/benchmarks.md, "Many small scenes"). For a folder of small tiles
that rivals the model's own time, and on a GPU it is most of it. So
consecutive small scenes (at most `SMALL_WINDOWS` windows each) are opened and checked together
and predicted in one run (`predictor.predict_targets`), up to `GROUP_WINDOWS` windows or
`GROUP_SCENES` scenes at a time. Each output is still written under a temporary name and renamed
only when complete. On the CPU the outputs are bit-identical to predicting each scene alone (the
blender sums a row's windows at once, however batches cut it); on CUDA the windows are summed on
the GPU per batch (`pipeline.FOLD_ON`), so the last bits can differ.

A scene whose checks fail (band count, CRS, existing output) gets its error and stays out of the
run; one that cannot even be opened or checked is left to be predicted on its own, which reports
why. If the run itself fails, nothing of it is kept and each of its scenes is predicted again on
its own by the caller, so the error is reported for the scene it belongs to and the others are
still written.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.prediction.checks import check_scene, scene_nodata
from geopix2pix.prediction.engine.model import PredictionModel
from geopix2pix.prediction.engine.runner import Target, predict_targets, reopen_scene
from geopix2pix.prediction.engine.windows import chunk_width_for, make_layout
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import open_raster
from geopix2pix.raster.write import output_folder, publish
from geopix2pix.runtime.partials import discard, partial_name

log = logging.getLogger(__name__)

SMALL_WINDOWS = 1024  # scenes of at most this many windows are predicted in groups
GROUP_WINDOWS = 8192  # a group ends once it holds this many windows
GROUP_SCENES = 32  # ... or this many scenes (each holds two open files)


def scene_windows(scene: Path | str, model: PredictionModel, options) -> int | None:
    """How many windows predicting `scene` takes, or None when it cannot be opened (it is then
    predicted alone, which reports why)."""
    info = model.info
    try:
        with open_raster(scene, require_crs=False) as dataset:  # not a pipe; a stop stops
            layout = make_layout(dataset.height, dataset.width, info.chip_size, options.overlap,
                                 options.blend)
    except Exception:  # any failure is reported when the scene is predicted alone
        return None
    channels = len(info.target.classes or info.target.bands)
    return layout.count(layout.chunks(chunk_width_for(options.chunk_width, channels,
                                                      layout.size)))


def plan(results: Sequence, model: PredictionModel, options) -> Iterator[list]:
    """The results in order, in groups: consecutive small scenes together, any other alone."""
    group, windows = [], 0
    for result in results:
        count = None if options.resample_to_model else scene_windows(result.scene, model,
                                                                      options)
        if count is None or count > SMALL_WINDOWS:
            if group:
                yield group
            group, windows = [], 0
            yield [result]
            continue
        group.append(result)
        windows += count
        if windows >= GROUP_WINDOWS or len(group) >= GROUP_SCENES:
            yield group
            group, windows = [], 0
    if group:
        yield group


def _publish(members: Sequence, temps: Sequence[Path], overwrite: bool) -> None:
    """Give each member's complete output its final name; one that cannot be renamed (its output
    appeared meanwhile) is that scene's error, and the others are still kept."""
    for result, temp in zip(members, temps):
        try:
            publish(temp, result.out, overwrite)
        except Exception as exc:
            result.fail(exc)
        else:
            result.written = True


def predict_group(results: Sequence, model: PredictionModel, options,
                  warn_for: Callable[[object], Callable[[str], None]]) -> list:
    """Predict `results`' scenes in one pipeline run; the results still to predict one at a
    time: those that could not be opened or checked, and when the run failed all not written
    (and not failed their checks)."""
    start = time.perf_counter()
    targets, members = [], []
    try:
        with contextlib.ExitStack() as stack:
            for result in results:
                try:
                    dataset = stack.enter_context(open_raster(
                        result.scene, require_crs=False, nodata=scene_nodata(options)))
                    bands, _ = check_scene(dataset, model, options, warn_for(result))
                    temp = partial_name(stack.enter_context(  # its folders go if the run fails
                        output_folder(result.out, options.overwrite)))
                except GeoPix2PixError as exc:
                    result.fail(exc)
                    continue
                except Exception:  # reported for its scene when predicted alone
                    continue
                stack.callback(discard, temp)  # once renamed, or when the run failed
                targets.append(Target(dataset, bands, Grid.of(dataset), temp, model.output,
                                      partial(reopen_scene, result.scene,
                                              nodata=scene_nodata(options)), result.out,
                                      warn_for(result)))
                members.append(result)
            if targets:
                counts = predict_targets(targets, model, options, f"{len(targets)} scenes")
                for result, count in zip(members, counts):
                    result.windows = count
                _publish(members, [target.path for target in targets], options.overwrite)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # predicted again one at a time, which reports the error
        log.info("predicting %d scenes together failed (%s: %s); predicting each alone",
                 len(members), type(exc).__name__, exc)
    written = [result for result in members if result.written]
    seconds = time.perf_counter() - start
    total = sum(result.windows for result in written) or 1
    for result in written:  # the run's time, shared by windows
        result.seconds = seconds * result.windows / total
    for result in members:
        if not result.written:
            result.windows = 0
    return [result for result in results if not result.written and result.error is None]
