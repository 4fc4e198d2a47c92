"""Pictures for notebooks (matplotlib): chips, a model's results, training curves, chip footprints;
and a scene's quicklook PNG.

Every function returns a matplotlib Figure but `write_quicklook`, which writes a PNG file.
Rasters are drawn as in the training samples: the first three bands as RGB (or one band as grey)
with a 2-98 percentile stretch, prediction and target with the target's stretch so they compare
directly, invalid pixels black. matplotlib (and geopandas, for `plot_footprints`) is imported
only when a function is called: the rest of geopix2pix never needs it.
"""

from __future__ import annotations

import csv
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.settings.checking import api_function

if TYPE_CHECKING:  # torch, which the model module imports, only when a function is called
    from geopix2pix.chips.manifest import DatasetInfo
    from geopix2pix.models import LoadedModel
    from geopix2pix.models.metadata import ModelMetadata

PathLike = str | os.PathLike


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError:
        raise GeoPix2PixError("plotting needs matplotlib: pip install matplotlib "
                              "(or geopix2pix[notebooks])") from None
    return plt


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    from geopix2pix.raster.io import open_raster, read_window

    with open_raster(path) as ds:
        return read_window(ds, list(range(1, ds.count + 1)), None)


def _check_count(n: object) -> None:
    """`n`, the number of chips to show: a whole number of at least 1."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise GeoPix2PixError(f"n={n!r}: expected an integer")
    if n < 1:
        raise GeoPix2PixError(f"n={n}: expected the number of chips to show, at least 1")


def _check_size(size: object) -> None:
    """`size`, the side of one panel in inches: a number above 0, at most 100."""
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise GeoPix2PixError(f"size={size!r}: expected a number (inches)")
    if not 0 < size <= 100:
        raise GeoPix2PixError(f"size={size}: expected a panel's side in inches, above 0 and at "
                              "most 100")


def _pick(chips_dir: PathLike, split: str | None, n: int, seed: int,
          domain: str | None = None) -> list[str]:
    from geopix2pix.chips.dataset import chip_ids

    _check_count(n)
    ids = chip_ids(chips_dir, split, domain)
    if not ids:
        of = f" {domain} domain" if domain else ""
        raise GeoPix2PixError(f"{chips_dir} has no {split or ''} chips{of} to show"
                              .replace("  ", " "))
    chosen = np.random.default_rng(seed).choice(len(ids), size=min(n, len(ids)), replace=False)
    return [ids[i] for i in sorted(chosen)]


def _grid(rows: int, titles: list[str], size: float):
    plt = _pyplot()
    fig, axes = plt.subplots(rows, len(titles), figsize=(size * len(titles), size * rows),
                             squeeze=False)
    for ax, title in zip(axes[0], titles):
        ax.set_title(title)
    for ax in axes.ravel():
        ax.set_axis_off()
    return fig, axes


@api_function
def show_chips(chips_dir: PathLike, n: int = 4, split: str | None = "train", seed: int = 0,
               size: float = 3.0):
    """`n` random chips of a split (None: any) as source | target pairs, one row each; of an
    unpaired chips folder, `n` chips of each domain, drawn independently (no row is a pair)."""
    _check_size(size)
    from geopix2pix.chips.manifest import DatasetInfo

    paired = DatasetInfo.load(chips_dir).paired
    columns = [_pick(chips_dir, split, n, seed)] * 2 if paired else \
        [_pick(chips_dir, split, n, seed, domain) for domain in ("source", "target")]
    titles = ["source", "target"] if paired else ["source domain", "target domain"]
    fig, axes = _grid(max(len(ids) for ids in columns), titles, size)
    for column, (side, ids) in enumerate(zip(("source", "target"), columns)):
        for row, chip_id in zip(axes, ids):
            _show_chip(row[column], Path(chips_dir) / side / f"{chip_id}.tif", side)
            if column == 0 or not paired:
                row[column].text(2, 2, chip_id, color="yellow", fontsize=7, va="top")
    fig.tight_layout()
    return fig


def _show_chip(ax, path: Path, side: str) -> None:
    """One chip as exported (its own validity); a target with the stretch of its RGB bands."""
    from geopix2pix.raster.render import render, stretch_limits

    data, valid = _read(path)
    if side == "source":
        ax.imshow(render(data, valid))
        return
    rgb = data[:3] if data.shape[0] >= 3 else np.repeat(data[:1], 3, axis=0)
    ax.imshow(render(data, valid, stretch_limits(rgb.astype(np.float64), valid)))


def _as_model(model: PathLike | LoadedModel) -> LoadedModel:
    from geopix2pix.models import LoadedModel, load_model

    return model if isinstance(model, LoadedModel) else load_model(model)


def predict_chips(model: PathLike | LoadedModel, chips_dir: PathLike,
                  ids: list[str]) -> list[tuple[np.ndarray, ...]]:
    """(source, prediction, target, source_valid, target_valid) in data units for chips of a
    folder (each side's validity as exported), with the model's
    own scaling (as `geopix2pix predict` applies it); a categorical model's prediction is the
    code of each pixel's most probable class."""
    import torch

    from geopix2pix.chips.dataset import ChipDataset
    from geopix2pix.chips.manifest import DatasetInfo
    from geopix2pix.models.metadata import ModelMetadata

    loaded = _as_model(model)
    meta = ModelMetadata.of(loaded, str(model) if isinstance(model, (str, os.PathLike))
                            else "model")
    info = DatasetInfo.load(chips_dir)
    if not info.paired:
        raise GeoPix2PixError(
            f"{chips_dir} holds unpaired chips: input | prediction | target needs aligned "
            "pairs; predict a scene with the model (geopix2pix.predict) to see its output, and "
            "show_chips shows each domain's chips")
    _check_bands(loaded, meta, info, chips_dir)
    target_scaling = meta.target.scaling
    dataset = ChipDataset(chips_dir, split=None, source_scaling=meta.source.scaling,
                          target_scaling=target_scaling, validity_band=loaded.spec.validity)
    index = {chip_id: i for i, chip_id in enumerate(dataset.ids)}
    device = next(loaded.generator.parameters()).device
    results = []
    for chip_id in ids:
        item = dataset[index[chip_id]]
        with torch.no_grad():
            scaled = loaded.generator(item["source"][None].to(device))[0].float().cpu().numpy()
        source, source_valid = _read(Path(chips_dir) / "source" / f"{chip_id}.tif")
        target, target_valid = _read(Path(chips_dir) / "target" / f"{chip_id}.tif")
        pred = np.asarray(meta.target.classes)[scaled.argmax(0)][None] if meta.categorical \
            else target_scaling.inverse(scaled)
        results.append((source, pred, target, source_valid, target_valid))
    return results


def _check_bands(model: LoadedModel, meta: ModelMetadata, info: DatasetInfo,
                 chips_dir: PathLike) -> None:
    """Refuse chips whose bands the model cannot take (or does not give)."""
    chips = (len(info.source.bands), len(info.target.bands))
    takes = (model.spec.source_bands, 1 if meta.categorical else model.spec.out_channels)
    if chips != takes:
        raise GeoPix2PixError(
            f"{chips_dir}: its chips have {chips[0]} source and {chips[1]} target band(s) but "
            f"the model takes {takes[0]} and gives {takes[1]}; pass the chips folder the model "
            "was trained on (or chips exported with the same bands)")


def _class_row(source: np.ndarray, pred: np.ndarray, target: np.ndarray,
               source_valid: np.ndarray, target_valid: np.ndarray,
               meta: ModelMetadata) -> np.ndarray:
    """input | prediction | target of a class map, in its classes' colours (a target code that
    is no class of the model drawn black)."""
    from geopix2pix.raster.render import class_colours, class_index_row

    codes = np.asarray(meta.target.classes)
    colours = class_colours(meta.target.classes, meta.target.band_metadata.colormap)
    index = np.searchsorted(codes, target[0]).clip(0, len(codes) - 1)
    known = target_valid & (codes[index] == target[0])
    return class_index_row(source, np.searchsorted(codes, pred[0]), index, source_valid, known,
                           colours)


def _panels(source: np.ndarray, pred: np.ndarray, target: np.ndarray,
            source_valid: np.ndarray, target_valid: np.ndarray,
            meta: ModelMetadata) -> list[np.ndarray]:
    """The input, prediction and target images of one chip."""
    from geopix2pix.raster.render import GAP, sample_row

    image = _class_row(source, pred, target, source_valid, target_valid, meta) \
        if meta.categorical else sample_row(source, pred, target, source_valid, target_valid)
    width = source.shape[-1]
    return [image[:, k * (width + GAP): k * (width + GAP) + width] for k in range(3)]


@api_function
def show_results(model: PathLike | LoadedModel, chips_dir: PathLike, n: int = 4,
                 split: str | None = "val", seed: int = 0, size: float = 3.0,
                 baseline: bool = True):
    """input | prediction | target for `n` chips of a split; `model` is a model file or a loaded
    model (`geopix2pix.load_model`). With ``baseline`` and a model file that carries its
    linear baselines (a Pix2Pix file's), the linear baseline's prediction (a class map's linear
    discriminant, or in files from before it the nearest class mean) is shown beside the
    model's."""
    from geopix2pix.models.metadata import ModelMetadata
    from geopix2pix.prediction.predictor import baseline_model

    _check_size(size)
    ids = _pick(chips_dir, split, n, seed)
    loaded = _as_model(model)
    results = predict_chips(loaded, chips_dir, ids)  # a model unfit for the chips: no figure
    meta = ModelMetadata.of(loaded)
    titles = ["input", "prediction", "target"]
    if baseline and meta.baselines is not None and meta.baselines.linear is not None:
        name = "discriminant" if meta.baselines.discriminant is not None else "linear"
        titles.insert(2, {"discriminant": "linear discriminant", "linear": "nearest class mean"
                          if meta.categorical else "linear baseline"}[name])
        linear = predict_chips(baseline_model(loaded, meta, name), chips_dir, ids)
    fig, axes = _grid(len(ids), titles, size)
    for index, (row, chip) in enumerate(zip(axes, results)):
        panels = _panels(*chip, meta)
        if len(titles) == 4:
            panels.insert(2, _panels(*linear[index], meta)[1])
        for ax, panel in zip(row, panels):
            ax.imshow(panel)
    fig.tight_layout()
    return fig


def read_metrics(run_dir: PathLike) -> dict[str, np.ndarray]:
    """RUN_DIR/metrics.csv as columns of floats (NaN where empty)."""
    from geopix2pix.training.history import METRICS

    path = Path(run_dir) / METRICS
    if not path.exists():
        raise GeoPix2PixError(f"{path} does not exist; pass a run folder of geopix2pix train")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: np.array([float(r[key]) if r[key] else np.nan for r in rows])
            for key in (rows[0] if rows else {})}


@api_function
def plot_metrics(run_dir: PathLike, size: float = 3.5):
    """Training curves from metrics.csv: losses, validation errors, PSNR and SSIM per epoch
    (for a class map, --categorical: cross-entropy, pixel accuracy and mean IoU)."""
    _check_size(size)
    columns = read_metrics(run_dir)
    if not columns:
        raise GeoPix2PixError(f"{Path(run_dir) / 'metrics.csv'} has no epoch yet")
    plt = _pyplot()
    panels = [("losses", ["loss_g_gan", "loss_g_l1", "loss_g_mse", "loss_g_ce", "loss_d"]),
              ("validation error (target units)", ["val_mae", "val_rmse"]),
              ("validation PSNR (dB)", ["val_psnr"]), ("validation SSIM", ["val_ssim"])]
    if np.isfinite(columns.get("val_ce", np.array([np.nan]))).any():  # a class map's run
        panels[1:] = [("validation cross-entropy", ["val_ce"]),
                      ("validation accuracy and mean IoU", ["val_accuracy", "val_miou"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size))
    for ax, (title, keys) in zip(axes, panels):
        for key in keys:
            if key in columns and np.isfinite(columns[key]).any():
                ax.plot(columns["epoch"], columns[key], marker=".", label=key)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if len(ax.get_lines()) > 1:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


@api_function
def plot_footprints(chips_dir: PathLike, scene: PathLike | None = None, size: float = 6.0):
    """The chips of chips.gpkg coloured by split, over `scene` (a raster) when given.

    Drawn in the scene's CRS, or in the first chip's native CRS without a scene.
    """
    import geopandas as gpd

    from geopix2pix.chips.manifest import INDEX

    _check_size(size)
    index = Path(chips_dir) / INDEX
    if not index.exists():
        raise GeoPix2PixError(f"{index} does not exist; run geopix2pix export-chips first")
    chips = gpd.read_file(index, layer="chips")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(size, size))
    crs, centre = chips["crs"].iloc[0], None
    if scene is not None:
        crs, centre = _draw_scene(ax, Path(scene))
    chips = chips.to_crs(crs)
    if chips.crs.is_geographic:  # the index splits chips at 180: draw them beside the scene
        chips.geometry = _beside(chips.geometry, centre)
    colours = {"train": "tab:blue", "val": "tab:orange"}
    for split, group in chips.groupby("split"):
        group.plot(ax=ax, facecolor="none", edgecolor=colours.get(split, "grey"), linewidth=0.8)
    handles = [plt.Line2D([], [], color=colours.get(s, "grey"), label=f"{s} ({n})")
               for s, n in chips["split"].value_counts().sort_index().items()]
    ax.legend(handles=handles, loc="upper right")
    ax.set_title(f"chip footprints ({crs})")
    fig.tight_layout()
    return fig


@api_function
def write_quicklook(source: PathLike, prediction: PathLike, truth: PathLike, out: PathLike, *,
                    overwrite: bool = False) -> Path:
    """input | prediction | truth of a whole (small) scene side by side as one PNG at `out`
    (the demo's quicklook.png), drawn as `show_results` draws chips; the three rasters must
    share a grid. Returns `out`. An existing `out` is replaced only with `overwrite`."""
    from PIL import Image

    from geopix2pix.raster.io import open_raster, read_window
    from geopix2pix.raster.render import sample_row
    from geopix2pix.raster.write import atomic_path

    arrays = []
    for path in (source, prediction, truth):
        with open_raster(path) as ds:
            arrays.append(read_window(ds, list(range(1, ds.count + 1)), None))
    (source_data, source_valid), (pred, pred_valid), (truth_data, truth_valid) = arrays
    _check_same_shape(arrays, (source, prediction, truth))
    row = sample_row(source_data, pred, truth_data, source_valid, truth_valid, pred_valid)
    with atomic_path(out, overwrite) as temp:
        Image.fromarray(row).save(temp, format="PNG")
    return Path(out)


def _check_same_shape(arrays: list, paths: tuple) -> None:
    shapes = [data.shape[1:] for data, _ in arrays]
    if len(set(shapes)) > 1:
        sizes = ", ".join(f"{Path(p).name} {c} x {r}" for p, (r, c) in zip(paths, shapes))
        raise GeoPix2PixError(f"write_quicklook: the rasters differ in size ({sizes}); give "
                              "a prediction on its source's grid and the truth on the same grid")


def _beside(geometry, centre: float | None):
    """Footprints in degrees with their longitudes taken within 180 of `centre` (default: the
    first footprint's), so parts split at 180 meet again next to a scene defined past it."""
    import shapely

    if centre is None:
        centre = float(geometry.iloc[0].centroid.x)

    def unwrap(xy: np.ndarray) -> np.ndarray:
        xy = xy.copy()
        xy[:, 0] = centre + (xy[:, 0] - centre + 180.0) % 360.0 - 180.0
        return xy

    return geometry.apply(lambda part: shapely.transform(part, unwrap))


def _draw_scene(ax, scene: Path, max_side: int = 1024):
    """Draw a raster (decimated to at most `max_side` pixels) in its CRS; return the CRS and
    the longitude or x of its centre."""
    from rasterio.enums import Resampling

    from geopix2pix.raster.bands import data_bands
    from geopix2pix.raster.io import open_raster
    from geopix2pix.raster.render import render

    with open_raster(scene) as ds:
        factor = max(1, int(np.ceil(max(ds.width, ds.height) / max_side)))
        shape = (ds.height // factor or 1, ds.width // factor or 1)
        bands = data_bands(ds)[:3]
        data = ds.read(bands, out_shape=(len(bands), *shape), resampling=Resampling.nearest,
                       masked=True)
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    valid = ~np.ma.getmaskarray(data).any(0)
    ax.imshow(render(data.filled(0), valid), extent=(left, right, bottom, top))
    return crs, (left + right) / 2
