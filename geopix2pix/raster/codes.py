"""Whether a raster band looks like a class map without saying so (no colour table): an integer
band whose cheap sample (`nodata.sample_pixels`, the one the fill-value check reads) holds few
distinct values, such as land-cover codes or a 0/255 mask. Averaging resampling (bilinear,
cubic) turns such codes into codes of other classes or of none."""

from __future__ import annotations

import numpy as np
from rasterio.enums import ColorInterp

from geopix2pix.raster.nodata import sample_pixels

FEW_CODES = 32  # at most this many distinct values in the sample: a class map's codes


def class_codes(dataset, band: int) -> list[int] | None:
    """The sorted distinct values (its nodata left out) of a sample of integer `band` where
    they are at most `FEW_CODES` and more than one, else None. A band that states a unit, a
    scale or an offset holds quantities, not codes (a flat area's integer DEM in metres)."""
    if not np.issubdtype(np.dtype(dataset.dtypes[band - 1]), np.integer) or \
            dataset.units[band - 1] or dataset.scales[band - 1] != 1 or \
            dataset.offsets[band - 1] != 0:
        return None
    codes = np.unique(sample_pixels(dataset, [band]))
    if dataset.nodata is not None:
        codes = codes[codes != dataset.nodata]
    return [int(c) for c in codes] if 1 < codes.size <= FEW_CODES else None


def class_map_look(dataset, bands) -> str | None:
    """How the target `dataset`'s `bands` show they are a class map: one band with a colour
    table ("is a class map (a colour table)"), or one integer band whose sample holds a few codes
    ("looks like a class map (3 integer values in a sample: 1, 2, 3)"); else None."""
    if len(bands) != 1:
        return None
    if dataset.colorinterp[bands[0] - 1] == ColorInterp.palette:
        return "is a class map (a colour table)"
    codes = class_codes(dataset, bands[0])
    if not codes:
        return None
    shown = ", ".join(map(str, codes[:8])) + (", ..." if len(codes) > 8 else "")
    return f"looks like a class map ({len(codes)} integer values in a sample: {shown})"


def averaged_codes_lines(look: str | None, path, onto: str, method: str,
                         side: str = "target") -> list[str]:
    """A warning where a raster that shows it is a class map (`look`, from `class_map_look`) is
    resampled onto `onto` with a `method` that averages (not nearest): a target (its
    --target-resampling), or an unpaired source at --pixel-size (always bilinear)."""
    if look is None or method == "nearest":
        return []
    hedge = "" if look.startswith("is ") else "if it is one, "
    if side == "target":
        how = f"with --target-resampling {method}"
        fix = "re-export with --target-resampling nearest"
    else:
        how = f"{method}ly (as --pixel-size resamples a source)"
        fix = ("resample it to that pixel size with nearest neighbour first (e.g. gdalwarp -r "
               "near), which export-chips then cuts as it is")
    return [f"the {side} {path} {look} resampled onto {onto} {how}, which averages neighbouring "
            f"codes into codes of other classes or none; {hedge}{fix}"]
