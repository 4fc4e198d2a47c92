"""The metadata stored in a model file: everything prediction needs besides the weights.

Prediction reads the model file alone, so it must say which bands go in and come out, their
dtypes and nodata, how values were scaled (and so how to scale back), the band metadata that
gives the values their meaning (units, scales, offsets, colour interpretation and table, which
predict writes to its output), the chip size, and the CRS and pixel size of the training data
(to warn when a scene differs), plus the training options and the validation scores of these
weights. It is plain JSON.
"""

from __future__ import annotations

from typing import Any

from geopix2pix import __version__
from geopix2pix.chips.manifest import DatasetInfo, SideInfo, encode_nodata


def side_metadata(side: SideInfo) -> dict[str, Any]:
    """Bands, dtype, nodata (NaN as "nan"), descriptions, band metadata (units, scales, offsets,
    colorinterp, colormap) and scaling of one side, and the band count of the rasters they were
    chosen from (predict reads the same bands of a like scene)."""
    return {
        "bands": list(side.bands),
        "dtype": side.dtype,
        "nodata": encode_nodata(side.nodata),
        "descriptions": list(side.descriptions),
        **side.band_metadata.to_dict(),
        "scaling": side.scaling.to_dict(),
        "raster_bands": side.raster_bands,
    }


def model_metadata(info: DatasetInfo, options: dict[str, Any], epoch: int, step: int,
                   validation: dict[str, float] | None = None) -> dict[str, Any]:
    """The model-file metadata dict of the metadata contract (JSON-serialisable)."""
    return {
        "source": side_metadata(info.source),
        "target": side_metadata(info.target),
        "chip_size": int(info.chip_size),
        "crs": info.crs,
        "pixel_size": [float(v) for v in info.pixel_size],
        "training": {**options, "epoch": int(epoch), "step": int(step)},
        "validation": {k: _json_number(v) for k, v in (validation or {}).items()},
        "version": __version__,
    }


def _json_number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such scores become None."""
    if value is None or value != value or value in (float("inf"), float("-inf")):
        return None
    return float(value)
