"""Validity masks of export-chips (issue 20): `--source-mask` / `--target-mask` rasters (or a
--pairs CSV's `source_mask` / `target_mask` columns) warped onto each pair's source grid with
nearest, whose masked pixels are invalid in both chips exactly like nodata.

A mask's first band is read. With `--mask-values` its pixels holding one of those codes are
masked (Sentinel-2 SCL: 3 cloud shadow, 8 and 9 cloud, 10 cirrus); without, it is a 0/1 mask and
1 is masked, as in cloud masks (s2cloudless, Fmask's cloud layers, MSK_CLDPRB thresholded): a
value other than 0 or 1 is an error. Pixels outside the mask's footprint or on its nodata are
masked too: nothing says they are clear."""

from __future__ import annotations

import math

from geopix2pix.errors import GeoPix2PixError


def parse_mask_values(text: str | None) -> list[float] | None:
    """'3,8,9,10' -> [3.0, 8.0, 9.0, 10.0] (None stays None); a slip is one line."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise GeoPix2PixError(f"--mask-values {text or chr(34) * 2}: give the mask codes that "
                              "mark a pixel invalid as numbers, e.g. 3,8,9,10")
    return values
