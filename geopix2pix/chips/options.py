"""`ExportOptions`: the options of `export_chips` (and `geopix2pix export-chips`), checked before
any raster is opened.

The defaults live in one place, `export_chips`'s signature, which also checks the options' types;
`ExportOptions.from_arguments` takes its arguments, fills in the stride and the number of workers
when they are None, and the dataclass checks the values (a one-line GeoPix2PixError naming the
option). `--split-block` stays None until the split chooses one (`with_split_block`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from geopix2pix.chips.scaling import SCALING_MODES
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.io import RESAMPLING
from geopix2pix.runtime.device import default_workers

# How the export runs rather than what it makes: dataset.json does not record them.
UNRECORDED = ("workers", "overwrite", "progress", "sample_size")


@dataclass(frozen=True)
class ExportOptions:
    """The options of an export (see `geopix2pix export-chips --help` for what each one does),
    in the order dataset.json records them. No defaults here: they are `export_chips`'s."""

    chip_size: int
    stride: int
    source_bands: list[int] | None
    target_bands: list[int] | None
    target_resampling: str
    aoi: str | os.PathLike | None
    aoi_mode: str
    max_nodata: float
    max_shift: float | None  # None: keep chips whatever their shift
    shift_check: bool
    val_fraction: float
    split_block: int | None  # None: the split chooses it (see layout.choose_split)
    seed: int
    source_scaling: str
    target_scaling: str
    workers: int
    overwrite: bool
    progress: bool
    sample_size: int

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> ExportOptions:
        """The options among `export_chips`'s (type-checked) arguments, with the stride (the
        chip size) and the workers (`default_workers`) filled in where they are None."""
        values = {f.name: arguments[f.name] for f in fields(cls)}
        if values["stride"] is None:
            values["stride"] = values["chip_size"]
        if values["workers"] is None:
            values["workers"] = default_workers()
        return cls(**values)

    def __post_init__(self) -> None:
        self._check_chips()
        self._check_runtime()
        self._check_aoi_mode()
        self._check_shift()

    def _check_chips(self) -> None:
        """The chips' size, overlap, validity, split share, resampling and scaling."""
        chip_size = self.chip_size
        if chip_size < 32 or chip_size > 2048 or chip_size & (chip_size - 1):
            raise GeoPix2PixError(f"--chip-size {chip_size}: use a power of two from 32 to 2048 "
                                  "(the U-Net halves it down to 1 pixel)")
        if self.stride < 1:
            raise GeoPix2PixError(f"--stride {self.stride}: use a positive number of pixels")
        if not 0 <= self.max_nodata <= 1:
            raise GeoPix2PixError(f"--max-nodata {self.max_nodata}: use a fraction from 0 to 1")
        if not 0 <= self.val_fraction < 1:
            raise GeoPix2PixError(f"--val-fraction {self.val_fraction}: use a fraction from 0 "
                                  "to below 1")
        if self.target_resampling not in RESAMPLING:
            raise GeoPix2PixError(f"--target-resampling {self.target_resampling}: use one of "
                                  f"{', '.join(RESAMPLING)}")
        if self.source_scaling not in SCALING_MODES:
            raise GeoPix2PixError(f"--source-scaling {self.source_scaling}: use one of "
                                  f"{', '.join(SCALING_MODES)}")
        if self.target_scaling not in ("percentile", "minmax"):
            raise GeoPix2PixError(f"--target-scaling {self.target_scaling}: use percentile or "
                                  "minmax (centre cannot be inverted at prediction)")

    def _check_runtime(self) -> None:
        """The split and the process options; a block smaller than a chip puts no chip in val."""
        split_block = self.chip_size if self.split_block is None else self.split_block
        if split_block < self.chip_size:
            raise GeoPix2PixError(f"--split-block {split_block}: use at least the chip size "
                                  f"({self.chip_size}), so that whole chips fit in a block")
        if self.seed < 0:
            raise GeoPix2PixError(f"--seed {self.seed}: use 0 or more")
        if self.workers < 0:
            raise GeoPix2PixError(f"--workers {self.workers}: use 0 or more (0 and 1 export in "
                                  "this process)")

    def _check_aoi_mode(self) -> None:
        """Checked with or without --aoi (an API call may pass the mode alone)."""
        from geopix2pix.chips.footprints import AOI_MODES

        if self.aoi_mode not in AOI_MODES:
            raise GeoPix2PixError(f"--aoi-mode {self.aoi_mode}: use one of "
                                  f"{', '.join(AOI_MODES)}")

    def _check_shift(self) -> None:
        """--max-shift: a positive number of pixels, which needs the shift check."""
        if self.max_shift is None:
            return
        if not self.max_shift > 0:
            raise GeoPix2PixError(f"--max-shift {self.max_shift}: use a positive number of "
                                  "source pixels")
        if not self.shift_check:
            raise GeoPix2PixError(f"--max-shift {self.max_shift} needs the shift check; drop "
                                  "--no-shift-check")

    def with_split_block(self, split_block: int) -> ExportOptions:
        """These options with the --split-block the split used (the one given, or the one it
        chose)."""
        return replace(self, split_block=split_block)

    def recorded(self, source_bands: list[int], target_bands: list[int]) -> dict[str, Any]:
        """The options dataset.json records: all but `UNRECORDED`, with the bands read (all but
        alpha where none were given) and the AOI as an absolute path."""
        recorded = {f.name: getattr(self, f.name) for f in fields(self)
                    if f.name not in UNRECORDED}
        recorded.update(source_bands=source_bands, target_bands=target_bands,
                        aoi=str(Path(self.aoi).resolve()) if self.aoi else None)
        return recorded
