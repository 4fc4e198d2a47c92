"""`geopix2pix export-chips`'s options (`ExportOptions`), declared once: names, types, defaults,
choices, help and checks (a one-line GeoPix2PixError naming the option, before any raster is
opened); the command line derives its options from these fields and ``export_chips(source,
target, out_dir, **options)`` takes the same names. `ExportKeywords` names them with their types
for type checkers and IDEs (a test keeps the two the same). The stride and the number of workers
are filled in when None; `--split-block` stays None until the split chooses one
(`with_split_block`). dataset.json records all but the runtime options (`recorded`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypedDict

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.jsonvalues import encode_number
from geopix2pix.raster.io import RESAMPLING
from geopix2pix.runtime.device import default_workers
from geopix2pix.settings import common
from geopix2pix.settings.declare import check_choice, declared, option

RESAMPLINGS = tuple(RESAMPLING)  # of a target warped onto the source grid
AOI_MODES = ("intersects", "within")
SCALING_MODES = ("percentile", "minmax", "centre")
CHIP_SIZES = (32, 2048)  # the least and most --chip-size (powers of two: the U-Net halves them)
TARGET_SCALINGS = ("minmax", "percentile")  # centre cannot be inverted at prediction
UNPAIRED_ONLY = ("unpaired", "pixel_size")  # recorded by unpaired exports only
# a target against its source (its shift, masks over both): recorded by paired exports only
PAIRED_ONLY = ("max_shift", "shift_check", "correct_shift", "source_mask", "target_mask",
               "mask_values")


def is_chip_size(value: int) -> bool:
    """Whether `value` is a --chip-size export cuts: a power of two within `CHIP_SIZES`."""
    return CHIP_SIZES[0] <= value <= CHIP_SIZES[1] and not value & (value - 1)


class ExportKeywords(TypedDict, total=False):
    """The keyword options of `export_chips`, as type checkers see them: `ExportOptions`'s
    fields (a test keeps the two the same)."""

    unpaired: bool
    chip_size: int
    stride: int | None
    source_bands: Sequence[int] | None
    target_bands: Sequence[int] | None
    target_resampling: str
    pixel_size: float | None
    aoi: str | os.PathLike | None
    aoi_layer: str | None
    aoi_mode: str
    source_nodata: float | None
    target_nodata: float | None
    max_nodata: float
    max_shift: float | None
    shift_check: bool
    correct_shift: bool
    source_mask: str | os.PathLike | None
    target_mask: str | os.PathLike | None
    mask_values: Sequence[float] | None
    val_fraction: float
    split_block: int | None
    seed: int
    source_scaling: str
    target_scaling: str
    workers: int | None
    overwrite: bool
    progress: bool
    sample_size: int


@dataclass(frozen=True)
class ExportOptions:
    """The options of an export (see `geopix2pix export-chips --help` for what each one does),
    in the order dataset.json records them."""

    unpaired: bool = option(False, help=(  # chips.unpaired
        "Cut chips from two unpaired collections (--source and --target rasters, or "
        "--rasters), each on its own rasters' grids."))
    chip_size: int = option(256, help="Chip width and height in source pixels: a power of two "
                            f"from {CHIP_SIZES[0]} to {CHIP_SIZES[1]}.")
    stride: int | None = option(None, help="Pixels between chip origins",
                                shown_default="the chip size")
    source_bands: Sequence[int] | None = option(
        None, kind="bands", help="1-based source bands, e.g. 1,2,3 or 1-3",
        shown_default="all but alpha")
    target_bands: Sequence[int] | None = option(None, kind="bands", help="1-based target bands",
                                                shown_default="all but alpha")
    target_resampling: str = option("bilinear", choices=RESAMPLINGS, help=(
        "Resampling when the target is warped onto the source grid; nearest for categorical "
        "maps. Identical grids are never resampled, unless --correct-shift moves the target."))
    pixel_size: float | None = option(None, metavar="METRES", help=(  # unpaired: chips.domains
        "Unpaired: resample both domains to this ground pixel size"),
        shown_default="each raster's own")
    aoi: str | os.PathLike | None = option(None, kind="file", help=(
        "Vector file (any format geopandas reads, any CRS): keep chips that overlap its polygons."))
    aoi_layer: str | None = option(None, metavar="NAME", help=(
        "The AOI file's layer to read (a GeoPackage of several layers)"),
        shown_default="its only layer, or its only layer of polygons")
    aoi_mode: str = option("intersects", choices=AOI_MODES, help=(
        "Keep chips that overlap the AOI (a chip that only touches its edge does not), or only "
        "those entirely within it."))
    source_nodata: float | None = option(None, metavar="VALUE", help=(  # raster.nodata
        "Nodata value of the source rasters, for rasters that declare none (or a wrong one): "
        "they are read as if their files carried it (validity, --max-nodata, statistics, "
        "warping, the chips' nodata), e.g. -9999; nan for floats"),
        shown_default="each raster's own")
    target_nodata: float | None = option(None, metavar="VALUE", help=(
        "Nodata value of the target rasters, as --source-nodata"),
        shown_default="each raster's own")
    max_nodata: float = option(0.1, help="Keep a chip when at most this fraction of its pixels "
                               "is invalid in either raster.")
    max_shift: float | None = option(None, metavar="PX", help=(  # None: whatever their shift
        "Drop chips whose target is confidently shifted by more than PX source pixels against "
        "their source (the shift check's estimate)."))
    shift_check: bool = option(True, negatable=True, help=(
        "Estimate each chip's shift of the target against the source (chips.gpkg's shift_x, "
        "shift_y, shift_confidence; the summary's line per pair)."))
    correct_shift: bool = option(False, help=(  # chips.shift_correction
        "Measure each pair's systematic shift first and move its target by it (its warp's "
        "transform), so the chips come out aligned; the target is then resampled "
        "(--target-resampling) even on an identical grid. dataset.json records the shift "
        "applied."))
    source_mask: str | os.PathLike | None = option(None, kind="file", metavar="MASK", help=(
        "Validity mask raster of the source (any grid and CRS, warped with nearest): its masked "
        "pixels are invalid in the source chip, like its nodata."))  # chips.masks
    target_mask: str | os.PathLike | None = option(None, kind="file", metavar="MASK", help=(
        "Validity mask raster of the target (clouds, shadows, changes; any grid and CRS): its "
        "masked pixels are invalid in the target chip and left out of the loss."))
    mask_values: Sequence[float] | None = option(
        None, kind="codes", metavar="CODES", shown_default="a 0/1 mask, 1 invalid", help=(
            "Mask codes that mark a pixel invalid, e.g. 3,8,9,10 for Sentinel-2 SCL's cloud "
            "shadows and clouds"))
    val_fraction: float = option(0.2, help="Share of chips in the validation split.")
    split_block: int | None = option(None, help=(  # None: the split chooses it (layout.py)
        "Side of the spatial blocks given whole to train or val, in pixels of the first pair's "
        "source (the blocks are shared by all pairs), at least the chip size"), shown_default=(
        "8 x chip size, or 4, 2 or 1 for a val share nearer --val-fraction"))
    seed: int = common.seed("Seed of the split and the statistics sample.")
    source_scaling: str = option("percentile", choices=SCALING_MODES, help=(
        "How source values map to [-1, 1]: 1st-99th percentiles, min-max, or centre (each chip "
        "minus its mean: for elevation inputs)."))
    target_scaling: str = option("minmax", choices=TARGET_SCALINGS, help=(
        "How target values map to [-1, 1] (and back at prediction)."))
    workers: int | None = common.workers("Worker processes (0 or 1: export in this process)",
                                         "one per usable core (affinity, CPU quota), at "
                                         "most 8")
    overwrite: bool = common.overwrite(
        "Replace the outputs of an earlier export in the output folder (a folder holding "
        "anything else is refused).")
    progress: bool = common.progress()
    sample_size: int = option(200_000, cli=False, runtime=True)

    def __post_init__(self) -> None:
        """Fill in the stride (the chip size) and the workers (`default_workers`) where None,
        then check every value."""
        if self.stride is None:
            object.__setattr__(self, "stride", self.chip_size)
        if self.workers is None:
            object.__setattr__(self, "workers", default_workers())
        self._check_chips()
        self._check_runtime()
        self._check_shift()
        self._check_mask_values()
        self._check_pixel_size()

    def _check_chips(self) -> None:
        """The chips' size, overlap, validity, split share, resampling and scaling."""
        chip_size = self.chip_size
        if not is_chip_size(chip_size):
            raise GeoPix2PixError(f"--chip-size {chip_size}: use a power of two from "
                                  f"{CHIP_SIZES[0]} to {CHIP_SIZES[1]} (the U-Net halves it "
                                  "down to 1 pixel)")
        if self.stride < 1:
            raise GeoPix2PixError(f"--stride {self.stride}: use a positive number of pixels")
        if not 0 <= self.max_nodata <= 1:
            raise GeoPix2PixError(f"--max-nodata {self.max_nodata}: use a fraction from 0 to 1")
        if not 0 <= self.val_fraction < 1:
            raise GeoPix2PixError(f"--val-fraction {self.val_fraction}: use a fraction from 0 "
                                  "to below 1")
        check_choice(self, "target_resampling")
        check_choice(self, "source_scaling")
        if self.target_scaling not in TARGET_SCALINGS:
            raise GeoPix2PixError(f"--target-scaling {self.target_scaling}: use percentile or "
                                  "minmax (centre cannot be inverted at prediction)")

    def _check_runtime(self) -> None:
        """The split and the process options; a block smaller than a chip puts no chip in val.
        The AOI mode is checked with or without --aoi (an API call may pass the mode alone)."""
        split_block = self.chip_size if self.split_block is None else self.split_block
        if split_block < self.chip_size:
            raise GeoPix2PixError(f"--split-block {split_block}: use at least the chip size "
                                  f"({self.chip_size}), so that whole chips fit in a block")
        common.check_seed(self.seed)
        common.check_workers(self.workers, "0 and 1 export in this process")
        check_choice(self, "aoi_mode")
        if self.aoi_layer is not None and self.aoi is None:
            raise GeoPix2PixError(f"--aoi-layer {self.aoi_layer} needs --aoi (the file whose "
                                  "layer it names)")

    def _check_shift(self) -> None:
        """--max-shift (a positive number of pixels) and --correct-shift need the shift
        check."""
        if self.correct_shift and not self.shift_check:
            raise GeoPix2PixError("--correct-shift needs the shift check; drop --no-shift-check")
        if self.max_shift is None:
            return
        if not self.max_shift > 0:
            raise GeoPix2PixError(f"--max-shift {self.max_shift}: use a positive number of "
                                  "source pixels")
        if not self.shift_check:
            raise GeoPix2PixError(f"--max-shift {self.max_shift} needs the shift check; drop "
                                  "--no-shift-check")

    def _check_mask_values(self) -> None:
        """--mask-values: at least one finite number (the masks' dtypes are checked when
        they are opened: `chips.masks`)."""
        if self.mask_values is None:
            return
        if not self.mask_values or not all(math.isfinite(v) for v in self.mask_values):
            shown = ",".join(f"{v:g}" for v in self.mask_values) or '""'
            raise GeoPix2PixError(f"--mask-values {shown}: give the mask codes that mark a "
                                  "pixel invalid, e.g. 3,8,9,10")

    def _check_pixel_size(self) -> None:
        """--pixel-size: a positive ground size, for unpaired exports only (a paired export
        cuts its chips on each pair's source grid)."""
        if self.pixel_size is None:
            return
        if not self.unpaired:
            raise GeoPix2PixError(f"--pixel-size {self.pixel_size} is for unpaired exports; "
                                  "add --unpaired, or drop it (pairs are cut on their source "
                                  "grid)")
        if not 0 < self.pixel_size < math.inf:
            raise GeoPix2PixError(f"--pixel-size {self.pixel_size}: use a positive ground size "
                                  "in metres")

    def with_split_block(self, split_block: int) -> ExportOptions:
        """These options with the --split-block the split used (the one given, or the one it
        chose)."""
        return replace(self, split_block=split_block)

    def recorded(self, source_bands: list[int], target_bands: list[int]) -> dict[str, Any]:
        """The options dataset.json records: all but the runtime ones, with the bands read (all
        but alpha where none were given) and the AOI and masks as absolute paths; the
        unpaired options only for an unpaired export (a paired dataset.json is as it was), the
        options of a pair's target against its source (shift check, masks) only for a paired
        one."""
        skipped = PAIRED_ONLY if self.unpaired else UNPAIRED_ONLY
        recorded = {f.name: getattr(self, f.name) for f, meaning in declared(self)
                    if not meaning.runtime and f.name not in skipped}
        recorded.update(source_bands=source_bands, target_bands=target_bands,
                        source_nodata=encode_number(self.source_nodata),
                        target_nodata=encode_number(self.target_nodata),
                        **{name: _absolute(getattr(self, name))
                           for name in ("aoi", "source_mask", "target_mask")
                           if name not in skipped})
        return recorded


def _absolute(path: str | os.PathLike | None) -> str | None:
    """A file option as dataset.json records it: an absolute path (None where not given)."""
    return str(Path(path).resolve()) if path else None

