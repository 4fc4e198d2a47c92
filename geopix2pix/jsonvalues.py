"""Numbers JSON cannot hold, written the one way every geopix2pix JSON file writes them.

JSON has no NaN or infinity, and Python's `json` writes them as bare ``NaN``/``Infinity`` that
other readers refuse. dataset.json (a NaN nodata), the model file's metadata (its nodata and
validation scores) and evaluate's report (the PSNR of identical rasters is infinite) store them
as the strings "nan", "inf" and "-inf", as GDAL spells a NaN nodata.
"""

from __future__ import annotations

import math
from typing import Any

_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_number(value: Any) -> Any:
    """NaN and infinities as "nan", "inf", "-inf"; any other value unchanged."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def decode_number(value: Any) -> Any:
    """`encode_number` undone: "nan", "inf", "-inf" as floats; any other value unchanged."""
    return _NAMES.get(value, value) if isinstance(value, str) else value


def jsonable(value: Any) -> Any:
    """`value` with every NaN and infinity in its dicts and lists encoded."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return encode_number(value)
