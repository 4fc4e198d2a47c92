"""What an export tells its caller: the chips kept per split, those skipped by reason, each
pair's shift of the target against the source (the co-registration check), and warnings
(one line each) about a result that will not train well."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from geopix2pix.chips.coregistration import SceneShift
from geopix2pix.chips.manifest import SideInfo
from geopix2pix.raster.bands import repeated_band_warning
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
        lines += [f"skipped {n} chips {reason}" for reason, n in self.skipped.items() if n]
        lines += [self.resplit] if self.resplit else []
        lines += self.corrections
        lines += [f"pair {pair}: {scene.describe()}" for pair, scene in self.shifts.items()]
        return lines


def export_warnings(options: ExportOptions, resampled: list[str], target: SideInfo) -> list[str]:
    """Warnings of a finished export: bands listed twice, and a class map (a paletted target)
    resampled (the targets named in `resampled` were: a pair's onto its source's grid, an
    unpaired one onto its own at --pixel-size) with a method that averages its codes."""
    found = [repeated_band_warning(f"--{name.replace('_', '-')}", getattr(options, name))
             for name in ("source_bands", "target_bands")]
    if target.band_metadata.colorinterp == ("palette",) and resampled and \
            options.target_resampling != "nearest":
        onto = (f"its own grid at --pixel-size {options.pixel_size}" if options.unpaired
                else "its source's grid")
        found.append(f"the target {resampled[0]} is a class map (a colour table) resampled onto "
                     f"{onto} with --target-resampling {options.target_resampling}, "
                     "which averages neighbouring codes into codes of other classes or none; "
                     "re-export with --target-resampling nearest")
    return [warning for warning in found if warning]
