"""What opening a paired export's rasters found worth a warning before any chip is cut: a
raster that is both sides of a pair, a source not north-up, sources of very different ground
pixel sizes, and each pair's notes (its nodata, a target that looks like a class map)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from geopix2pix.chips.domains import PIXEL_SIZE_RATIO, ground_size
from geopix2pix.raster.grid import not_north_up_warning
from geopix2pix.raster.io import full_path

if TYPE_CHECKING:
    from geopix2pix.chips.export import _Pair


def opening_warnings(pairs: Sequence[_Pair]) -> list[str]:
    """Every warning below, in this order."""
    return (copied_band_warnings(pairs) + turned_warnings(pairs)
            + mixed_resolution_warnings(pairs) + nodata_notes(pairs))


def copied_band_warnings(pairs: Sequence[_Pair]) -> list[str]:
    """A warning per pair whose one raster is both sides with a band on both: the model learns
    to copy it (a mistake, or a check of the pipeline). Other bands of one raster, e.g. NIR
    from RGB, are a translation."""
    found = []
    for pair in pairs:
        spec = pair.spec
        shared = sorted(set(spec.source_bands) & set(spec.target_bands))
        if shared and full_path(spec.source) == full_path(spec.target):
            found.append(f"{spec.source} is both the source and the target, with band(s) "
                         f"{', '.join(map(str, shared))} on both sides: the model learns to copy "
                         "them; pass the target raster, or choose other bands with "
                         "--source-bands/--target-bands")
    return found


def nodata_notes(pairs: Sequence[_Pair]) -> list[str]:
    """The notes and warnings each pair's opening found, each once: of its nodata
    (`raster.nodata`), and of a target that looks like a class map resampled with an averaging
    method (`raster.codes`)."""
    return list(dict.fromkeys(note for pair in pairs for note in pair.notes))


def turned_warnings(pairs: Sequence[_Pair]) -> list[str]:
    """A warning per source raster not stored north-up (the chips are cut on its grid)."""
    found = [not_north_up_warning(pair.spec.source, pair.grid, "its chips are cut in that order")
             for pair in pairs]
    return list(dict.fromkeys(w for w in found if w))


def mixed_resolution_warnings(pairs: Sequence[_Pair]) -> list[str]:
    """A warning where the pairs' sources' ground pixels differ by more than
    `PIXEL_SIZE_RATIO`: their chips cover ground of very different extent, and dataset.json
    records the first pair's pixel size, which predict compares a scene's with."""
    sizes = [sum(ground_size(pair.grid)) / 2 for pair in pairs]
    if len(sizes) < 2 or max(sizes) <= PIXEL_SIZE_RATIO * min(sizes):
        return []
    fine, coarse = pairs[sizes.index(min(sizes))], pairs[sizes.index(max(sizes))]
    return [f"the pairs' sources have ground pixels from {min(sizes):.3g} m ({fine.spec.source}) "
            f"to {max(sizes):.3g} m ({coarse.spec.source}), {max(sizes) / min(sizes):.1f}x "
            "apart: their chips cover ground of very different extent; resample the sources to "
            "one pixel size first (e.g. gdalwarp -tr), or export them apart"]
