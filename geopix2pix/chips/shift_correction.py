"""export-chips --correct-shift (issue 20): a first pass measures each pair's systematic shift
(`coregistration.scene_shift`) on a spread-out sample of its kept chips, as the shift check
would (`shiftcheck.ShiftCheck`), before any chip is cut; the export then warps each measured
pair's target onto its source grid moved by that shift (`raster.pair.PairReader`'s `shift`: a
translation of the warp's transform), so the chips come out aligned. A pair whose shift cannot
be measured is cut as it is, and said so.

The pass reads only each sampled chip's central `shiftcheck.ESTIMATE_SIZE` window, through the
pair's validity masks, in this process; it writes nothing, so the export's staging, overwrite
and stop guarantees hold as they are (it runs inside the export's staging, after the output
folder is checked). The shift check of the export itself then measures the residual shift of
the corrected chips (dataset.json's `shift`)."""

from __future__ import annotations

from dataclasses import replace

from rasterio.windows import Window

from geopix2pix.chips.coregistration import SceneShift, estimate_shift, scene_shift
from geopix2pix.chips.layout import ChipWindow
from geopix2pix.chips.masks import MaskReader
from geopix2pix.chips.shiftcheck import ESTIMATE_SIZE, ShiftCheck, recorded


def correct_shifts(pair_list, splits: dict[ChipWindow, str],
                   asked: bool = True) -> dict[int, SceneShift]:
    """Measure each pair's shift on its kept chips (`splits`) and set the measured ones'
    correction on their spec (the target is then resampled); each pair's first-pass shift
    ({} where not `asked`)."""
    measured = {}
    if not asked:
        return measured
    for pair in pair_list:
        scene = measure_pair(pair.spec, [c for c in pair.chips if c in splits])
        measured[pair.spec.index] = scene
        if scene.measured:
            pair.spec = replace(pair.spec, correction=(scene.dx, scene.dy))
            pair.resampled = pair.resampled or any(pair.spec.correction)  # (0, 0): copied
    return measured


def measure_pair(spec, chips: list[ChipWindow]) -> SceneShift:
    """The scene shift of one pair (`worker.PairSpec`, uncorrected) from a sample of `chips`."""
    check = ShiftCheck.for_pair(len(chips), True, None)
    shifts = []
    with spec.reader() as reader, MaskReader(spec.masks, reader.grid) as masks:
        for chip in filter(check.chosen, chips):
            window = centre_window(chip)
            read = masks.apply(reader.read(window), window)
            shifts.append(estimate_shift(read.source, read.target, read.valid))
    return scene_shift(shifts)


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
