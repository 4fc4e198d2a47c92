"""The checks of a scene against the model file's metadata (`ModelMetadata`).

`check_scene` runs them all, for a scene predicted alone (`predictor`) or in a group (`grouped`).
A scene must have the model's number of input bands (error), a CRS and a geotransform (error
unless ``allow_no_crs``), and should have about the training pixel size (a warning naming both
sizes when they differ by more than 2x; ``--resample-to-model`` then predicts at the training
resolution).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import CRSError

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models.metadata import ModelMetadata, SideMetadata
from geopix2pix.models.run_files import RUN_MODELS, WAYS
from geopix2pix.prediction.engine.model import PredictionModel
from geopix2pix.raster.band_metadata import (
    BandMetadata,
    found_among,
    meaning_differences,
    reordered,
    stored_alike,
)
from geopix2pix.raster.bands import (
    band_list_text,
    check_one_dtype,
    repeated_band_warning,
    select_bands,
)
from geopix2pix.raster.grid import Grid, control_points, not_north_up_warning
from geopix2pix.raster.ground import ground_pixel_size
from geopix2pix.raster.io import has_geotransform, placement_problem
from geopix2pix.raster.nodata import Override, fill_value_lines

PIXEL_SIZE_TOLERANCE = 2.0
METRES_PER_DEGREE = 111_319.49


def default_bands(dataset, trained: SideMetadata, expected: int) -> list[int]:
    """The scene bands to read without --bands: the training bands when the scene has as many
    bands as the training rasters had (a like scene: e.g. 4,3,2 or 1,2 of Sentinel-2); else all
    its data bands when they are as many as the model takes (a scene already cut to the model's
    bands). For a model file that does not record the training rasters' band count, the bands
    chosen at export are used when they were a choice (not just the first ones, which says
    nothing of what the other bands were) and the scene has them."""
    data = select_bands(dataset, None)
    bands = list(trained.bands)
    if bands and trained.raster_bands is not None:  # never an alpha band (RGBA for RGBN)
        like = dataset.count == trained.raster_bands and set(bands) <= set(data)
        return bands if like else data
    chose = bands != list(range(1, expected + 1))
    if len(data) != expected and bands and chose and max(bands) <= dataset.count:
        return bands
    return data


def check_scene(dataset, model: PredictionModel, options,
                warn: Callable[[str], None]) -> tuple[list[int], tuple[float, float] | None]:
    """Check an open scene against the model with `options` (a `PredictOptions`): errors for
    what cannot be predicted, warnings to `warn`; (the scene bands to read, scene pixel size /
    training pixel size along x and y or None when unknown)."""
    check_crs(dataset, options.allow_no_crs)
    bands = check_one_dtype(dataset, check_bands(dataset, options.bands, model))
    trained = model.info.source.nodata  # the model's training sources': a fill value too
    for line in fill_value_lines(dataset, dataset.name, bands, "--source-nodata", [
            (trained, "the nodata value of the model's training sources")]):
        warn(line)
    check_source_values(dataset, bands, model.info, warn, options.bands)
    flips = model.info.training.get("augment") in ("flip", "d4")  # it learnt flipped chips too
    turned = not_north_up_warning(dataset.name, Grid.of(dataset), "it is predicted in that "
                                  "order", flips) if has_geotransform(dataset) else None
    if turned:
        warn(turned)
    return bands, check_pixel_size(dataset, model.info, warn, options.resample_to_model)


def scene_nodata(options) -> Override | None:
    """The nodata value `options` (a `PredictOptions`) give the scenes (--source-nodata):
    read as if their files carried it (`raster.nodata`), their own tag or none."""
    return Override.of(options.source_nodata, "--source-nodata")


def check_bands(dataset, bands: Sequence[int] | None, model: PredictionModel) -> list[int]:
    """The scene bands to read (`bands`, else `default_bands`); error when their number differs
    from the model's input."""
    expected, info = model.in_channels, model.info
    if bands:
        chosen = select_bands(dataset, bands)
    else:
        chosen = default_bands(dataset, info.source, expected)
    if len(chosen) != expected:
        trained = f"trained on source bands {info.source.bands}"
        if bands:  # the user chose them: say so, not "choose bands"
            raise GeoPix2PixError(
                f"--bands {band_list_text(bands)} selects {len(chosen)} band(s) of "
                f"{dataset.name} but the model takes {expected} ({trained}); pass {expected} "
                "band numbers to --bands")
        other = _other_direction(info, len(chosen), expected)
        if other:
            hint = other
        elif len(chosen) > expected:
            hint = f"choose {expected} of its bands with --bands"
        else:  # fewer: only a repeated band could fill the inputs
            example = ",".join(map(str, chosen + [chosen[-1]] * (expected - len(chosen))))
            hint = (f"predict a scene with the training's bands, or repeat one with --bands "
                    f"(e.g. {example}) if that is what you mean")
        raise GeoPix2PixError(f"{dataset.name} gives {len(chosen)} band(s) but the model takes "
                              f"{expected} ({trained}); {hint}")
    return chosen


def _other_direction(info: ModelMetadata, bands: int, expected: int) -> str | None:
    """For a CycleGAN model file given a scene with the band count of its output domain (a
    scene of the other domain): which way this file translates, and the run's files of the
    other way (its latest and its best); None otherwise."""
    output = info.target
    if info.family != "cyclegan" or bands not in {len(output.bands), output.raster_bands}:
        return None
    way, sides = WAYS[info.direction]
    other = "b_to_a" if info.direction == "a_to_b" else "a_to_b"
    latest, best = RUN_MODELS[other]
    domain = sides.split(" -> ")[1]
    return (f"this CycleGAN model translates {way} ({sides}) and takes {expected} "
            f"bands; if the scene is of the {domain} domain, use the run's {latest} "
            f"({WAYS[other][0]}; {best} for its best validation)")


def check_crs(dataset, allow_no_crs: bool) -> None:
    """Refuse a scene not placed on a map (no CRS, or no geotransform: `placement_problem`)
    unless `allow_no_crs` (predicting on its pixels)."""
    problem = placement_problem(dataset, dataset.name)
    if problem and not allow_no_crs:
        keeps = " (the output keeps them)" if control_points(dataset) else ""
        raise GeoPix2PixError(f"{problem}; or pass --allow-no-crs to predict on its "
                              f"pixels{keeps}")


def training_crs(info: ModelMetadata) -> CRS | None:
    """The CRS of the training data, or None when the model file records none (or one this
    PROJ cannot read: its pixel size is then not compared)."""
    try:
        return CRS.from_user_input(info.crs) if info.crs else None
    except CRSError:
        return None


def _metres(size: tuple[float, float], crs: CRS | None, lat: float = 0.0) -> float | None:
    """Mean pixel side in metres, or None when the CRS units are unknown."""
    side = (size[0] + size[1]) / 2
    if crs is None:
        return None
    if crs.is_geographic:
        return (size[0] * math.cos(math.radians(lat)) + size[1]) / 2 * METRES_PER_DEGREE
    try:
        return side * crs.linear_units_factor[1]
    except Exception:  # CRS without linear units
        return None


SAME_GROUND = 0.005  # pixel sizes on the ground this near are the same (no resampling)


def pixel_size_ratios(grid: Grid, info: ModelMetadata) -> tuple[float, float] | None:
    """Scene pixel size / training pixel size along each axis (x, y): a scene in square degrees
    at 60 N has ground pixels twice as tall as wide, and --resample-to-model scales each axis
    by its own; None where unknown."""
    compared = compared_sizes(grid, info)
    if compared is None or min(compared[1]) <= 0:
        return None
    ratios = [s / t for s, t in zip(*compared)]
    return tuple(1.0 if abs(r - 1) <= SAME_GROUND else r for r in ratios)  # type: ignore


def compared_sizes(grid: Grid, info: ModelMetadata
                   ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The scene's and the training's (x, y) pixel sizes in units alike: (1, 1) each for the
    training's own pixel size in its own CRS (its units, wherever the scene lies); else metres
    on the ground (`raster.ground`) where the model file records the training's; else CRS
    units where the CRSs are the same, or metres by the CRS units at the equator; None where
    unknown."""
    if info.pixel_size is None:
        return None
    trained = training_crs(info)
    if grid.crs is not None and grid.crs == trained and all(
            math.isclose(s, t, rel_tol=SAME_GROUND) for s, t in zip(grid.pixel_size,
                                                                   info.pixel_size)):
        return (1.0, 1.0), (1.0, 1.0)  # (in degrees, a pixel's ground varies alike)
    scene = ground_pixel_size(grid)
    if info.ground_pixel_size is not None and scene is not None:
        return scene, tuple(info.ground_pixel_size)
    if grid.crs is not None and trained is not None and grid.crs == trained:
        return tuple(grid.pixel_size), tuple(info.pixel_size)
    lat = 0.0
    if grid.crs is not None and grid.crs.is_geographic:
        lat = (grid.bounds[1] + grid.bounds[3]) / 2
    size, train = _metres(grid.pixel_size, grid.crs, lat), _metres(info.pixel_size, trained)
    return None if size is None or train is None else ((size, size), (train, train))


def _size_text(size: tuple[float, float], crs, ground: tuple[float, float] | None) -> str:
    """'10x10 (EPSG:3857; 6.17x6.17 m on the ground)': a pixel size in its CRS units, and on
    the ground where that differs."""
    text = "x".join(f"{v:.6g}" for v in size)
    if ground is None or all(math.isclose(g, s, rel_tol=1e-3) for g, s in zip(ground, size)):
        return f"{text} ({crs})"
    return f"{text} ({crs}; {'x'.join(f'{v:.3g}' for v in ground)} m on the ground)"


def check_source_values(dataset, bands: Sequence[int], info: ModelMetadata,
                        warn: Callable[[str], None], given: Sequence[int] | None = None) -> None:
    """Warn, once, when the scene's values are another kind (float32 0..1 reflectance fed to a
    model of uint16 DNs) or mean other quantities (another unit, scale or offset) than the
    training sources': they are scaled as the training values were, so a difference in units
    gives a confident nonsense prediction, not an error. The warning says how to convert. Bands
    the user `given` that repeat one are said too (a slip, or a grey scene fed to more)."""
    repeated = repeated_band_warning("--bands", given)  # the model's own choice is no slip
    if repeated:
        warn(f"{dataset.name}: {repeated}")
    dtype, trained = dataset.dtypes[bands[0] - 1], info.source.dtype
    scene = BandMetadata.of(dataset, bands)
    reasons = [] if stored_alike(dtype, trained) else [
        f"it is {dtype} but the model was trained on {trained} sources"]
    labels = [f"band {band}" + ("" if band == index else f" (model input {index})")
              for index, band in enumerate(bands, 1)]
    reasons += meaning_differences(scene, info.source.band_metadata, "training sources", labels)
    _warn_of_reordering(dataset, bands, info, warn)
    if reasons:
        warn(f"{dataset.name}: {'; '.join(reasons)}; its values are used as stored and scaled as "
             f"the training rasters' were, so {_conversion(dataset.name, scene, info)}")


def _warn_of_reordering(dataset, bands: Sequence[int], info: ModelMetadata,
                        warn: Callable[[str], None]) -> None:
    """Warn when the bands read are the training sources' (by their descriptions) in another
    order, or when the training sources' bands are others of the scene (a model of B04, B03, B02
    from a 13-band raster, and a 13-band scene stored in another order), and say which --bands
    feeds them in the model's order."""
    described = [dataset.descriptions[b - 1] for b in bands]
    wanted = info.source.descriptions
    read = f"{dataset.name}: its bands {','.join(map(str, bands))} are described " + \
        ", ".join(d or "(none)" for d in described)
    order = reordered(described, wanted)
    if order is not None:
        warn(f"{read} and the model's inputs {', '.join(wanted)}: the same bands in another "
             f"order; pass --bands {','.join(str(bands[i]) for i in order)} to feed them in the "
             "model's order")
        return
    elsewhere = found_among(dataset.descriptions, wanted)
    if elsewhere is not None and elsewhere != list(bands):
        numbers = ",".join(map(str, elsewhere))
        warn(f"{read}, not as the model's inputs {', '.join(wanted)}, which are its bands "
             f"{numbers}; pass --bands {numbers} to feed them in the model's order")


def _conversion(name: str, scene: BandMetadata, info: ModelMetadata) -> str:
    """What to do about a scene whose values differ from the training sources'."""
    declared = any(s != 1 for s in scene.scales) or any(o != 0 for o in scene.offsets)
    trained = info.source.band_metadata
    plain = all(s == 1 for s in trained.scales) and all(o == 0 for o in trained.offsets)
    if declared and plain:  # e.g. DNs with a scale of 1e-4 fed to a model of reflectance
        unscaled = f"{Path(name).with_suffix('')}_unscaled.tif"
        return (f"convert them first: `gdal_translate -unscale -ot Float32 {name} {unscaled}` "
                "applies the scale and offset its bands declare")
    return ("check that they are in the same units, and convert them to the training sources' "
            "first if not (gdal_translate -scale / -unscale)")


def check_pixel_size(dataset, info: ModelMetadata, warn: Callable[[str], None],
                     resampling: bool = False) -> tuple[float, float] | None:
    """Warn when the scene's pixel size differs from the training one by more than 2x along
    either axis (saying what to do about it, or with `resampling` what is done about it); the
    ratios (`pixel_size_ratios`), None where unknown."""
    grid = Grid.of(dataset)
    # a scene without geotransform (--allow-no-crs) has no pixel size to compare
    ratios = pixel_size_ratios(grid, info) if has_geotransform(dataset) else None
    if ratios is None and resampling:
        why = ("the model file records no training pixel size" if info.pixel_size is None
               else "the scene has no pixel size that can be compared with the training's "
               "(no geotransform, or no CRS)")
        warn(f"{dataset.name}: --resample-to-model is not applied: {why}; it is predicted at "
             "its own pixel size")
    if ratios is not None and not all(1 / PIXEL_SIZE_TOLERANCE <= r <= PIXEL_SIZE_TOLERANCE
                                      for r in ratios):
        scene = _size_text(grid.pixel_size, grid.crs, ground_pixel_size(grid))
        train = _size_text(info.pixel_size, info.crs, info.ground_pixel_size)
        warn(f"{dataset.name}: pixel size {scene} differs {ratio_text(ratios)} from the "
             f"training pixel size {train}; " +
             ("predicting at the training pixel size (--resample-to-model)" if resampling
              else "consider --resample-to-model"))
    return ratios


def ratio_text(ratios: tuple[float, float]) -> str:
    """'3.33x', or '0.558x along x and 1.11x along y' where the axes differ."""
    rx, ry = (f"{r:.3g}x" for r in ratios)
    return rx if rx == ry else f"{rx} along x and {ry} along y"
