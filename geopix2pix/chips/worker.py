"""The per-process part of chip export: read a batch of chip windows of one pair (its validity
masks applied: `masks`), reject those with too many invalid pixels, estimate the target's shift
(`shiftcheck`; dropping those shifted beyond --max-shift), write the GeoTIFF pairs and
accumulate train statistics.

Each job opens its own datasets (rasterio handles are never shared across processes)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from geopix2pix.chips.coregistration import Shift
from geopix2pix.chips.layout import ChipWindow
from geopix2pix.chips.masks import MaskReader, MaskSpec
from geopix2pix.chips.shiftcheck import REJECT_SHIFT, ShiftCheck, columns
from geopix2pix.chips.stats import BandStatistics, ClassCounts
from geopix2pix.errors import GeoPix2PixError, data_errors, describe
from geopix2pix.raster.band_metadata import BandMetadata
from geopix2pix.raster.gdal_log import checked_write, libtiff_quiet
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.heap import release_free_heap
from geopix2pix.raster.io import chip_nodata, decoded_block_bytes
from geopix2pix.raster.nodata import Override
from geopix2pix.raster.pair import PairReader
from geopix2pix.raster.write import gtiff_profile

REJECT_NODATA = "too many invalid pixels"


@dataclass(frozen=True)
class PairSpec:
    """A pair as the workers need it (picklable)."""

    index: int
    source: str
    target: str
    source_bands: tuple[int, ...]
    target_bands: tuple[int, ...]
    resampling: str
    masks: tuple[MaskSpec, ...] = ()  # validity masks (chips.masks)
    correction: tuple[float, float] | None = None  # --correct-shift's (chips.shift_correction)
    # --source-nodata's and --target-nodata's (raster.nodata), None where not given
    nodata: tuple[Override | None, Override | None] = (None, None)

    def reader(self) -> PairReader:
        """The pair opened for reading (as if tagged with the `nodata` given), its target moved
        by the `correction` if any."""
        return PairReader(self.source, self.target, self.source_bands, self.target_bands,
                          self.resampling, self.correction, self.nodata)


@dataclass
class Job:
    pair: PairSpec
    chips: list[tuple[ChipWindow, str]]
    out_dir: str
    max_nodata: float
    seed: int
    sample_rate: float
    shift_check: ShiftCheck = ShiftCheck(0)


@dataclass
class JobResult:
    records: list[dict]
    rejected: Counter
    source_stats: BandStatistics
    target_stats: BandStatistics
    val_classes: ClassCounts  # the val chips' target codes (a class that val holds, train not)
    shifts: list[Shift]  # the chips' estimated shifts, those --max-shift dropped included
    invalid: list[ChipWindow]  # the chips dropped for REJECT_NODATA (`pipeline.split_again`)


class ChipWriter:
    """Writes one side's chips as GeoTIFFs with the raster's dtype, nodata, descriptions and
    band metadata (units, scales, offsets, colour interpretation and table), on the chip's exact
    transform. A chip GDAL could not write whole (a full disk, which GDAL may only log) is a
    one-line GeoPix2PixError naming it (`gdal_log.checked_write`)."""

    def __init__(self, dataset, bands: tuple[int, ...], folder: Path, grid: Grid):
        self.folder = folder
        self.grid = grid
        self.bands = bands
        self.dtype = dataset.dtypes[bands[0] - 1]
        self.nodata = chip_nodata(dataset, bands)
        self.descriptions = [dataset.descriptions[b - 1] for b in bands]
        self.band_metadata = BandMetadata.of(dataset, bands)

    def write(self, chip: ChipWindow, data: np.ndarray, valid: np.ndarray) -> None:
        profile = gtiff_profile(self.dtype, len(self.bands), self.grid.crs,
                                self.grid.window_transform(chip.window), chip.size, chip.size,
                                self.nodata)
        all_valid = bool(valid.all())
        if not all_valid and self.nodata is not None:
            data = data.copy()
            data[:, ~valid] = self.nodata
        path = self.folder / f"{chip.id}.tif"
        with checked_write(path), rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
                rasterio.open(path, "w", **profile) as dst:
            # tags first: libtiff cannot change the photometric tag (a palette) once pixels
            # are written, and GDAL signals that as an error (a failed write)
            self._write_tags(dst)
            dst.write(data)
            if not all_valid and self.nodata is None:
                dst.write_mask(valid.astype(np.uint8) * 255)

    def _write_tags(self, dst) -> None:
        for band, text in enumerate(self.descriptions, start=1):
            if text:
                dst.set_band_description(band, text)
        self.band_metadata.apply(dst)


MIN_CACHE, MAX_CACHE = 64 << 20, 512 << 20


def cache_bytes(datasets, chip_size: int) -> int:
    """A GDAL block cache that holds the block rows one row of chips touches in every raster (so
    no block is decoded twice) but never grows with the scene: GDAL's default, 5% of the RAM,
    would keep most of a large scene's decoded blocks."""
    total = sum(decoded_block_bytes(ds, chip_size, ds.width) for ds in datasets)
    return int(min(max(total, MIN_CACHE), MAX_CACHE))


@contextlib.contextmanager
def job_frame(rasters: Sequence[str | Path], chip_size: int) -> Iterator[None]:
    """The frame of one export job cutting `chip_size` chips from `rasters`: a GDAL block cache
    sized for them (`cache_bytes`), libtiff's warnings quiet (a full disk: one line), and the
    heap freed afterwards. An error reading or writing data (a damaged raster, a full disk) is
    raised as a `GeoPix2PixError` that says what GDAL said, here where its chain of causes is
    whole (a process pool passes on only the outermost, "Read failed. See previous exception
    for details.")."""
    try:
        with contextlib.ExitStack() as stack:
            datasets = [stack.enter_context(rasterio.open(path)) for path in rasters]
            cache = cache_bytes(datasets, chip_size)
        with rasterio.Env(GDAL_CACHEMAX=cache), libtiff_quiet():
            yield
    except data_errors() as exc:
        raise GeoPix2PixError(f"cutting chips from {' and '.join(map(str, rasters))}: "
                              f"{describe(exc)}") from None
    finally:
        release_free_heap()


def run_job(job: Job) -> JobResult:
    """Process one batch of chips; returns their index records and partial statistics."""
    with job_frame((job.pair.source, job.pair.target), job.chips[0][0].size):
        return _run_job(job)


def _run_job(job: Job) -> JobResult:
    spec = job.pair
    out = Path(job.out_dir)
    rng_seed = [job.seed, spec.index, job.chips[0][0].row, job.chips[0][0].col]
    source_stats = BandStatistics(len(spec.source_bands), job.sample_rate, seed=rng_seed)
    target_stats = BandStatistics(len(spec.target_bands), job.sample_rate, seed=rng_seed + [1],
                                  count_classes=True)
    val_classes = ClassCounts(len(spec.target_bands))
    records, rejected, shifts, invalid = [], Counter(), [], []
    # GDAL compresses and writes with the GIL released: one writer thread overlaps a chip's
    # writing with the next chip's reading and statistics; a failed write (a full disk) stops
    # the job at the next chip
    with spec.reader() as reader, MaskReader(spec.masks, reader.grid, spec.correction) as masks, \
            ThreadPoolExecutor(1) as writer:
        source_writer = ChipWriter(reader.source, spec.source_bands, out / "source", reader.grid)
        target_writer = ChipWriter(reader.target_file, spec.target_bands, out / "target",
                                   reader.grid)
        pending = []
        for chip, split in job.chips:
            read = masks.apply(reader.read(chip.window), chip.window)
            valid_fraction = float(read.valid.mean())
            if 1.0 - valid_fraction > job.max_nodata:
                rejected[REJECT_NODATA] += 1
                invalid.append(chip)
                continue
            shift = job.shift_check.estimate(chip, read)  # never changes the chip's pixels
            shifts += [shift] if shift is not None else []
            if job.shift_check.rejects(shift):
                rejected[REJECT_SHIFT] += 1
                continue
            for future in pending:  # the previous chip's, written while this one was read
                future.result()  # re-raise a failed write here
            pending = [writer.submit(source_writer.write, chip, read.source, read.source_valid),
                       writer.submit(target_writer.write, chip, read.target, read.target_valid)]
            if split == "train":
                source_stats.add(read.source, read.valid)
                target_stats.add(read.target, read.valid)
            else:
                val_classes.add(read.target[:, read.valid])
            records.append(dict(id=chip.id, pair=spec.index, row=chip.row, col=chip.col,
                                split=split, valid_fraction=round(valid_fraction, 6),
                                **columns(shift)))
        for future in pending:
            future.result()
    return JobResult(records, rejected, source_stats, target_stats, val_classes, shifts,
                     invalid)
