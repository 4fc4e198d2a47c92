"""export-chips --correct-shift: a first pass measures each pair's systematic shift
(`coregistration.scene_shift`) on a spread-out sample of its kept chips, as the shift check
would (`shiftcheck.ShiftCheck`), before any chip is cut; the export then warps each measured
pair's target onto its source grid moved by that shift (`raster.pair.PairReader`'s `shift`: a
translation of the warp's transform), so the chips come out aligned. A pair whose shift cannot
be measured is cut as it is, and said so.

The pass reads only each sampled chip's central `shiftcheck.ESTIMATE_SIZE` window, through the
pair's validity masks, in the export's worker processes (or this one). It writes nothing, so the
export's staging, overwrite and stop guarantees hold as they are (it runs inside the export's
staging, after the output folder is checked). The shift check of the export itself then
measures the residual shift of the corrected chips (dataset.json's `shift`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from rasterio.windows import Window

from geopix2pix.chips.coregistration import SceneShift, Shift, estimate_shift, scene_shift
from geopix2pix.chips.layout import ChipWindow
from geopix2pix.chips.masks import MaskReader
from geopix2pix.chips.shiftcheck import ESTIMATE_SIZE, ShiftCheck, recorded
from geopix2pix.errors import GeoPix2PixError, data_errors, describe

MEASURED_PER_JOB = 16  # chips a worker measures at a time


def correct_shifts(pair_list, splits: dict[ChipWindow, str], asked: bool,
                   run: Callable) -> dict[int, SceneShift]:
    """Measure each pair's shift on its kept chips (`splits`) and set the measured ones'
    correction on their spec (the target is then resampled unless it is (0, 0)); each pair's
    first-pass shift ({} where not `asked`). `run(jobs, work)` yields (job, work(job)) for each
    job, in worker processes or not (as the export's own jobs)."""
    if not asked:
        return {}
    jobs = []
    for pair in pair_list:
        kept = [c for c in pair.chips if c in splits]
        chosen = list(filter(ShiftCheck.for_pair(len(kept), True, None).chosen, kept))
        jobs += [(pair.spec, chosen[i:i + MEASURED_PER_JOB])
                 for i in range(0, len(chosen), MEASURED_PER_JOB)]
    shifts: dict[int, list[Shift]] = {pair.spec.index: [] for pair in pair_list}
    for (spec, _), found in run(jobs, measure_chips):
        shifts[spec.index] += found
    measured = {index: scene_shift(found) for index, found in shifts.items()}  # a median: in
    for pair in pair_list:  # any order the same
        scene = measured[pair.spec.index]
        if scene.measured:
            pair.spec = replace(pair.spec, correction=(scene.dx, scene.dy))
            pair.resampled = pair.resampled or any(pair.spec.correction)  # (0, 0): copied
    return measured


def measure_chips(job: tuple) -> list[Shift]:
    """The shifts of one pair's chips (a job: its `worker.PairSpec`, uncorrected, and chips),
    each on its central window; an error reading data is one line naming the pair."""
    spec, chips = job
    try:
        with spec.reader() as reader, MaskReader(spec.masks, reader.grid) as masks:
            reads = (masks.apply(reader.read(w), w) for w in map(centre_window, chips))
            return [estimate_shift(r.source, r.target, r.valid) for r in reads]
    except data_errors() as exc:
        raise GeoPix2PixError(f"measuring the shift of {spec.target} against {spec.source}: "
                              f"{describe(exc)}") from None


def centre_window(chip: ChipWindow) -> Window:
    """A chip's central window that the shift check estimates on (`shiftcheck._centre`)."""
    size = min(chip.size, ESTIMATE_SIZE)
    offset = (chip.size - size) // 2
    return Window(chip.col + offset, chip.row + offset, size, size)


def recorded_correction(spec, measured: dict[int, SceneShift]) -> dict:
    """What dataset.json records of a pair's correction: {} when --correct-shift was not asked;
    else `shift_correction` with the shift applied (dx, dy in source pixels; None where it could
    not be measured and the target was cut as it is) and the first pass's measurement."""
    if not measured:
        return {}
    applied = None if spec.correction is None else dict(zip(("dx", "dy"), (
        round(v, 3) for v in spec.correction)))
    return dict(shift_correction=dict(applied=applied,
                                      measured=recorded(measured[spec.index])))


def said(measured: dict[int, SceneShift], pair_list) -> tuple[list[str], list[str]]:
    """The summary's lines (a line per corrected pair) and warnings (one per pair it could not
    correct) of --correct-shift."""
    lines = [f"pair {p.spec.index}: --correct-shift moved the target by "
             f"({0.0 - p.spec.correction[0]:+.2f}, {0.0 - p.spec.correction[1]:+.2f}) px onto its "
             "source"
             for p in pair_list if p.spec.correction is not None]
    warnings = [f"pair {p.spec.index}: --correct-shift left the target {p.spec.target} as it "
                f"is: {measured[p.spec.index].describe()}"
                for p in pair_list if p.spec.index in measured and p.spec.correction is None]
    return lines, warnings
