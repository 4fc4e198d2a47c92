"""What the paired export (`chips.export`) and the unpaired one (`chips.unpaired`) share: the
files an export owns and its staged output folder, the worker pool that reads and writes the
chips, the train/val split of a set of chips, the checks of the chips kept, each side's
description (`SideInfo`) with the version dataset.json records, and when the warnings are said."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from multiprocessing import get_context
from pathlib import Path

from geopix2pix.chips.layout import (
    ChipWindow,
    choose_split,
    no_train_error,
    share_is_off,
    split_extents,
)
from geopix2pix.chips.manifest import INDEX, MANIFEST, SideInfo
from geopix2pix.chips.worker import REJECT_NODATA
from geopix2pix.errors import GeoPix2PixError, warn_user
from geopix2pix.raster.band_metadata import BandMetadata, meaning_differences, reordered
from geopix2pix.raster.grid import Grid
from geopix2pix.raster.ground import ground_pixel_size
from geopix2pix.raster.io import chip_nodata, is_gdal_name
from geopix2pix.runtime.folders import OutputDir, Owned, open_output_dir
from geopix2pix.runtime.stopping import end_with_parent
from geopix2pix.settings.export import ExportOptions

CHIPS_PER_JOB = 32
REJECT_AOI = "outside the AOI"
REJECT_STRADDLE = "straddling the train/val split"
CHIP_FILES = Owned(("*.tif",))
OUTPUTS = Owned((MANIFEST, INDEX), {"source": CHIP_FILES, "target": CHIP_FILES})  # all it writes


def input_files(rasters: Iterable[str | os.PathLike], *extras) -> list[Path]:
    """Every file an export reads: its rasters (not GDAL names) and the `extras` given as paths
    (a --pairs or --rasters CSV, the AOI); an output folder holding one is refused."""
    inputs = [path for path in rasters if not is_gdal_name(path)]
    inputs += [Path(extra) for extra in extras if isinstance(extra, (str, os.PathLike))]
    return inputs


@contextmanager
def staged_output(out_dir: str | os.PathLike, overwrite: bool,
                  inputs: Sequence[str | os.PathLike]) -> Iterator[OutputDir]:
    """The export's output folder, built beside an earlier export (`runtime.staging`) and
    swapped in once the body is done; on any failure or stop the earlier export (if any) is as
    it was and nothing of this one is left."""
    out = open_output_dir(out_dir, overwrite, MANIFEST, owned=OUTPUTS, inputs=inputs,
                          command="export-chips")
    try:
        yield out
        out.commit()
    except BaseException as exc:
        out.abandon(exc)
        raise


def run_jobs(jobs: list, workers: int, work: Callable) -> Iterator[tuple]:
    """Run jobs inline (one worker) or in spawned processes, yielding (job, result) pairs as
    they finish."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            yield job, work(job)
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                             initializer=end_with_parent, initargs=(os.getpid(),)) as pool:
        futures = {pool.submit(work, job): job for job in jobs}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        except BrokenProcessPool:
            pool.shutdown(cancel_futures=True)
            raise GeoPix2PixError(
                "an export worker process ended unexpectedly (killed, or out of memory: try "
                "fewer --workers; from a Python script, call export_chips under `if __name__ == "
                "\"__main__\":`, since each worker imports the script)") from None
        except BaseException:
            pool.shutdown(cancel_futures=True)
            raise


def split_chips(candidates: list[ChipWindow], grids: dict[int, Grid], origin: tuple[int, int],
                options: ExportOptions, skipped: Counter,
                domain: str | None = None) -> tuple[dict[ChipWindow, str], int]:
    """Each chip's split ("train" or "val") by spatial blocks (`layout.choose_split`) and the
    --split-block used; a chip straddling both splits is dropped (counted in `skipped`). No
    chip left in train is refused before anything is written (the error names the `domain`).
    The blocks are in the pixels of the first grid, or for a `domain` (unpaired) of its
    coarsest (`coarsest`): in a finer one's, a coarse raster's chips would straddle many."""
    frame = coarsest(grids) if domain is not None else None
    extents = split_extents(candidates, grids, origin, frame)
    split_of, split_block = choose_split(extents, options.split_block, options.chip_size,
                                         options.val_fraction, options.seed)
    splits = {c: s for c, s in zip(candidates, split_of) if s is not None}
    skipped[REJECT_STRADDLE] += len(candidates) - len(splits)
    if splits and "train" not in splits.values():
        raise _in_domain(domain, no_train_error(len(splits), skipped, options.val_fraction,
                                                split_block, options.chip_size))
    return splits, split_block


def coarsest(grids: Mapping[int, Grid]) -> int:
    """The key of the grid of the largest pixels on the ground (the first of equals): a
    domain's split frame, whatever order its rasters were listed in."""
    def size(key: int) -> float:
        grid = grids[key]
        return round(sum(ground_pixel_size(grid) or grid.pixel_size), 6)

    return min(grids, key=lambda key: (-size(key), key))


def split_again(candidates: list[ChipWindow], invalid: Iterable[ChipWindow], kept: Counter,
                grids: dict[int, Grid], origin: tuple[int, int], options: ExportOptions,
                domain: str | None = None) -> tuple[dict[ChipWindow, str], int, int] | None:
    """The split drawn again without the chips found `invalid` (too many invalid pixels, which
    only reading a chip tells), for an export whose first split, drawn over every candidate,
    `kept` val a share far from --val-fraction once they were dropped; with the --split-block
    given, or chosen again. Its splits, --split-block and number of chips straddling it; None
    when no chip was invalid, the share is near enough, or the new split would come no nearer
    (counting its chips not read yet as valid)."""
    invalid = set(invalid)
    if not invalid or not share_is_off(kept, options.val_fraction):
        return None
    remaining = [c for c in candidates if c not in invalid]
    straddling: Counter = Counter()
    try:
        splits, split_block = split_chips(remaining, grids, origin, options, straddling, domain)
    except GeoPix2PixError:  # it would leave no train chip: the first split stands
        return None
    val_fraction = options.val_fraction
    share = sum(s == "val" for s in splits.values()) / max(len(splits), 1)
    if abs(share - val_fraction) >= abs(kept["val"] / sum(kept.values()) - val_fraction):
        return None
    return splits, split_block, straddling[REJECT_STRADDLE]


def resplit_line(invalid: int, kept: Counter, val_fraction: float) -> str:
    """The summary's line for an export split again (`split_again`)."""
    total = kept["train"] + kept["val"]
    return (f"split again without the {invalid} chips with too many invalid pixels: val had "
            f"{kept['val']} of the {total} chips kept ({kept['val'] / total:.0%}, "
            f"--val-fraction {val_fraction})")


def clear_chips(out: Path) -> None:
    """Remove the chips a first pass wrote into the staged folder `out` (source/, target/)."""
    for side in ("source", "target"):
        if (out / side).exists():
            shutil.rmtree(out / side)


def check_kept(records: list[dict], candidates: int, skipped: Counter, options: ExportOptions,
               split_block: int, domain: str | None = None) -> None:
    """Refuse an export (or a `domain` of one) that kept no chip, or none in train (those were
    all skipped), saying why."""
    if not records:
        of = f" of the {domain} domain" if domain else ""
        raise GeoPix2PixError(
            f"no chip{of} kept from {candidates} candidate(s): "
            + "; ".join(f"{n} {reason}" for reason, n in skipped.items() if n)
            + " (raise --max-nodata, use a smaller --chip-size, or check the AOI and nodata)")
    if all(r["split"] == "val" for r in records):  # the train chips were all skipped
        raise _in_domain(domain, no_train_error(
            len(records), skipped, options.val_fraction, split_block, options.chip_size,
            invalid=bool(skipped[REJECT_NODATA])))


def _in_domain(domain: str | None, error: GeoPix2PixError) -> GeoPix2PixError:
    return GeoPix2PixError(f"the {domain} domain: {error}") if domain else error


def counted(counts: Mapping[str, int]) -> dict[str, int]:
    """The counts that are not zero, as dataset.json and the summary record them."""
    return {k: n for k, n in counts.items() if n}


def side_info(dataset, bands: list[int]) -> SideInfo:
    """What the chips of `bands` of an open raster hold (its scaling and statistics come
    later)."""
    return SideInfo(bands=bands, dtype=dataset.dtypes[bands[0] - 1],
                    nodata=chip_nodata(dataset, bands),
                    descriptions=[dataset.descriptions[b - 1] for b in bands], scaling_mode="",
                    raster_bands=dataset.count,
                    band_metadata=BandMetadata.of(dataset, bands))


def shared_side(sides: list[SideInfo], name: str, paths: list[Path],
                scaling_mode: str, group: str = "pairs") -> SideInfo:
    """The first raster's `name` side, checked against every raster's (the same bands, dtype
    and meaning), with its scaling mode and no raster band count where the rasters have several
    (none to match at predict)."""
    _check_consistent(sides, name, paths, group)
    first = sides[0]
    if len({side.raster_bands for side in sides}) > 1:
        first.raster_bands = None
    first.scaling_mode = scaling_mode
    return first


def _check_consistent(sides: list[SideInfo], name: str, paths: list[Path], group: str) -> None:
    first = sides[0]
    for side, path in zip(sides[1:], paths[1:]):
        if (len(side.bands), side.dtype) != (len(first.bands), first.dtype):
            raise GeoPix2PixError(
                f"{path}: {len(side.bands)} {side.dtype} band(s) where the first {name} has "
                f"{len(first.bands)} {first.dtype}; all {group} need the same bands and dtype")
        if reordered(side.descriptions, first.descriptions) is not None:
            raise GeoPix2PixError(
                f"{path}: its bands are described {', '.join(side.descriptions)} where the first "
                f"{name}'s are {', '.join(first.descriptions)}: the same bands in another order; "
                f"all {group} need their bands in one order (reorder them with gdal_translate "
                "-b)")
        differences = meaning_differences(side.band_metadata, first.band_metadata,
                                          f"the first {name}")
        if differences:  # the same numbers would mean different things
            raise GeoPix2PixError(
                f"{path}: {'; '.join(differences)}; all {group} need values in the same units "
                "(convert them, or set the metadata right with gdal_edit.py)")


def version() -> str:
    """The geopix2pix version dataset.json records."""
    from geopix2pix import __version__

    return __version__


def warn_on_opening(found: Sequence[str]) -> list[str]:
    """Warn now of what opening the rasters found (their nodata, orientation, a band copied to
    itself), before any chip is cut, so that a long export can be stopped and run again with
    the right option; the warnings said, for `warn_the_rest`."""
    said = list(dict.fromkeys(found))
    for warning in said:
        warn_user(warning)
    return said


def warn_the_rest(warnings: Sequence[str], said: Sequence[str]) -> None:
    """Warn of the export's warnings (all of them are in its summary) not said on opening,
    each once."""
    for warning in dict.fromkeys(warnings):
        if warning not in said:
            warn_user(warning)
