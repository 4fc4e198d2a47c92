"""What an export tells its caller: the chips kept per split, those skipped by reason, each
pair's shift of the target against the source (the co-registration check), and warnings
(one line each) about a result that will not train well."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geopix2pix.chips.coregistration import SceneShift
from geopix2pix.raster.bands import repeated_band_warning
from geopix2pix.settings.declare import flag
from geopix2pix.settings.export import ExportOptions


@dataclass
class ExportSummary:
    """What an export produced: chips kept per split, chips skipped by reason, and warnings
    (one line each) about a result that will not train well."""

    out_dir: Path
    kept: dict[str, int]
    skipped: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    shifts: dict[int, SceneShift] = field(default_factory=dict)  # by pair; {}: not checked
    corrections: list[str] = field(default_factory=list)  # --correct-shift's lines
    resplit: str = ""  # the line of an export split again (`pipeline.split_again`)

    def lines(self) -> list[str]:
        lines = [f"{self.out_dir}: {self.kept.get('train', 0)} train chips, "
                 f"{self.kept.get('val', 0)} val chips"]
        lines += [f"skipped {n} chips: {reason}" for reason, n in self.skipped.items() if n]
        lines += [self.resplit] if self.resplit else []
        lines += self.corrections
        lines += [f"pair {pair}: {scene.describe()}" for pair, scene in self.shifts.items()]
        return lines


def export_warnings(options: ExportOptions) -> list[str]:
    """Warnings of a finished export: bands listed twice. (A class map resampled with a method
    that averages its codes is warned of on opening, `raster.codes`.)"""
    found = [repeated_band_warning(flag(options, name), getattr(options, name))
             for name in ("source_bands", "target_bands")]
    return [warning for warning in found if warning]
