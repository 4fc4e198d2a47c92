"""GDAL creation options given by the user (`--co NAME=VALUE`, as in rasterio's `rio` commands):
laid over the options geopix2pix chooses, and tried on a small raster in memory before any work,
since GDAL itself only warns about an option it does not know and then ignores it."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping

from geopix2pix.errors import GeoPix2PixError, causes

# keys of a rasterio profile that fix the grid and the values: not creation options
NOT_CREATION_OPTIONS = ("driver", "dtype", "count", "width", "height", "crs", "transform",
                        "nodata")
_GDAL_COMPLAINTS = ("CPLE_NotSupported", "CPLE_IllegalArg")
_LERC = ("LERC", "LERC_DEFLATE", "LERC_ZSTD")
# creation options that only some compressions use: GDAL accepts them with any other and silently
# ignores them (GTiff and COG driver documentation)
COMPRESSION_OPTIONS = {
    "GTiff": {"ZLEVEL": ("DEFLATE", "LERC_DEFLATE"), "ZSTD_LEVEL": ("ZSTD", "LERC_ZSTD"),
              "LZMA_PRESET": ("LZMA",), "JPEG_QUALITY": ("JPEG",), "WEBP_LEVEL": ("WEBP",),
              "MAX_Z_ERROR": _LERC, "PREDICTOR": ("LZW", "DEFLATE", "ZSTD")},
    "COG": {"LEVEL": ("DEFLATE", "ZSTD", "LZMA", "LERC_DEFLATE", "LERC_ZSTD"),
            "QUALITY": ("JPEG", "WEBP"), "MAX_Z_ERROR": _LERC,
            "PREDICTOR": ("LZW", "DEFLATE", "ZSTD")},
}
_NO_PREDICTOR = ("1", "NO", "NONE", "FALSE")
# creation options that move the output off the scene's grid or drop its georeferencing or band
# descriptions (name -> the one value that keeps them; None: any value does it)
REGRIDDING_OPTIONS = {
    "GTiff": {"PROFILE": "GDALGEOTIFF"},  # BASELINE: no CRS, no transform; GeoTIFF: no metadata
    "COG": {"TILING_SCHEME": "CUSTOM", "TARGET_SRS": None, "RES": None, "EXTENT": None,
            "ZOOM_LEVEL": None, "ZOOM_LEVEL_STRATEGY": None, "ALIGNED_LEVELS": None},
}


def with_creation_options(options: Mapping, user: Mapping[str, str]) -> dict:
    """`options` with the user's creation options replacing those of the same name in any case
    (keeping our key's spelling: rasterio reads lowercase ``tiled``/``blockxsize``/``blockysize``
    itself), the others added in upper case."""
    merged = dict(options)
    for name, value in user.items():
        same = [key for key in merged if key.upper() == name.upper()]
        merged[same[0] if same else name.upper()] = value
    return merged


class _Complaints(logging.Handler):
    """GDAL's warnings about creation options, as rasterio logs them."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith(_GDAL_COMPLAINTS):
            self.messages.append(message.split(" in ", 1)[-1])


def check_compression_options(user: Mapping[str, str], compress: str, driver: str,
                              flag: str = "--co") -> None:
    """Raise `GeoPix2PixError` for a creation option that the output's compression (the user's
    COMPRESS, else `compress`) does not use, such as ZLEVEL with ZSTD: GDAL would ignore it."""
    chosen = next((v for k, v in user.items() if k.upper() == "COMPRESS"), compress).upper()
    for name, value in user.items():
        used_by = COMPRESSION_OPTIONS.get(driver, {}).get(name.upper())
        if name.upper() == "PREDICTOR" and value.upper() in _NO_PREDICTOR:
            continue
        if used_by and chosen not in used_by:
            raise GeoPix2PixError(
                f"{flag} {name}={value}: only {'/'.join(used_by)} compression uses it and the "
                f"output is compressed with {chosen}, so GDAL would ignore it; change the "
                "compression (--compress) or drop the option")


def _lossy(compression: str, user: Mapping[str, str]) -> bool:
    """Whether GDAL's `compression` (with the user's options) loses information."""
    options = {k.upper(): str(v).upper() for k, v in user.items()}
    lossless_webp = options.get("WEBP_LOSSLESS") in ("TRUE", "YES", "ON", "1")
    try:  # LERC is lossless at MAX_Z_ERROR=0, its default
        lossy_lerc = float(options.get("MAX_Z_ERROR", "0")) != 0
    except ValueError:
        lossy_lerc = False  # GDAL refuses the value itself
    compression = compression.upper()
    return (compression == "JPEG" or (compression == "WEBP" and not lossless_webp)
            or (compression in _LERC and lossy_lerc))


# GTiff/COG options that store other values than those written (a float32 -9999 nodata came
# back as -9992 with NBITS=16 while the file still said -9999)
VALUE_CHANGING = {"NBITS": "storing fewer bits per value (16-bit floats, packed integers)",
                  "DISCARD_LSB": "discarding low bits of each value"}


def check_creation_options(user: Mapping[str, str], driver: str,
                           probe: Callable[[], None], flag: str = "--co") -> None:
    """Raise `GeoPix2PixError` when the user's creation options are not creation options, or
    when `probe()` (a small write through `driver` with them laid over ours) fails or makes GDAL
    warn that it refuses or ignores one of them."""
    for name, value in user.items():
        if name.lower() in NOT_CREATION_OPTIONS:
            raise GeoPix2PixError(f"{flag} {name}: not a creation option (the output keeps the "
                                  "scene's grid and the model's dtype and nodata)")
        keeps = REGRIDDING_OPTIONS.get(driver, {})
        if name.upper() in keeps and str(value).upper() != keeps[name.upper()]:
            raise GeoPix2PixError(f"{flag} {name}={value}: it would move the output off the "
                                  "scene's grid or drop its georeferencing (the output keeps "
                                  "the scene's CRS, transform, size and band descriptions); "
                                  "drop the option, and reproject the output afterwards if "
                                  "needed (gdalwarp)")
        if name.upper() in VALUE_CHANGING:
            raise GeoPix2PixError(f"{flag} {name}={value}: {VALUE_CHANGING[name.upper()]} "
                                  "changes the values written, the nodata value's among them; "
                                  "drop it (the output keeps the model's dtype and nodata)")
        if name.upper() == "COMPRESS" and _lossy(str(value), user):
            raise GeoPix2PixError(f"{flag} {name}={value}: a lossy compression changes the "
                                  "values, and pixels at nodata would no longer be nodata; use "
                                  "a lossless one (DEFLATE, ZSTD, LZW, LERC with MAX_Z_ERROR=0, "
                                  "or WEBP with WEBP_LOSSLESS=TRUE)")
    if not user:
        return
    logger = logging.getLogger("rasterio._env")
    complaints = _Complaints()
    logger.addHandler(complaints)
    level, propagate = logger.level, logger.propagate
    # the probe's warnings become our one-line error, not lines in the application's log too
    logger.setLevel(min(level or logging.WARNING, logging.WARNING))
    logger.propagate = False
    try:
        probe()
    except Exception as exc:  # anything GDAL raises here comes from the user's options
        complaints.messages.append(str(list(causes(exc))[-1]))  # GDAL's own reason
    finally:
        logger.removeHandler(complaints)
        logger.setLevel(level)
        logger.propagate = propagate
    if complaints.messages:
        shown = " ".join(f"{k}={v}" for k, v in user.items())
        reason = re.sub(r"\S*\.tif: ", "", complaints.messages[0]).rstrip(".")
        raise GeoPix2PixError(f"{flag} {shown}: GDAL's {driver} driver would refuse or "
                              f"ignore it (GDAL says: {reason}); see the driver's "
                              "documentation for its creation options")
