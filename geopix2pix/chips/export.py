"""`export_chips`: paired georeferenced rasters -> aligned training chips.

Pipeline: check the options (`ExportOptions`) -> open and check every pair -> lay chips over each
pair's overlap -> keep those in the AOI -> split train/val by spatial blocks -> read, check and
write chips in worker processes -> write the chips.gpkg index -> write dataset.json last (its
presence marks a complete folder). All is written in a staging folder beside the output folder
and swapped in once complete, so an earlier export there (--overwrite) stays complete and usable
until then, and a failed or stopped export leaves nothing (`chips.pipeline.staged_output`).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from tqdm.auto import tqdm

from geopix2pix.chips import shift_correction
from geopix2pix.chips.coregistration import SceneShift, Shift
from geopix2pix.chips.layout import ChipWindow, chip_windows, val_warnings
from geopix2pix.chips.manifest import INDEX, DatasetInfo, SideInfo, stop_reporter
from geopix2pix.chips.masks import attach_masks, mask_inputs, pair_masks, recorded_masks
from geopix2pix.chips.pair_warnings import opening_warnings
from geopix2pix.chips.pairs import checked_pairs, read_pairs_csv
from geopix2pix.chips.pipeline import (
    CHIPS_PER_JOB,
    REJECT_AOI,
    REJECT_STRADDLE,
    check_kept,
    clear_chips,
    counted,
    input_files,
    resplit_line,
    run_jobs,
    shared_side,
    side_info,
    split_again,
    split_chips,
    staged_output,
    version,
    warn_on_opening,
    warn_the_rest,
)
from geopix2pix.chips.shiftcheck import ShiftCheck, recorded, scene_shifts, shift_warnings
from geopix2pix.chips.stats import BandStatistics, ClassCounts
from geopix2pix.chips.summary import ExportSummary, export_warnings
from geopix2pix.chips.worker import REJECT_NODATA, Job, PairSpec, run_job
from geopix2pix.errors import GeoPix2PixError, refuse_spawned_reimport
from geopix2pix.jsonvalues import encode_number
from geopix2pix.raster.bands import check_one_dtype, select_bands
from geopix2pix.raster.codes import averaged_codes_lines, class_map_look
from geopix2pix.raster.grid import Grid, overlap_window
from geopix2pix.raster.ground import ground_list
from geopix2pix.raster.io import check_on_the_earth, full_path, open_raster, raster_path
from geopix2pix.raster.nodata import Override, fill_value_lines
from geopix2pix.raster.write import make_folder
from geopix2pix.runtime.stopping import attaches_stop_report
from geopix2pix.settings.checking import api_function, checked_keywords
from geopix2pix.settings.export import ExportKeywords, ExportOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

ONTO_SOURCE = "its source's grid"  # where a pair's target is resampled onto


@dataclass
class _Pair:
    spec: PairSpec
    grid: Grid
    overlap: tuple[int, int]
    chips: list[ChipWindow]
    resampled: bool = False  # the target is warped onto the source grid, not copied
    nodata: tuple = (None, None)  # the source's and target's, as read (given, or the file's)
    notes: tuple[str, ...] = ()  # of their nodata (`raster.nodata.fill_value_lines`)
    look: str | None = None  # how the target shows it is a class map (`codes.class_map_look`)


def _check_distinct(pair_paths: Sequence[tuple[Path, Path]]) -> None:
    """Refuse a pair listed twice: its chips would be exported twice, and the split could put
    one copy in train and the other in val (leakage). One source against several targets (a
    mosaic and its tiles) is fine."""
    first: dict[tuple[str, str], int] = {}
    for row, (source, target) in enumerate(pair_paths, start=1):
        earlier = first.setdefault((full_path(source), full_path(target)), row)
        if earlier != row:
            raise GeoPix2PixError(f"pairs {earlier} and {row} are the same ({source}, {target}); "
                                  "list each pair once (its chips would land in train and val)")


def _open_pair(index: int, source: Path, target: Path,
               options: ExportOptions) -> tuple[_Pair, SideInfo, SideInfo]:
    """Open one pair, check its bands and overlap, and lay its chips over the overlap."""
    chip_size = options.chip_size
    given = (Override.of(options.source_nodata, "--source-nodata"),
             Override.of(options.target_nodata, "--target-nodata"))
    with open_raster(source, nodata=given[0]) as src, open_raster(target, nodata=given[1]) as tgt:
        check_on_the_earth(src, source)
        check_on_the_earth(tgt, target)
        s_bands = check_one_dtype(src, select_bands(src, options.source_bands, "--source-bands"),
                                  "--source-bands")
        t_bands = check_one_dtype(tgt, select_bands(tgt, options.target_bands, "--target-bands"),
                                  "--target-bands")
        notes = (fill_value_lines(src, source, s_bands, "--source-nodata")
                 + fill_value_lines(tgt, target, t_bands, "--target-nodata"))
        nodata = (src.nodata, tgt.nodata)
        grid = Grid.of(src)
        window = overlap_window(grid, Grid.of(tgt), str(source), str(target))
        if chip_size > min(window.width, window.height):
            raise GeoPix2PixError(
                f"--chip-size {chip_size} is larger than the overlap of {source} and {target} "
                f"({window.width} x {window.height} source pixels); use a smaller chip size")
        sides = (side_info(src, s_bands), side_info(tgt, t_bands))
        resampled = Grid.of(tgt).integer_offset(grid) is None  # as the PairReader decides
        look = class_map_look(tgt, t_bands) if options.target_resampling != "nearest" else None
        if resampled:
            notes += averaged_codes_lines(look, target, ONTO_SOURCE, options.target_resampling)
    spec = PairSpec(index, str(source), str(target), tuple(s_bands), tuple(t_bands),
                    options.target_resampling, nodata=given)
    chips = chip_windows(index, window, chip_size, options.stride)
    return _Pair(spec, grid, (int(window.row_off), int(window.col_off)), chips,
                 resampled, nodata, tuple(notes), look), *sides


def _jobs(pairs: Sequence[_Pair], splits: dict[ChipWindow, str], out_dir: Path,
          options: ExportOptions) -> list[Job]:
    train_pixels = sum(c.size * c.size for c, s in splits.items() if s == "train")
    rate = BandStatistics.rate_for(options.sample_size, train_pixels)
    jobs = []
    for pair in pairs:
        kept = [(c, splits[c]) for c in pair.chips if c in splits]
        check = ShiftCheck.for_pair(len(kept), options.shift_check, options.max_shift)
        for i in range(0, len(kept), CHIPS_PER_JOB):
            jobs.append(Job(pair.spec, kept[i:i + CHIPS_PER_JOB], str(out_dir),
                            options.max_nodata, options.seed, rate, check))
    return jobs


@api_function(settings=ExportOptions)
@attaches_stop_report(lambda call: stop_reporter(call["out_dir"]))  # none without out_dir
def export_chips(
    source: str | os.PathLike | None = None,
    target: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    pairs: str | os.PathLike | Sequence[tuple[str | os.PathLike, str | os.PathLike]] | None = None,
    sources: Sequence[str | os.PathLike] | None = None,
    targets: Sequence[str | os.PathLike] | None = None,
    rasters: str | os.PathLike | Sequence[tuple[str | os.PathLike, str]] | None = None,
    **options: Unpack[ExportKeywords],
) -> ExportSummary:
    """Export aligned training chips from one pair (`source`, `target`) or many (`pairs`: a CSV
    path or a list of path pairs) into `out_dir`, or with `unpaired` from two unpaired
    collections (`sources`, `targets` or `rasters`: `chips.unpaired`). `options` are
    `ExportOptions`'s fields (those of `geopix2pix export-chips`)."""
    pairs = checked_pairs(source, target, pairs)
    given = checked_keywords(ExportOptions, options, "export_chips")  # numpy numbers -> Python's
    refuse_spawned_reimport("export_chips")
    if out_dir is None:
        raise GeoPix2PixError("no output folder given; pass -o CHIPS_DIR")
    options = ExportOptions(**given)
    if options.unpaired or sources or targets or rasters:  # two unpaired collections
        from geopix2pix.chips.unpaired import export_unpaired

        return export_unpaired(dict(source=source, target=target, pairs=pairs, out_dir=out_dir,
                                    sources=sources, targets=targets, rasters=rasters), options)
    pair_paths = _pair_paths(source, target, pairs)
    pair_list, sides = _open_pairs(pair_paths, options)
    early = warn_on_opening(opening_warnings(pair_list))
    attach_masks(pair_list, pair_masks(pairs, len(pair_list), options))
    skipped: Counter = Counter()
    if options.aoi is not None:
        _apply_aoi(pair_list, options, skipped)
    splits, chosen = _split(pair_list, options, skipped)
    candidates = sum(len(p.chips) for p in pair_list)
    inputs = input_files([path for pair in pair_paths for path in pair], pairs, options.aoi)
    with staged_output(out_dir, options.overwrite, inputs + mask_inputs(pair_list)) as out:
        # measured once, on the first split's chips: a second split reads the corrected target
        copied = [pair for pair in pair_list if not pair.resampled]
        corrected = shift_correction.correct_shifts(
            pair_list, splits, options.correct_shift,
            lambda j, w: run_jobs(j, options.workers, w))
        written = _write_split(out.path, pair_list, splits, chosen, skipped)
        again = _split_again(pair_list, options, written, skipped)
        if again is not None:  # the chips found invalid took val's share far off: once more
            splits, chosen, skipped, resplit = again
            clear_chips(out.path)
            written = _write_split(out.path, pair_list, splits, chosen, skipped)
        options = chosen
        check_kept(written.records, candidates, skipped, options, options.split_block)
        records, stats, shifts = written[:3]
        _write_index(out.path, records, pair_list, options.chip_size)
        kept = Counter(r["split"] for r in records)
        scenes = scene_shifts(shifts, [p.spec.index for p in pair_list], options.shift_check)
        _dataset_info(options, pair_list, sides, stats, kept, skipped, scenes,
                      corrected).save(out.path)
    said = shift_correction.said(corrected, pair_list)
    summary = ExportSummary(out.final, dict(kept), counted(skipped),
                            val_warnings(kept, options.val_fraction, options.split_block,
                                         options.chip_size, given.get("split_block") is not None,
                                         skipped.get(REJECT_STRADDLE, 0))
                            + export_warnings(options)
                            + [line for p in copied if p.resampled for line in
                               averaged_codes_lines(p.look, p.spec.target, ONTO_SOURCE + " moved "
                                                    "by --correct-shift",
                                                    options.target_resampling)]
                            + shift_warnings(scenes, {p.spec.index: Path(p.spec.target).name
                                                      for p in pair_list})
                            + said[1] + early, scenes, said[0],
                            resplit if again is not None else "")
    warn_the_rest(summary.warnings, early)
    return summary


def _pair_paths(source, target, pairs) -> list[tuple[Path | str, Path | str]]:
    """The (source, target) paths to export: SOURCE and TARGET, the rows of a --pairs CSV, or
    a list of pairs; each pair listed once."""
    if pairs is None:
        if source is None or target is None:
            raise GeoPix2PixError("give SOURCE and TARGET, or --pairs pairs.csv")
        pair_paths = [(raster_path(source), raster_path(target))]
    elif isinstance(pairs, (str, os.PathLike)):
        pair_paths = read_pairs_csv(pairs)
    else:
        pair_paths = [(raster_path(s), raster_path(t)) for s, t in pairs]
    _check_distinct(pair_paths)
    return pair_paths


def _open_pairs(pair_paths: list[tuple[Path, Path]],
                options: ExportOptions) -> tuple[list[_Pair], tuple[SideInfo, SideInfo]]:
    """Open and check every pair and lay its chips; also the source and target descriptions
    dataset.json records, once every pair is checked to hold the same bands as the first."""
    opened = [_open_pair(i, s, t, options) for i, (s, t) in enumerate(pair_paths)]
    source = shared_side([s for _, s, _ in opened], "source", [s for s, _ in pair_paths],
                         options.source_scaling)
    target = shared_side([t for _, _, t in opened], "target", [t for _, t in pair_paths],
                         options.target_scaling)
    return [p for p, _, _ in opened], (source, target)


def _split(pair_list: list[_Pair], options: ExportOptions,
           skipped: Counter) -> tuple[dict[ChipWindow, str], ExportOptions]:
    """Each chip's split ("train" or "val") by spatial blocks shared by every pair, and the
    options with the --split-block used; a chip straddling both splits is dropped (counted in
    `skipped`)."""
    candidates = [c for p in pair_list for c in p.chips]
    splits, split_block = split_chips(candidates, _grids(pair_list), pair_list[0].overlap,
                                      options, skipped)
    return splits, options.with_split_block(split_block)


class _Written(NamedTuple):
    """What one pass of reading and writing the chips of a split gives."""

    records: list[dict]
    stats: tuple
    shifts: dict[int, list[Shift]]  # each pair's estimated shifts
    invalid: list[ChipWindow]  # the chips dropped for too many invalid pixels


def _write_split(out: Path, pair_list: list[_Pair], splits: dict[ChipWindow, str],
                 options: ExportOptions, skipped: Counter) -> _Written:
    """Read, check and write the chips of `splits` into out/source and out/target (each pair's
    target moved by its --correct-shift correction, if any)."""
    make_folder(out / "source")
    make_folder(out / "target")
    jobs = _jobs(pair_list, splits, out, options)
    return _Written(*_export(jobs, options.workers, len(splits), options.progress, skipped))


def _split_again(pair_list: list[_Pair], options: ExportOptions, written: _Written,
                 skipped: Counter) -> tuple[dict, ExportOptions, Counter, str] | None:
    """The split drawn again without the chips `written` found invalid (`pipeline.split_again`),
    with the options holding its --split-block, the counts of chips skipped by it and the
    summary's line saying so; None when the first split stands."""
    kept = Counter(r["split"] for r in written.records)
    again = split_again([c for p in pair_list for c in p.chips], written.invalid, kept,
                        _grids(pair_list), pair_list[0].overlap, options)
    if again is None:
        return None
    splits, split_block, straddling = again
    counts = Counter({REJECT_AOI: skipped[REJECT_AOI], REJECT_NODATA: len(written.invalid),
                      REJECT_STRADDLE: straddling})
    return (splits, options.with_split_block(split_block), counts,
            resplit_line(len(written.invalid), kept, options.val_fraction))


def _dataset_info(options: ExportOptions, pair_list: list[_Pair],
                  sides: tuple[SideInfo, SideInfo], stats: tuple[BandStatistics, ...],
                  kept: Counter, skipped: Counter, scenes: dict[int, SceneShift],
                  corrected: dict[int, SceneShift]) -> DatasetInfo:
    """What dataset.json records: the chips' grid and bands, the train statistics (set on
    `sides` here), every pair (its scene shift too), the counts and the options
    (`ExportOptions.recorded`)."""
    source, target = sides
    source.stats, target.stats = stats[0].summary(), stats[1].summary()
    target.val_classes = stats[2].tables()
    first = pair_list[0].grid
    return DatasetInfo(
        chip_size=options.chip_size, stride=options.stride, source=source, target=target,
        crs=first.crs.to_string(), pixel_size=list(first.pixel_size),
        ground_pixel_size=ground_list(first),
        pairs=[dict(zip(("source", "target"), _full_paths(p.spec)), crs=p.grid.crs.to_string(),
                    pixel_size=list(p.grid.pixel_size), target_resampled=p.resampled,
                    source_nodata=encode_number(p.nodata[0]),
                    target_nodata=encode_number(p.nodata[1]),
                    **recorded_masks(p.spec.masks),
                    shift=recorded(scenes.get(p.spec.index)),
                    **shift_correction.recorded_correction(p.spec, corrected))
               for p in pair_list],
        counts=dict(train=kept["train"], val=kept["val"],
                    skipped=counted(skipped)),
        options=options.recorded(source.bands, target.bands),
        version=version(),
    )


def _apply_aoi(pair_list: list[_Pair], options: ExportOptions, skipped: Counter) -> None:
    from geopix2pix.chips.footprints import aoi_filter, no_chip_refusal, read_aoi

    polygons = read_aoi(options.aoi, options.aoi_layer)
    for pair in pair_list:
        keep = aoi_filter(pair.chips, pair.grid, polygons, options.aoi_mode)
        skipped[REJECT_AOI] += int((~keep).sum())
        pair.chips = [c for c, k in zip(pair.chips, keep) if k]
    if not any(p.chips for p in pair_list):
        raise no_chip_refusal(options.aoi, polygons, [p.grid for p in pair_list],
                              options.chip_size, options.aoi_mode, "the pair(s)", "the rasters")


def _export(jobs: list[Job], workers: int, total: int, progress: bool,
            skipped: Counter) -> tuple[list[dict], tuple, dict[int, list[Shift]], list]:
    """The chips' records; the train chips' source and target statistics and the val
    chips' target class counts; each pair's estimated shifts; the chips dropped for too many
    invalid pixels."""
    records: list[dict] = []
    invalid: list[ChipWindow] = []
    shifts: dict[int, list[Shift]] = {}
    stats: tuple[BandStatistics, BandStatistics, ClassCounts] | None = None
    with tqdm(total=total, unit="chip", desc="export-chips", disable=not progress) as bar:
        for job, result in run_jobs(jobs, workers, run_job):
            records.extend(result.records)
            shifts.setdefault(job.pair.index, []).extend(result.shifts)
            skipped.update(result.rejected)
            if stats is None:
                stats = (BandStatistics(len(job.pair.source_bands)),
                         BandStatistics(len(job.pair.target_bands), count_classes=True),
                         ClassCounts(len(job.pair.target_bands)))
            stats[0].merge(result.source_stats)
            stats[1].merge(result.target_stats)
            stats[2].merge(result.val_classes)
            invalid.extend(result.invalid)
            bar.update(len(job.chips))
    records.sort(key=lambda r: (r["pair"], r["row"], r["col"]))
    return records, stats, shifts, invalid


def _write_index(out: Path, records: list[dict], pair_list: list[_Pair], chip_size: int) -> None:
    """Write chips.gpkg: every kept chip's footprint, split and pair (its full paths)."""
    from geopix2pix.chips.footprints import write_index

    chips = [ChipWindow(r["pair"], r["row"], r["col"], chip_size) for r in records]
    write_index(out / INDEX, records, chips, _grids(pair_list),
                {p.spec.index: dict(zip(("source", "target"), _full_paths(p.spec)))
                 for p in pair_list})


def _full_paths(spec: PairSpec) -> tuple[str, str]:
    """A pair's source and target as dataset.json and chips.gpkg record them: full paths, which
    hold wherever the chips are used from (not as typed, relative to a CSV or the folder the
    export ran in); a GDAL name (/vsizip/..., NETCDF:...) as it was given."""
    return full_path(spec.source), full_path(spec.target)


def _grids(pair_list: list[_Pair]) -> dict[int, Grid]:
    """Each pair's source grid, by pair index."""
    return {p.spec.index: p.grid for p in pair_list}

