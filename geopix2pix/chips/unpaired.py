"""`export_chips(..., unpaired=True)`: chips from two unpaired collections of rasters, a source
domain and a target domain, for a model that learns without pairs (CycleGAN).

The domains need not overlap, share a CRS or hold as many rasters. Each raster's chips are cut
on its own grid (nothing is warped from one domain onto the other) or, with --pixel-size, on a
grid of that ground size over the same bounds (`domains.cut_grid`). Each domain gets its own
spatial block split (`layout.choose_split` on its rasters alone), its own validity check
(--max-nodata) and its own train-only statistics, hence its own scaling. The chips go to
source/ and target/ (ids p<raster>_r..._c..., each raster numbered among all), chips.gpkg gains a
`domain` column and each raster's `path`, and dataset.json says ``"paired": false`` with the
counts per domain. The output folder, worker pool, split and checks are the paired export's
(`chips.pipeline`): staged beside the final folder and swapped in when complete.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rasterio.windows import Window
from tqdm.auto import tqdm

from geopix2pix.chips import pipeline
from geopix2pix.chips.domain_worker import DomainJob, DomainSpec, run_domain_job
from geopix2pix.chips.domains import (
    DOMAINS,
    check_cut_size,
    cut_grid,
    domain_rasters,
    mixed_domain_warnings,
    pixel_size_warning,
)
from geopix2pix.chips.layout import ChipWindow, chip_windows, val_warnings
from geopix2pix.chips.manifest import INDEX, DatasetInfo, SideInfo
from geopix2pix.chips.stats import BandStatistics, ClassCounts
from geopix2pix.chips.summary import ExportSummary, export_warnings
from geopix2pix.chips.worker import REJECT_NODATA
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.jsonvalues import encode_number
from geopix2pix.raster.bands import check_one_dtype, select_bands
from geopix2pix.raster.codes import averaged_codes_lines, class_map_look
from geopix2pix.raster.grid import Grid, not_north_up_warning
from geopix2pix.raster.ground import ground_list
from geopix2pix.raster.io import check_on_the_earth, full_path, open_raster
from geopix2pix.raster.nodata import Override, fill_value_lines
from geopix2pix.raster.write import make_folder
from geopix2pix.settings.declare import flag
from geopix2pix.settings.export import PAIRED_ONLY, ExportOptions


@dataclass
class _Raster:
    spec: DomainSpec
    native: Grid  # its own grid (spec.grid is the one chips are cut on)
    chips: list[ChipWindow]
    nodata: float | None = None  # as read (given, or the file's own)
    notes: tuple[str, ...] = ()  # of its nodata (`raster.nodata.fill_value_lines`)


@dataclass
class UnpairedSummary(ExportSummary):
    """An unpaired export's summary: `kept` and `skipped` are both domains' together,
    `domains` each domain's kept and skipped chips."""

    domains: dict[str, dict] = field(default_factory=dict)

    def lines(self) -> list[str]:
        counts = "; ".join(f"{domain} {c['kept'].get('train', 0)} train, "
                           f"{c['kept'].get('val', 0)} val chips"
                           for domain, c in self.domains.items())
        return [f"{self.out_dir}: unpaired, {counts}"] + [
            f"skipped {n} {domain} chips: {reason}" for domain, c in self.domains.items()
            for reason, n in c["skipped"].items() if n] + ([self.resplit] if self.resplit else [])


def export_unpaired(given: Mapping, options: ExportOptions) -> UnpairedSummary:
    """The unpaired export of `export_chips`: `given` are its inputs (source, target, pairs,
    out_dir, sources, targets, rasters), `options` its options."""
    paired_inputs = any(given[name] is not None for name in ("source", "target", "pairs"))
    listed = domain_rasters(options.unpaired, paired_inputs, given["sources"],
                            given["targets"], given["rasters"])
    _refuse_paired_options(options)
    rasters, sides = _open_rasters(listed, options)
    early = pipeline.warn_on_opening(_opening_warnings(rasters, options))
    skipped = {domain: Counter() for domain in DOMAINS}
    if options.aoi is not None:
        _apply_aoi(rasters, options, skipped)
    splits, blocks = _split(rasters, options, skipped)
    inputs = pipeline.input_files([path for path, _ in listed], given["rasters"], options.aoi)
    with pipeline.staged_output(given["out_dir"], options.overwrite, inputs) as out:
        records, stats, invalid = _write_chips(out.path, rasters, splits, options, skipped)
        resplit = []
        for domain in DOMAINS:  # the chips found invalid took val's share far off: once more
            again = _split_again(rasters, domain, options, records, invalid[domain], skipped)
            if again is not None:
                splits, blocks[domain], skipped[domain], line = again
                resplit.append(f"the {domain} domain: {line}")
                records, stats = _rewrite(out.path, rasters, splits, options, skipped, domain,
                                          records, stats)
        _check_kept(rasters, records, options, skipped)
        _write_index(out.path, records, rasters, options.chip_size)
        kept = {d: Counter(r["split"] for r in records if r["domain"] == d) for d in DOMAINS}
        _dataset_info(options, rasters, sides, stats, kept, skipped, blocks).save(out.path)
    summary = _summary(out.final, options, rasters, sides, kept, skipped, blocks, early)
    summary.resplit = "; ".join(resplit)
    pipeline.warn_the_rest(summary.warnings, early)
    return summary


REFUSED = tuple(name for name in PAIRED_ONLY if name != "shift_check")  # that one is on by default


def _refuse_paired_options(options: ExportOptions) -> None:
    """The options of a pair's target against its source (its shift, a mask over both) mean
    nothing between unpaired domains: one line rather than silently ignoring them."""
    for name in REFUSED:
        value = getattr(options, name)
        if value not in (None, False):
            option = flag(options, name) + ("" if value is True else f" {value}")
            raise GeoPix2PixError(f"{option} is for pairs (a target against its source); drop "
                                  "it with --unpaired")


def _open_rasters(listed, options: ExportOptions) -> tuple[list[_Raster], dict[str, SideInfo]]:
    """Open every raster, check its bands, lay its chips on its cut grid; each domain's
    description (every raster of a domain holds the same bands as its first)."""
    opened = [_open_raster(index, path, domain, options)
              for index, (path, domain) in enumerate(listed)]
    sides = {}
    for domain in DOMAINS:
        members = [(raster, side) for raster, side in opened if raster.spec.domain == domain]
        sides[domain] = pipeline.shared_side(
            [side for _, side in members], domain,
            [Path(raster.spec.path) for raster, _ in members],
            getattr(options, f"{domain}_scaling"), f"{domain} rasters")
    return [raster for raster, _ in opened], sides


def _open_raster(index: int, path, domain: str,
                 options: ExportOptions) -> tuple[_Raster, SideInfo]:
    option = f"--{domain}-nodata"
    given = Override.of(getattr(options, f"{domain}_nodata"), option)
    with open_raster(path, nodata=given) as dataset:
        check_on_the_earth(dataset, path)
        chosen = f"--{domain}-bands"
        bands = check_one_dtype(dataset, select_bands(dataset, getattr(options, f"{domain}_bands"),
                                                      chosen), chosen)
        native = Grid.of(dataset)
        side = pipeline.side_info(dataset, bands)
        nodata, notes = dataset.nodata, tuple(fill_value_lines(dataset, path, bands, option))
        grid = cut_grid(native, options.pixel_size)
        resampling = options.target_resampling if domain == "target" else "bilinear"
        if not grid.is_same(native):
            notes += tuple(averaged_codes_lines(
                class_map_look(dataset, bands), path,
                f"its own grid at --pixel-size {options.pixel_size}", resampling, domain))
    if options.pixel_size is not None:
        check_cut_size(native, grid, path, domain, options.pixel_size)
    if options.chip_size > min(grid.width, grid.height):
        at = f" at --pixel-size {options.pixel_size}" if options.pixel_size else ""
        raise GeoPix2PixError(f"--chip-size {options.chip_size} is larger than the {domain} "
                              f"raster {path} ({grid.width} x {grid.height} pixels{at}); use a "
                              "smaller chip size")
    spec = DomainSpec(index, str(path), domain, tuple(bands), grid, not grid.is_same(native),
                      resampling, given)
    chips = chip_windows(index, Window(0, 0, grid.width, grid.height), options.chip_size,
                         options.stride)
    return _Raster(spec, native, chips, nodata, notes), side


def _apply_aoi(rasters: list[_Raster], options: ExportOptions,
               skipped: dict[str, Counter]) -> None:
    from geopix2pix.chips.footprints import aoi_filter, no_chip_refusal, read_aoi

    polygons = read_aoi(options.aoi, options.aoi_layer)
    for raster in rasters:
        keep = aoi_filter(raster.chips, raster.spec.grid, polygons, options.aoi_mode)
        skipped[raster.spec.domain][pipeline.REJECT_AOI] += int((~keep).sum())
        raster.chips = [c for c, k in zip(raster.chips, keep) if k]
    for domain in DOMAINS:
        members = [r for r in rasters if r.spec.domain == domain]
        if not any(r.chips for r in members):
            raise no_chip_refusal(options.aoi, polygons, [r.spec.grid for r in members],
                                  options.chip_size, options.aoi_mode, f"the {domain} rasters",
                                  "rasters of both domains")


def _split(rasters: list[_Raster], options: ExportOptions,
           skipped: dict[str, Counter]) -> tuple[dict[ChipWindow, str], dict[str, int]]:
    """Each chip's split, by spatial blocks of each domain's own (in its first raster's pixels),
    and the --split-block each domain used; a chip straddling both splits is dropped."""
    splits: dict[ChipWindow, str] = {}
    blocks = {}
    for domain in DOMAINS:
        members = [r for r in rasters if r.spec.domain == domain]
        kept, blocks[domain] = pipeline.split_chips(
            [c for r in members for c in r.chips], {r.spec.index: r.spec.grid for r in members},
            (0, 0), options, skipped[domain], domain)
        splits.update(kept)
    return splits, blocks


def _write_chips(out: Path, rasters: list[_Raster], splits: dict[ChipWindow, str],
                 options: ExportOptions, skipped: dict[str, Counter],
                 domains: tuple[str, ...] = DOMAINS) -> tuple[list[dict], dict, dict]:
    """Read, check and write the chips of `splits` of the `domains`' rasters into out/<domain>;
    their records, each domain's train statistics (and the target's val class counts) and the
    chips each dropped for too many invalid pixels."""
    for domain in domains:
        make_folder(out / domain)
    members = [r for r in rasters if r.spec.domain in domains]
    jobs = _jobs(members, splits, out, options)
    records: list[dict] = []
    stats = {d: (BandStatistics(len(_bands(rasters, d)), count_classes=d == "target"),
                 ClassCounts(len(_bands(rasters, d)))) for d in domains}
    invalid: dict[str, list[ChipWindow]] = {d: [] for d in domains}
    with tqdm(total=sum(len(job.chips) for job in jobs), unit="chip", desc="export-chips",
              disable=not options.progress) as bar:
        for job, result in pipeline.run_jobs(jobs, options.workers, run_domain_job):
            domain = job.raster.domain
            records.extend(result.records)
            skipped[domain].update(result.rejected)
            stats[domain][0].merge(result.stats)
            stats[domain][1].merge(result.val_classes)
            invalid[domain].extend(result.invalid)
            bar.update(len(job.chips))
    records.sort(key=lambda r: (r["raster"], r["row"], r["col"]))
    return records, stats, invalid


def _split_again(rasters: list[_Raster], domain: str, options: ExportOptions,
                 records: list[dict], invalid: list[ChipWindow], skipped: dict[str, Counter]):
    """The `domain`'s split drawn again without its chips found `invalid`
    (`pipeline.split_again`), its --split-block, its counts of chips skipped and the summary's
    line; None when its first split stands."""
    members = [r for r in rasters if r.spec.domain == domain]
    kept = Counter(r["split"] for r in records if r["domain"] == domain)
    again = pipeline.split_again([c for r in members for c in r.chips], invalid, kept,
                                 {r.spec.index: r.spec.grid for r in members}, (0, 0), options,
                                 domain)
    if again is None:
        return None
    splits, split_block, straddling = again
    counts = Counter({pipeline.REJECT_AOI: skipped[domain][pipeline.REJECT_AOI],
                      REJECT_NODATA: len(invalid), pipeline.REJECT_STRADDLE: straddling})
    return splits, split_block, counts, pipeline.resplit_line(len(invalid), kept,
                                                              options.val_fraction)


def _rewrite(out: Path, rasters: list[_Raster], splits: dict[ChipWindow, str],
             options: ExportOptions, skipped: dict[str, Counter], domain: str,
             records: list[dict], stats: dict) -> tuple[list[dict], dict]:
    """The `domain`'s chips written again on its new `splits`; all the records and
    statistics."""
    shutil.rmtree(out / domain)
    ours, our_stats, _ = _write_chips(out, rasters, splits, options, skipped, (domain,))
    records = sorted([r for r in records if r["domain"] != domain] + ours,
                     key=lambda r: (r["raster"], r["row"], r["col"]))
    return records, {**stats, **our_stats}


def _check_kept(rasters: list[_Raster], records: list[dict], options: ExportOptions,
                skipped: dict[str, Counter]) -> None:
    """A domain with no chip kept, or none in train, is an error saying why."""
    for domain in DOMAINS:
        pipeline.check_kept(
            [r for r in records if r["domain"] == domain],
            sum(len(r.chips) for r in rasters if r.spec.domain == domain), skipped[domain],
            options, options.split_block or options.chip_size, domain)


def _bands(rasters: list[_Raster], domain: str) -> tuple[int, ...]:
    return next(r.spec.bands for r in rasters if r.spec.domain == domain)


def _jobs(rasters: list[_Raster], splits: dict[ChipWindow, str], out: Path,
          options: ExportOptions) -> list[DomainJob]:
    domain_of = {r.spec.index: r.spec.domain for r in rasters}
    rates = {}
    for domain in DOMAINS:
        pixels = sum(c.size * c.size for c, s in splits.items()
                     if s == "train" and domain_of.get(c.pair) == domain)
        rates[domain] = BandStatistics.rate_for(options.sample_size, pixels)
    jobs = []
    for raster in rasters:
        kept = [(c, splits[c]) for c in raster.chips if c in splits]
        for i in range(0, len(kept), pipeline.CHIPS_PER_JOB):
            jobs.append(DomainJob(raster.spec, kept[i:i + pipeline.CHIPS_PER_JOB], str(out),
                                  options.max_nodata, options.seed, rates[raster.spec.domain]))
    return jobs


def _write_index(out: Path, records: list[dict], rasters: list[_Raster], chip_size: int) -> None:
    """chips.gpkg: every kept chip's footprint, domain, split and raster (its full path)."""
    from geopix2pix.chips.footprints import write_index

    chips = [ChipWindow(r["raster"], r["row"], r["col"], chip_size) for r in records]
    write_index(out / INDEX, records, chips, {r.spec.index: r.spec.grid for r in rasters},
                {r.spec.index: dict(path=full_path(r.spec.path)) for r in rasters})


def _dataset_info(options: ExportOptions, rasters: list[_Raster], sides: dict[str, SideInfo],
                  stats: dict, kept: dict[str, Counter], skipped: dict[str, Counter],
                  blocks: dict[str, int]) -> DatasetInfo:
    """dataset.json of an unpaired export: each domain's bands and train statistics (set on
    `sides` here), every raster with its domain, the counts in all and per domain."""
    for domain in DOMAINS:
        sides[domain].stats = stats[domain][0].summary()
    sides["target"].val_classes = stats["target"][1].tables()
    first = rasters[0].spec.grid
    per_domain = {d: dict(train=kept[d]["train"], val=kept[d]["val"], split_block=blocks[d],
                          skipped=pipeline.counted(skipped[d])) for d in DOMAINS}
    return DatasetInfo(
        chip_size=options.chip_size, stride=options.stride, source=sides["source"],
        target=sides["target"], crs=first.crs.to_string(), pixel_size=list(first.pixel_size),
        ground_pixel_size=ground_list(first),
        pairs=[], counts=dict(train=sum(k["train"] for k in kept.values()),
                              val=sum(k["val"] for k in kept.values()),
                              skipped=dict(sum(skipped.values(), Counter())), **per_domain),
        options=options.recorded(sides["source"].bands, sides["target"].bands),
        version=pipeline.version(), paired=False,
        rasters=[dict(path=full_path(r.spec.path), domain=r.spec.domain,
                      crs=r.spec.grid.crs.to_string(), pixel_size=list(r.spec.grid.pixel_size),
                      ground_pixel_size=ground_list(r.spec.grid),
                      resampled=r.spec.resampled, nodata=encode_number(r.nodata))
                 for r in rasters],
    )


def _opening_warnings(rasters: list[_Raster], options: ExportOptions) -> list[str]:
    """What opening the rasters found: the domains' pixel sizes far apart (or one domain's
    rasters'), a raster not north-up, the rasters' nodata notes."""
    warnings = pixel_size_warning({d: [r.native for r in rasters if r.spec.domain == d]
                                   for d in DOMAINS}, options.pixel_size)
    warnings += mixed_domain_warnings({d: [(str(r.spec.path), r.native) for r in rasters
                                           if r.spec.domain == d] for d in DOMAINS},
                                      options.pixel_size)
    warnings += [w for r in rasters if (w := not_north_up_warning(
        r.spec.path, r.spec.grid, "its chips are cut in that order"))]
    return warnings + list(dict.fromkeys(note for r in rasters for note in r.notes))


def _summary(out: Path, options: ExportOptions, rasters: list[_Raster],
             sides: dict[str, SideInfo], kept: dict[str, Counter], skipped: dict[str, Counter],
             blocks: dict[str, int], early: list[str]) -> UnpairedSummary:
    """The summary; ``early``: the warnings said on opening (`_opening_warnings`)."""
    warnings = [f"the {domain} domain: {warning}" for domain in DOMAINS
                for warning in val_warnings(kept[domain], options.val_fraction, blocks[domain],
                                            options.chip_size, options.split_block is not None,
                                            skipped[domain][pipeline.REJECT_STRADDLE])]
    warnings += export_warnings(options)
    warnings += early
    return UnpairedSummary(
        out, dict(sum(kept.values(), Counter())),
        pipeline.counted(sum(skipped.values(), Counter())), warnings,
        domains={d: dict(kept=dict(kept[d]), skipped=pipeline.counted(skipped[d]))
                 for d in DOMAINS})
