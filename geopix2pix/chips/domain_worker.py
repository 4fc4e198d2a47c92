"""The per-process part of an unpaired export (`chips.unpaired`): read a batch of chip windows
of one raster of one domain (on its own grid, or through a warped view onto its --pixel-size
grid), reject those with too many invalid pixels, write the chips into the domain's folder and
accumulate the domain's train statistics. The paired export's `worker` does the same for pairs;
the chip writing (`ChipWriter`) and the GDAL cache are shared.

Each job opens its own dataset (rasterio handles are never shared across processes)."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from geopix2pix.chips.layout import ChipWindow
from geopix2pix.chips.stats import BandStatistics, ClassCounts
from geopix2pix.chips.worker import REJECT_NODATA, ChipWriter, job_frame
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.io import open_raster, read_window, warped_view
from geopix2pix.raster.nodata import Override


@dataclass(frozen=True)
class DomainSpec:
    """One raster of a domain as the workers need it (picklable)."""

    index: int  # among all the export's rasters: the chips' ids (p<index>_r..._c...)
    path: str
    domain: str  # "source" or "target": the folder its chips go to
    bands: tuple[int, ...]
    grid: Grid  # the grid chips are cut on
    resampled: bool  # read through a warped view onto `grid` (--pixel-size)
    resampling: str
    nodata: Override | None = None  # --source-nodata's or --target-nodata's (raster.nodata)


@dataclass
class DomainJob:
    raster: DomainSpec
    chips: list[tuple[ChipWindow, str]]
    out_dir: str
    max_nodata: float
    seed: int
    sample_rate: float


@dataclass
class DomainResult:
    records: list[dict]
    rejected: Counter
    stats: BandStatistics  # of the train chips
    val_classes: ClassCounts  # the val chips' codes (the target domain's class maps)
    invalid: list[ChipWindow]  # the chips dropped for REJECT_NODATA (`pipeline.split_again`)


def run_domain_job(job: DomainJob) -> DomainResult:
    """Process one batch of chips of one raster: their index records and partial statistics
    (in `worker.job_frame`: an error reading or writing data is one line)."""
    with job_frame((job.raster.path,), job.chips[0][0].size):
        return _run_domain_job(job)


def _run_domain_job(job: DomainJob) -> DomainResult:
    spec = job.raster
    first = job.chips[0][0]
    stats = BandStatistics(len(spec.bands), job.sample_rate,
                           seed=[job.seed, spec.index, first.row, first.col],
                           count_classes=spec.domain == "target")
    val_classes = ClassCounts(len(spec.bands))
    records, rejected, invalid = [], Counter(), []
    with ExitStack() as stack, ThreadPoolExecutor(1) as writer:
        dataset = stack.enter_context(open_raster(spec.path, nodata=spec.nodata))
        view = stack.enter_context(warped_view(dataset, spec.grid, spec.resampling)) \
            if spec.resampled else dataset
        chip_writer = ChipWriter(dataset, spec.bands, Path(job.out_dir) / spec.domain,
                                 spec.grid)
        pending = None
        for chip, split in job.chips:
            data, valid = read_window(view, spec.bands, chip.window)
            valid_fraction = float(valid.mean())
            if 1.0 - valid_fraction > job.max_nodata:
                rejected[REJECT_NODATA] += 1
                invalid.append(chip)
                continue
            if pending is not None:  # the previous chip's, written while this one was read
                pending.result()
            pending = writer.submit(chip_writer.write, chip, data, valid)
            if split == "train":
                stats.add(data, valid)
            else:
                val_classes.add(data[:, valid])
            records.append(dict(id=chip.id, raster=spec.index, domain=spec.domain,
                                row=chip.row, col=chip.col, split=split,
                                valid_fraction=round(valid_fraction, 6)))
        if pending is not None:
            pending.result()
    return DomainResult(records, rejected, stats, val_classes, invalid)
