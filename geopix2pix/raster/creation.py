"""GDAL creation options given by the user (`--co NAME=VALUE`, as in rasterio's `rio` commands):
laid over the options geopix2pix chooses, and checked against the output's driver before any
work, since GDAL itself only warns about an option it does not know and then ignores it."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin

from geopix2pix.errors import GeoPix2PixError

# keys of a rasterio profile that fix the grid and the values: not creation options
NOT_CREATION_OPTIONS = ("driver", "dtype", "count", "width", "height", "crs", "transform",
                        "nodata")
_GDAL_COMPLAINTS = ("CPLE_NotSupported", "CPLE_IllegalArg")


def with_creation_options(options: Mapping, user: Mapping[str, str | None]) -> dict:
    """`options` with the user's creation options replacing any of the same name (in any case);
    a value of None removes the option (GDAL's default applies)."""
    merged = dict(options)
    for name, value in user.items():
        for key in [k for k in merged if k.upper() == name.upper()]:
            del merged[key]
        if value is not None:
            merged[name.upper()] = value
    return merged


class _Complaints(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(_GDAL_COMPLAINTS):
            self.messages.append(message.split(" in ", 1)[-1])


def check_creation_options(driver: str, user: Mapping[str, str | None], dtype: str = "float32",
                           flag: str = "--co") -> None:
    """Raise `GeoPix2PixError` when GDAL would refuse or ignore one of the user's creation
    options for `driver` ("GTiff" or "COG"), found by writing a 32 x 32 raster in memory with
    them."""
    for name in user:
        if name.lower() in NOT_CREATION_OPTIONS:
            raise GeoPix2PixError(f"{flag} {name}: not a creation option (the output keeps the "
                                  "scene's grid and the model's dtype and nodata)")
    options = {k.upper(): v for k, v in user.items() if v is not None}
    if not options:
        return
    logger = logging.getLogger("rasterio._env")
    complaints = _Complaints()
    logger.addHandler(complaints)
    base = f"/vsimem/geopix2pix-co-{uuid.uuid4().hex}"
    profile = dict(driver="GTiff", width=32, height=32, count=1, dtype=dtype,
                   crs="EPSG:32633", transform=from_origin(0, 32, 1, 1))
    try:
        if driver == "COG":
            with rasterio.open(f"{base}.src.tif", "w", **profile) as dst:
                dst.write(np.zeros((1, 32, 32), dtype=dtype))
            rasterio.shutil.copy(f"{base}.src.tif", f"{base}.tif", driver="COG", **options)
        else:
            with rasterio.open(f"{base}.tif", "w", **{**profile, **options}) as dst:
                dst.write(np.zeros((1, 32, 32), dtype=dtype))
    except (rasterio.errors.RasterioError, ValueError, TypeError) as exc:
        complaints.messages.append(re.sub(r"^\S*geopix2pix-co-\w+(\.src)?\.tif: ", "", str(exc)))
    finally:
        logger.removeHandler(complaints)
        for path in (f"{base}.src.tif", f"{base}.tif"):
            if rasterio.shutil.exists(path):
                rasterio.shutil.delete(path)
    if complaints.messages:
        shown = " ".join(f"{k}={v}" for k, v in options.items())
        raise GeoPix2PixError(f"{flag} {shown}: {complaints.messages[0].rstrip('.')} (GDAL's "
                              f"{driver} driver); see its documentation for the options")
