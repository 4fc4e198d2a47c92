"""export-chips' co-registration check: which chips a worker estimates the target's
shift on (`chips.coregistration.estimate_shift`), the chips.gpkg columns it records, the chips
--max-shift drops, and each pair's scene shift for dataset.json, the summary and its warning.

The estimate costs several times a chip's reading and writing (docs/benchmarks.md), so it looks
at a chip's central `ESTIMATE_SIZE` pixels square only, and a pair of many chips has only a
spread-out sample of them estimated (at least `MIN_CHECKED`, about one in `SAMPLE_EVERY`
beyond); with --max-shift every chip is, since each one may be dropped. Chip pixels are never
changed by the check."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from geopix2pix.chips.coregistration import SceneShift, Shift, estimate_shift, scene_shift
from geopix2pix.chips.layout import ChipWindow
from geopix2pix.jsonvalues import jsonable

REJECT_SHIFT = "shifted beyond --max-shift"
WARN_SHIFT = 0.5  # px: a systematic shift above this is warned about
SAMPLE_EVERY = 8  # a large pair: about one chip in this many estimated
ESTIMATE_SIZE = 128  # larger chips are estimated on their central window of this size
MIN_CHECKED = 32  # ... but at least this many
COLUMNS = ("shift_x", "shift_y", "shift_confidence")


@dataclass(frozen=True)
class ShiftCheck:
    """What a worker does for one pair: estimate the shift of the chips `chosen` (every
    `every`-th on a diagonal lattice of chip positions; 0: none) and drop those confidently
    shifted by more than `max_shift` px (None: none)."""

    every: int
    max_shift: float | None = None

    @classmethod
    def for_pair(cls, chips: int, shift_check: bool, max_shift: float | None) -> ShiftCheck:
        """The check of a pair of `chips` kept candidates."""
        if not shift_check:
            return cls(0)
        if max_shift is not None:
            return cls(1, max_shift)
        return cls(max(1, min(SAMPLE_EVERY, chips // MIN_CHECKED)))

    def chosen(self, chip: ChipWindow) -> bool:
        """Whether `chip` is estimated: every `every`-th along each row of chips, the lattice
        moved by 3 per row of chips so the sample covers every column."""
        if self.every <= 1:
            return self.every == 1
        return (chip.col // chip.size + 3 * (chip.row // chip.size)) % self.every == 0

    def estimate(self, chip: ChipWindow, read) -> Shift | None:
        """The shift of one chip pair read (`raster.pair.PairRead`), None where not estimated."""
        if not self.chosen(chip):
            return None
        centre = _centre(read.valid.shape)
        return estimate_shift(read.source[(slice(None), *centre)],
                              read.target[(slice(None), *centre)], read.valid[centre])

    def rejects(self, shift: Shift | None) -> bool:
        return (self.max_shift is not None and shift is not None and shift.confident
                and shift.size > self.max_shift)


def _centre(shape: tuple[int, int]) -> tuple[slice, slice]:
    """The central ESTIMATE_SIZE x ESTIMATE_SIZE window of a chip (all of a smaller one)."""
    return tuple(slice(max(0, (n - ESTIMATE_SIZE) // 2), max(0, (n - ESTIMATE_SIZE) // 2)
                       + min(n, ESTIMATE_SIZE)) for n in shape)


def columns(shift: Shift | None) -> dict[str, float]:
    """A chip's chips.gpkg shift columns: NaN where it was not estimated (or could not be)."""
    if shift is None:
        return dict.fromkeys(COLUMNS, math.nan)
    return dict(zip(COLUMNS, (round(shift.dx, 3), round(shift.dy, 3),
                              round(shift.confidence, 2))))


def recorded(scene: SceneShift | None) -> dict | None:
    """A pair's scene shift as dataset.json records it (None: the check was off)."""
    if scene is None:
        return None
    return jsonable({k: round(v, 3) if isinstance(v, float) else v
                     for k, v in asdict(scene).items()})


def scene_shifts(shifts: dict[int, list[Shift]], pairs: list[int],
                 checked: bool) -> dict[int, SceneShift]:
    """Each pair's scene shift from its estimated chips (none where the check was off)."""
    return {pair: scene_shift(shifts.get(pair, [])) for pair in pairs} if checked else {}


def shift_warnings(scenes: dict[int, SceneShift], targets: dict[int, str]) -> list[str]:
    """A warning per pair whose systematic shift exceeds `WARN_SHIFT` px."""
    return [f"pair {pair}: the target {targets[pair]} is shifted by ({scene.dx:+.1f}, "
            f"{scene.dy:+.1f}) px against its source (more than {WARN_SHIFT} px over "
            f"{scene.confident} chips): check the co-registration of the two rasters, align "
            "the target by export-chips --correct-shift, or drop the misaligned chips with "
            "--max-shift"
            for pair, scene in scenes.items() if scene.measured and scene.size > WARN_SHIFT]
