"""`predict`: run a model over whole scenes into GeoTIFFs on exactly the scenes' grids.

``predict(scene, out, model=...)`` or ``predict([a, b], out_dir=DIR, model=...)``. Each scene is
checked against the model (`checks`), predicted window by window through the overlapped pipeline
(`pipeline`; with --resample-to-model at the training pixel size, `resample`) and written to a
temporary file beside its output that is renamed only when complete (`raster.write.atomic_path`).
`predict_scenes` takes a list of (scene, output) pairs and returns one `SceneResult` each; a
failed scene is reported there and the others are still written (a distributed run can hand each
rank its own share of the list).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from geopix2pix.errors import GeoPix2PixError, data_errors, describe, warn_user
from geopix2pix.models import LoadedModel, load_model
from geopix2pix.models.baseline import baseline_generator
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.prediction import grouped
from geopix2pix.prediction.checks import check_scene, scene_nodata
from geopix2pix.prediction.engine.formats import check_output_options
from geopix2pix.prediction.engine.model import PredictionModel
from geopix2pix.prediction.engine.runner import predict_to_file, reopen_scene
from geopix2pix.prediction.engine.windows import stride_and_margin
from geopix2pix.prediction.outputs import PathLike, output_paths, shared_outputs, stop_reporter
from geopix2pix.prediction.resample import check_resampled_size, predict_resampled
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import open_raster, raster_path
from geopix2pix.raster.write import (
    atomic_path,
    replaced_inputs,
)
from geopix2pix.runtime.device import resolve_device
from geopix2pix.runtime.folders import refuse_read_only
from geopix2pix.runtime.stopping import attaches_stop_report
from geopix2pix.settings.checking import api_function
from geopix2pix.settings.predict import PredictKeywords, PredictOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

@dataclass
class SceneResult:
    """What happened to one scene: its output, or the error that stopped it."""

    scene: Path | str  # a GDAL name (/vsicurl/https://...) stays the string it is
    out: Path
    windows: int = 0
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    exception: BaseException | None = field(default=None, repr=False)
    written: bool = False  # the output is complete and in place

    @property
    def ok(self) -> bool:
        return self.error is None

    def fail(self, exc: BaseException) -> None:
        """Record `exc` as this scene's error, in one line that starts with the scene."""
        message = str(exc) if isinstance(exc, GeoPix2PixError) else describe(exc)
        if not message.startswith(str(self.scene)):
            message = f"{self.scene}: {message}"
        if out_of_memory(exc):
            message += " (out of memory: lower --batch-size)"
        self.error, self.exception = message, exc


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the host's or the GPU's memory running out: the user's to fix with a
    smaller batch, not a bug."""
    return isinstance(exc, (MemoryError, OUT_OF_GPU_MEMORY))


# torch.OutOfMemoryError since torch 2.5; torch.cuda's name for it before (and since)
OUT_OF_GPU_MEMORY = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)


@api_function
@attaches_stop_report(lambda call: stop_reporter(call["scenes"], call["out"], call["out_dir"]))
def predict(scenes: PathLike | Sequence[PathLike], out: PathLike | None = None, *,
            model: PathLike | LoadedModel, out_dir: PathLike | None = None,
            on_warning: Callable[[str], None] | None = None,
            on_result: Callable[[SceneResult], None] | None = None,
            **options: Unpack[PredictKeywords]) -> list[SceneResult]:
    """Predict scenes into GeoTIFFs on their exact grids; `options` are `PredictOptions`'s fields.

    With one scene and OUT, a failure raises; with several scenes every failure is reported in
    the returned results and the other scenes are still written. ``on_result(result)`` is
    called with each scene's `SceneResult` as soon as it is known (written or failed).
    Warnings (and, with --out-dir and no ``on_result``, each failure as it happens) go to
    ``on_warning(message)``, or without it are issued as `GeoPix2PixWarning`s (Python's
    `warnings`, at the caller's line, every time).
    """
    warn_failures = on_result is None  # (a caller with on_result hears of failures there)
    on_warning = warn_user if on_warning is None else on_warning

    def reported(result: SceneResult) -> None:
        if warn_failures and out is None and not result.ok:
            on_warning(f"{result.error} (not written)")
        if on_result is not None:
            on_result(result)

    opts = PredictOptions.from_options(**options)
    check_model_argument(model)
    single = isinstance(scenes, (str, os.PathLike))
    pairs = output_paths([scenes] if single else list(scenes), out, out_dir)
    for folder, first in {Path(o).parent: Path(o) for _, o in reversed(pairs)}.items():
        refuse_read_only(folder, first)  # once, before the model is loaded
    device = resolve_device(opts.device)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, device=device)
    check_creation_options_for(opts, loaded)
    size = loaded.spec.chip_size
    stride, margin = stride_and_margin(size, opts.overlap)
    if margin == 0:
        on_warning(f"--overlap {opts.overlap:g}: windows of {size} px keep "
                   "their edges, where the model sees its own padding, not the scene: seams "
                   f"every {stride} px; use a larger --overlap (the default, 0.5, blends "
                   "windows without seams)")
    loaded.generator.to(device)
    results = predict_scenes(pairs, loaded, opts, on_warning=on_warning, on_result=reported)
    failure = results[0].exception
    if out is not None and failure is not None:
        if isinstance(failure, data_errors()) or out_of_memory(failure):  # a damaged scene,
            raise GeoPix2PixError(results[0].error) from failure  # a full disk: the user's
        raise failure
    return results


def baseline_model(model: LoadedModel, info: ModelMetadata, baseline: str) -> LoadedModel:
    """`model`, or with `baseline` (linear, constant, a class map's discriminant) that baseline
    of its file in its place: a per-pixel map that goes through the same pipeline into the same
    kind of output. A CycleGAN file carries the constant (its output domain's train mean)
    alone."""
    if baseline == "none":
        return model
    if info.baselines is None:
        raise GeoPix2PixError(f"--baseline {baseline}: this model file carries no baselines "
                              "(it was written before geopix2pix fitted them); train again to "
                              "get them")
    if baseline not in info.baselines.names() and info.family == "cyclegan":
        raise GeoPix2PixError(f"--baseline {baseline}: a CycleGAN model file carries only the "
                              "constant (train mean) baseline, because the linear ones are "
                              "fitted on pairs; use --baseline constant")
    if baseline not in info.baselines.names():
        raise GeoPix2PixError(f"--baseline {baseline}: this model file carries none (a linear "
                              "discriminant is fitted for a class map only, and files trained "
                              "before it was added lack it); use linear or constant")
    device = next(model.generator.parameters()).device
    generator = baseline_generator(info.baselines, baseline, info.categorical, device)
    return LoadedModel(generator, model.spec, model.metadata)


def check_model_argument(model: object) -> None:
    """Refuse a `model` that is neither a model file's path nor a loaded model (None);
    `load_model` says what is wrong with a path (a run folder, a missing file)."""
    if not isinstance(model, (str, os.PathLike, LoadedModel)):
        raise GeoPix2PixError(f"model={model!r}: expected a model file (e.g. "
                              "run/model.safetensors) or a model from geopix2pix.load_model")


def check_creation_options_for(options: PredictOptions, model: LoadedModel) -> None:
    """Refuse, before any work, creation options that the output's driver would refuse or
    ignore, or that the band writer cannot fill."""
    check_output_options(PredictionModel.of(model).output, options.compress, options.cog,
                         options.creation_options)


def predict_scenes(pairs: Sequence[tuple[Path | str, Path]], model: LoadedModel,
                   options: PredictOptions,
                   on_warning: Callable[[str], None] | None = None,
                   on_result: Callable[[SceneResult], None] | None = None
                   ) -> list[SceneResult]:
    """Predict each (scene, output) pair, consecutive small scenes together in one pipeline run
    (`grouped`); one scene's failure never stops the others. `on_result` hears of each result
    once it is final (in the order the scenes are done). A stop (Ctrl-C, SIGTERM: a
    KeyboardInterrupt) carries `written`, the outputs this run completed before it."""
    info = ModelMetadata.of(model)
    ready = PredictionModel.of(baseline_model(model, info, options.baseline), info)
    results = [SceneResult(raster_path(scene), Path(out)) for scene, out in pairs]
    outs = [result.out for result in results]
    for later, first in shared_outputs(outs).items():
        results[later].fail(GeoPix2PixError(
            f"{results[later].scene}: its output {results[later].out} is also the output of "
            f"{results[first].scene}; give each scene its own output"))
    for index, (scene, file) in replaced_inputs(outs, [r.scene for r in results]).items():
        what = f"the input scene {scene}" if file == str(scene) else \
            f"{file}, which the input scene {scene} reads"
        results[index].fail(GeoPix2PixError(
            f"{results[index].scene}: its output {results[index].out} is {what}, which it would "
            "replace; choose another output"))

    def warn_for(result: SceneResult) -> Callable[[str], None]:
        def warn(message: str) -> None:
            if message not in result.warnings:  # a group that failed warned once already
                result.warnings.append(message)
                if on_warning:
                    on_warning(message)

        return warn

    report = on_result or (lambda result: None)
    for result in results:
        if result.error is not None:  # refused before any scene was read
            report(result)
    try:
        for group in grouped.plan([r for r in results if r.error is None], ready, options):
            alone = group if len(group) == 1 else grouped.predict_group(group, ready, options,
                                                                        warn_for)
            for result in alone:
                _predict_alone(result, ready, options, warn_for(result))
            for result in group:
                report(result)
    except KeyboardInterrupt as stop:  # what this run put in place, for the stop's report
        stop.written = [result.out for result in results if result.written]
        raise
    return results


def _predict_alone(result: SceneResult, model: PredictionModel, options: PredictOptions,
                   warn: Callable[[str], None]) -> None:
    """`predict_scene`, its error recorded in `result`."""
    try:
        predict_scene(result, model, options, warn)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a scene GDAL cannot process must not stop the others
        result.fail(exc)


def predict_scene(result: SceneResult, model: PredictionModel, options: PredictOptions,
                  warn: Callable[[str], None]) -> None:
    """Predict one scene into `result.out` (atomically)."""
    start = time.perf_counter()
    nodata = scene_nodata(options)
    with open_raster(result.scene, require_crs=False, nodata=nodata) as dataset:
        bands, ratios = check_scene(dataset, model, options, warn)
        resampled = options.resample_to_model and ratios is not None and ratios != (1.0, 1.0)
        if resampled:
            check_resampled_size(dataset, ratios)
        with atomic_path(result.out, options.overwrite) as temp:
            if resampled:
                result.windows = predict_resampled(dataset, bands, ratios, temp, model, options,
                                                   result.out, warn)
            else:
                result.windows = predict_to_file(
                    dataset, bands, Grid.of(dataset), temp, model, model.output, options,
                    reopen=partial(reopen_scene, result.scene, nodata=nodata), name=result.out,
                    warn=warn)
    result.written = True
    result.seconds = time.perf_counter() - start
