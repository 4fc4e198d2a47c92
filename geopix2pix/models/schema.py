"""Checks of the values an untrusted file gives (a model file's metadata, a checkpoint), before
anything is built from them.

Each reader takes a value and the place it came from (``target.scaling.low[0]``) and returns it
when it has the kind, count and range it must have; otherwise it raises a `SchemaError` naming
that place, so the caller's one line says what is wrong. The bounds are far above anything
training writes and far below what would exhaust a machine (a U-Net of ``ngf`` 4096 needs 64 GB
for one layer). An optional field is read with `optional`: absent or null is None (a file
written before the field existed), anything else goes through its reader.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from geopix2pix.settings.export import CHIP_SIZES

T = TypeVar("T")

MAX_BANDS = 1024  # bands of a side, channels of a generator (hyperspectral fits)
MAX_BAND_INDEX = 65535  # a 1-based band number of a raster
MIN_CHIP_SIZE, MAX_CHIP_SIZE = CHIP_SIZES  # what export cuts: a file's spec is no other (a
# crafted 4096 had a 96 x 96 scene allocate 23 GB; a crafted 1, a traceback in the padding)
MAX_NGF = 1024  # the paper's is 64
# what rasterio writes into a GeoTIFF that prediction can fill (no complex values)
RASTER_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64",
                 "float32", "float64")
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}  # jsonvalues' spelling


class SchemaError(ValueError):
    """A value that is missing (``missing``), of the wrong kind or out of range; the message
    starts with the value's place."""

    def __init__(self, where: str, problem: str, missing: bool = False) -> None:
        super().__init__(f"{where} {problem}")
        self.missing = missing


def shown(value: Any, limit: int = 60) -> str:
    """`value` as one short line (a hostile file may hold megabytes or newlines)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def required(data: Mapping[str, Any], key: str, where: str) -> Any:
    """`data[key]`; SchemaError (missing) when it is absent or null."""
    value = data.get(key)
    if value is None:
        raise SchemaError(f"{where}.{key}" if where else key, "is missing", missing=True)
    return value


def optional(data: Mapping[str, Any], key: str, read: Callable[[Any, str], T],
             where: str = "") -> T | None:
    """`read(data[key], place)`, or None when the key is absent or null."""
    value = data.get(key)
    return None if value is None else read(value, f"{where}.{key}" if where else key)


def mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SchemaError(where, f"is {shown(value)}, not a key-value object")
    return value


def sequence(value: Any, where: str, high: int = MAX_BANDS) -> list[Any]:
    """A list (or tuple) of at most `high` items."""
    if not isinstance(value, (list, tuple)):
        raise SchemaError(where, f"is {shown(value)}, not a list")
    if len(value) > high:
        raise SchemaError(where, f"has {len(value)} items (at most {high})")
    return list(value)


def integer(value: Any, where: str, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) from `low` to `high`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SchemaError(where, f"is {shown(value)}, not an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise SchemaError(where, f"is {value}; expected {bounds}")
    return int(value)


MAX_FLOAT = float(np.finfo(np.float64).max)


def number(value: Any, where: str, finite: bool = True) -> float:
    """A number ("nan", "inf", "-inf" too where not `finite`, as jsonvalues writes them)."""
    if isinstance(value, str) and value in _NON_FINITE:
        value = _NON_FINITE[value]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(where, f"is {shown(value)}, not a number")
    if isinstance(value, int) and abs(value) > MAX_FLOAT:  # (math.isfinite would overflow)
        raise SchemaError(where, f"is {shown(value)}; expected a number a float can hold")
    if finite and not math.isfinite(value):
        raise SchemaError(where, f"is {value}; expected a finite number")
    return float(value)


def text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise SchemaError(where, f"is {shown(value)}, not a string")
    return value


def raster_dtype(value: Any, where: str) -> str:
    """One of `RASTER_DTYPES`."""
    if value not in RASTER_DTYPES:
        raise SchemaError(where, f"is {shown(value)}, not a raster data type geopix2pix writes "
                                 f"({', '.join(RASTER_DTYPES)})")
    return str(value)


def fits_dtype(value: float, dtype: str, where: str) -> None:
    """Refuse a value (a nodata, a class code) that a raster of `dtype` cannot hold exactly."""
    kind = np.dtype(dtype)
    if np.issubdtype(kind, np.integer):
        info = np.iinfo(kind)
        if not (math.isfinite(value) and value == int(value) and info.min <= value <= info.max):
            raise SchemaError(where, f"{value:g} cannot be stored in {dtype} "
                                     f"(integers from {info.min} to {info.max})")
    elif math.isfinite(value) and abs(value) > np.finfo(kind).max:
        raise SchemaError(where, f"{value:g} cannot be stored in {dtype}")


def ascending(values: Sequence[float], where: str) -> None:
    """Refuse values that are not strictly ascending (repeated or out of order)."""
    for index, (a, b) in enumerate(zip(values, values[1:])):
        if not a < b:
            raise SchemaError(f"{where}[{index + 1}]", f"{b:g} does not follow {a:g} in "
                                                       "ascending order")
