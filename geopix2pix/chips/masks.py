"""Validity masks of export-chips: `--source-mask` / `--target-mask` rasters (or a
--pairs CSV's `source_mask` / `target_mask` columns) warped onto each pair's source grid with
nearest, whose masked pixels are invalid in their side's chip exactly like nodata (the pair's
pixel is then left out of the loss; a target mask leaves the source's pixels as they are).

A mask's first band is read. With `--mask-values` its pixels holding one of those codes are
masked (Sentinel-2 SCL: 3 cloud shadow, 8 and 9 cloud, 10 cirrus); without, it is a 0/1 mask and
1 is masked, as in cloud masks (s2cloudless, Fmask's cloud layers, MSK_CLDPRB thresholded): a
value other than 0 or 1 is an error. Pixels outside the mask's footprint or on its nodata are
masked too: nothing says they are clear."""

from __future__ import annotations

import csv
import io
import math
import os
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rasterio.windows import Window

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.grid import Grid, overlap_window
from geopix2pix.raster.io import (
    anchored,
    full_path,
    is_gdal_name,
    open_raster,
    raster_path,
    read_window,
    warped_view,
)
from geopix2pix.raster.pair import PairRead


def parse_mask_values(text: str | None) -> list[float] | None:
    """'3,8,9,10' -> [3.0, 8.0, 9.0, 10.0] (None stays None); a slip is one line."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise GeoPix2PixError(f"--mask-values {text or chr(34) * 2}: give the mask codes that "
                              "mark a pixel invalid as numbers, e.g. 3,8,9,10")
    return values


@dataclass(frozen=True)
class MaskSpec:
    """One mask as the workers need it (picklable): its side ("source" or "target"), its option
    (for messages), its path and the codes that mark a pixel invalid (None: a 0/1 mask, 1
    invalid)."""

    side: str
    option: str
    path: str
    values: tuple[float, ...] | None = None

    def masked(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """(rows, cols) True where the mask's first band `data` marks a pixel invalid, or where
        the mask holds nothing (`valid` False: outside it, or its nodata)."""
        if self.values is not None:
            return ~valid | np.isin(data, self.values)
        odd = valid & (data != 0) & (data != 1)
        if odd.any():
            raise GeoPix2PixError(
                f"{self.option} {self.path} holds {data[odd][0]:g} where a 0/1 mask (1 invalid) "
                "is expected; give the codes that mark a pixel invalid with --mask-values")
        return ~valid | (data == 1)


def pair_masks(pairs, count: int, options) -> list[tuple[MaskSpec, ...]]:
    """Each of `count` pairs' masks: a --pairs CSV's `source_mask` / `target_mask` cells
    (relative to the CSV's folder), else --source-mask / --target-mask; checked to exist."""
    cells = _csv_cells(Path(pairs)) if isinstance(pairs, (str, os.PathLike)) else [{}] * count
    values = None if options.mask_values is None else tuple(options.mask_values)
    masks = []
    for row in cells:
        specs = []
        for side in ("source", "target"):
            option, path = row.get(side) or (f"--{side}-mask", getattr(options, f"{side}_mask"))
            if path is not None:
                if not is_gdal_name(path) and not Path(path).exists():
                    raise GeoPix2PixError(f"{option} {path}: no such file; check the path")
                specs.append(MaskSpec(side, option, os.fspath(path), values))
        masks.append(tuple(specs))
    if values is not None and not any(masks):
        raise GeoPix2PixError("--mask-values needs a mask: give --target-mask or --source-mask "
                              "(or source_mask/target_mask columns in the --pairs CSV)")
    return masks


def _csv_cells(path: Path) -> list[dict[str, tuple[str, Path | str]]]:
    """The mask cells of each row of a --pairs CSV (read by `pairs.read_pairs_csv` already):
    {side: (where, path)} for the filled-in ones."""
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    rows = []
    for row in reader:
        cells = {}
        for side in ("source", "target"):
            typed = (row.get(f"{side}_mask") or "").strip()
            if typed:
                where = f"--pairs {path}, line {reader.line_num}: {side}_mask"
                cells[side] = (where, raster_path(anchored(typed, path.parent)))
        rows.append(cells)
    return rows


def check_masks(masks: tuple[MaskSpec, ...], grid: Grid, source: str) -> None:
    """Refuse, in one line, a mask that cannot be read or placed, that does not overlap the
    source `grid`, or whose dtype cannot hold a --mask-values code."""
    for mask in masks:
        try:
            with open_raster(mask.path) as dataset:
                _check_codes(mask, dataset.dtypes[0])
                overlap_window(grid, Grid.of(dataset), source, mask.path)
        except GeoPix2PixError as exc:
            if str(exc).startswith(mask.option):
                raise
            if " do not overlap" in str(exc):
                raise GeoPix2PixError(f"{mask.option} {mask.path} does not overlap the source "
                                      f"{source}; pass the mask of this pair's scene") from None
            raise GeoPix2PixError(f"{mask.option}: {exc}") from None


def _check_codes(mask: MaskSpec, dtype: str) -> None:
    if mask.values is None or not np.issubdtype(np.dtype(dtype), np.integer):
        return
    info = np.iinfo(np.dtype(dtype))
    for value in mask.values:
        if value != int(value) or not info.min <= value <= info.max:
            raise GeoPix2PixError(
                f"{mask.option} {mask.path} holds {dtype} values, which cannot be {value:g} "
                f"(--mask-values); give codes from {info.min} to {info.max}")


class MaskReader:
    """A pair's masks warped onto its source grid with nearest (one per worker), applied to the
    pair's reads: masked pixels become invalid on the mask's side. A target's masks share its
    misregistration: with --correct-shift's `correction` they are moved as the target is."""

    def __init__(self, masks: tuple[MaskSpec, ...], grid: Grid,
                 correction: tuple[float, float] | None = None):
        self._stack = ExitStack()
        self._views = []
        moved = grid.moved(*correction) if correction else grid
        for mask in masks:
            dataset = self._stack.enter_context(open_raster(mask.path))
            onto = moved if mask.side == "target" else grid
            self._views.append((mask, self._stack.enter_context(
                warped_view(dataset, onto, "nearest"))))

    def apply(self, read: PairRead, window: Window) -> PairRead:
        """`read` with the pixels a mask marks invalid (on `window`) made invalid on its side."""
        valid = {"source": read.source_valid, "target": read.target_valid}
        for mask, view in self._views:
            data, held = read_window(view, [1], window)
            valid[mask.side] = valid[mask.side] & ~mask.masked(data[0], held)
        return PairRead(read.source, read.target, valid["source"], valid["target"])

    def __enter__(self) -> MaskReader:
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()


def attach_masks(pair_list, masks: list[tuple[MaskSpec, ...]]) -> None:
    """Check each pair's masks against its source grid and hand them to its workers."""
    for pair, specs in zip(pair_list, masks):
        check_masks(specs, pair.grid, pair.spec.source)
        pair.spec = replace(pair.spec, masks=specs)


def mask_inputs(pair_list) -> list[Path]:
    """The mask files the export reads (an output folder must not hold them)."""
    return [Path(m.path) for p in pair_list for m in p.spec.masks if not is_gdal_name(m.path)]


def recorded_masks(masks: tuple[MaskSpec, ...]) -> dict[str, str | None]:
    """A pair's masks as dataset.json records them: full paths (no key where none, so an
    export without masks records what it did before)."""
    return {f"{m.side}_mask": full_path(m.path) for m in masks}
