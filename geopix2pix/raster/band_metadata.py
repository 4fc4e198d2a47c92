"""Band metadata that says what the values mean: units, scale and offset, colour interpretation
and colour table.

A raster's values are carried unchanged along the pipeline (chips keep the raster's values and
dtype; a prediction is mapped back to the target's dtype), so the metadata that gives them their
meaning travels with them: a DEM in "metre", Sentinel-2 L2A DNs with scale 1e-4 and an offset in
"reflectance", a land-cover map with its colour table. `BandMetadata.of` reads it from the chosen
bands of a dataset, `apply` writes it to a GeoTIFF being written (before or after its data), and
`to_dict` / `from_dict` store it as plain JSON in dataset.json and in the model file, as keys of a
side beside its ``descriptions``: ``units``, ``scales``, ``offsets``, ``colorinterp`` and
``colormap``. A key that is missing (files written before these keys existed) means none: no unit,
scale 1, offset 0, the driver's colour interpretation, no colour table.

The colour table is the one of band 1 of a one-band paletted raster (GDAL's colour tables belong
to a band; QGIS draws a paletted band with it). It is written only where GeoTIFF can hold one:
a single uint8 or uint16 band. Without it, a palette interpretation is written as gray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rasterio.enums import ColorInterp

KEYS = ("units", "scales", "offsets", "colorinterp", "colormap")
PALETTE_DTYPES = ("uint8", "uint16")  # what a GeoTIFF colour table can index

Rgba = tuple[int, int, int, int]


@dataclass(frozen=True)
class BandMetadata:
    """Per-band units, scales, offsets and colour interpretations (empty: none recorded), and the
    colour table of a one-band paletted raster (entry i is the colour of value i)."""

    units: tuple[str | None, ...] = ()
    scales: tuple[float, ...] = ()
    offsets: tuple[float, ...] = ()
    colorinterp: tuple[str, ...] = ()
    colormap: tuple[Rgba, ...] | None = None

    @classmethod
    def of(cls, dataset, bands: Sequence[int]) -> BandMetadata:
        """The metadata of `bands` (1-based) of an open dataset."""
        interp = tuple(dataset.colorinterp[b - 1].name for b in bands)
        return cls(units=tuple(dataset.units[b - 1] or None for b in bands),
                   scales=tuple(float(dataset.scales[b - 1]) for b in bands),
                   offsets=tuple(float(dataset.offsets[b - 1]) for b in bands),
                   colorinterp=interp,
                   colormap=_read_colormap(dataset, bands) if interp == ("palette",) else None)

    def fitted(self, count: int) -> BandMetadata:
        """The metadata of `count` bands: cut, or padded with none (no colour table unless one
        band)."""
        def fit(values: tuple, none: Any) -> tuple:
            return values[:count] + (none,) * max(0, count - len(values)) if values else ()

        return BandMetadata(fit(self.units, None), fit(self.scales, 1.0), fit(self.offsets, 0.0),
                            fit(self.colorinterp, "undefined"),
                            self.colormap if count == 1 else None)

    def apply(self, dst) -> None:
        """Write the metadata to `dst`, a dataset open for writing with as many bands."""
        for band, unit in enumerate(self.units, start=1):
            if unit:
                dst.set_band_unit(band, unit)
        if any(scale != 1 for scale in self.scales):
            dst.scales = self.scales
        if any(offset != 0 for offset in self.offsets):
            dst.offsets = self.offsets
        paletted = self.colormap is not None and dst.count == 1 \
            and dst.dtypes[0] in PALETTE_DTYPES
        interp = self._interpretation(paletted)
        if interp and interp != list(dst.colorinterp):
            dst.colorinterp = interp
        if paletted:  # last: GDAL refuses to read the interpretation back once it is written
            dst.write_colormap(1, dict(enumerate(self.colormap)))

    def _interpretation(self, paletted: bool) -> list[ColorInterp]:
        """The colour interpretation to write: palette only with the colour table, else gray."""
        palette = ColorInterp.palette if paletted else ColorInterp.gray
        interp = [ColorInterp[name] for name in self.colorinterp]
        return [palette if ci == ColorInterp.palette else ci for ci in interp]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: lists of strings, numbers and null."""
        return {"units": list(self.units), "scales": list(self.scales),
                "offsets": list(self.offsets), "colorinterp": list(self.colorinterp),
                "colormap": [list(rgba) for rgba in self.colormap] if self.colormap else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BandMetadata:
        """The metadata under `KEYS` of a side's dict (other keys are ignored; missing: none).
        Raises ValueError or TypeError for values of the wrong kind."""
        colormap = data.get("colormap")
        return cls(units=tuple(_unit(u) for u in data.get("units") or ()),
                   scales=tuple(_number(s) for s in data.get("scales") or ()),
                   offsets=tuple(_number(o) for o in data.get("offsets") or ()),
                   colorinterp=tuple(_interp_name(n) for n in data.get("colorinterp") or ()),
                   colormap=tuple(_rgba(entry) for entry in colormap) if colormap else None)


MEANING = (("units", "unit"), ("scales", "scale"), ("offsets", "offset"))


def meaning_differences(these: BandMetadata, those: BandMetadata, theirs_name: str,
                        labels: Sequence[str] | None = None) -> list[str]:
    """How the stored values of `these` bands mean other quantities than those of `those`
    (band by band, in order), e.g. ['band 2 scale 0.0002 (the first source: 0.0001)'] with
    `theirs_name` 'the first source'; [] when they agree. `labels` names `these` bands (by
    default 'band 1', 'band 2', ...). Metadata of no band (a file from before it was recorded)
    agrees with anything."""
    if not these.scales or not those.scales:
        return []
    found = []
    for key, word in MEANING:
        pairs = zip(getattr(these, key), getattr(those, key))
        for index, (mine, theirs) in enumerate(pairs):
            if mine != theirs:
                label = labels[index] if labels else f"band {index + 1}"
                found.append(f"{label} {word} {_shown(mine)} ({theirs_name}: {_shown(theirs)})")
    return found


def reordered(these: Sequence[str | None], those: Sequence[str | None]) -> list[int] | None:
    """When `these` bands are described by `those` names in another order (every band described,
    each name once), the 0-based positions in `these` of `those` names in their order (a scene
    stored B04, B03, B02 for a model of B02, B03, B04: [2, 1, 0]); else None. Other names are
    no sign of a reordering (naming conventions differ)."""
    mine, theirs = list(these), list(those)
    if not all(mine) or not all(theirs) or len(set(theirs)) != len(theirs) or \
            sorted(mine) != sorted(theirs) or mine == theirs:
        return None
    return [mine.index(name) for name in theirs]


def found_among(described: Sequence[str | None], wanted: Sequence[str | None]) -> list[int] | None:
    """The 1-based numbers of the bands `described` so (a raster's bands' descriptions) that
    bear the `wanted` names, in their order, when each name is there exactly once (every wanted
    band described, each name once); else None."""
    names = list(described)
    if not wanted or not all(wanted) or len(set(wanted)) != len(wanted) or \
            any(names.count(name) != 1 for name in wanted):
        return None
    return [names.index(name) + 1 for name in wanted]


def _shown(value: str | float | None) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else value


def stored_alike(dtype: str, other: str) -> bool:
    """Whether two rasters store the same kind of values: one dtype, or floating point both."""
    return dtype == other or (dtype.startswith("float") and other.startswith("float"))


def _read_colormap(dataset, bands: Sequence[int]) -> tuple[Rgba, ...] | None:
    try:
        table = dataset.colormap(bands[0])
    except ValueError:  # no colour table after all
        return None
    return tuple(tuple(int(v) for v in table[i]) for i in range(len(table)))


def _unit(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"unit {value!r} is not a string")
    return value or None


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise TypeError(f"scale or offset {value!r} is not a finite number")
    return float(value)


def _interp_name(value: Any) -> str:
    """A colour interpretation's name; one this rasterio does not know reads as undefined."""
    if not isinstance(value, str):
        raise TypeError(f"colour interpretation {value!r} is not a name")
    return value if value in ColorInterp.__members__ else "undefined"


def _rgba(entry: Any) -> Rgba:
    values = tuple(entry)
    if len(values) != 4 or not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
        raise ValueError(f"colour table entry {entry!r} is not 4 integers from 0 to 255")
    return values  # type: ignore[return-value]
