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


def averaged_codes_lines(dataset, bands, path, onto: str, method: str) -> list[str]:
    """A warning where the target `dataset` (its `bands`, resampled onto `onto` with `method`)
    is one band without a colour table (one with is warned of by the export's summary) that
    looks like a class map, and `method` averages."""
    if method == "nearest" or len(bands) != 1 or \
            dataset.colorinterp[bands[0] - 1] == ColorInterp.palette:
        return []
    codes = class_codes(dataset, bands[0])
    return [_averaged(path, codes, onto, method)] if codes else []


def _averaged(path, codes: list[int], onto: str, method: str) -> str:
    shown = ", ".join(map(str, codes[:8])) + (", ..." if len(codes) > 8 else "")
    return (f"the target {path} looks like a class map ({len(codes)} integer values in a "
            f"sample: {shown}) resampled onto {onto} with --target-resampling {method}, which "
            "averages neighbouring codes into codes of other classes or none; if it is one, "
            "re-export with --target-resampling nearest")
