"""Which bands of a raster a command reads: its data bands (all but alpha), the alpha bands, a
band list checked against a raster, and band lists as the command line writes them (1,2,3 or
1-3)."""

from __future__ import annotations

from collections.abc import Sequence

from rasterio.enums import ColorInterp

from geopix2pix.errors import GeoPix2PixError


def data_bands(dataset) -> list[int]:
    """1-based indexes of the dataset's bands that are data, i.e. all but alpha bands."""
    alpha = alpha_bands(dataset)
    bands = [b for b in range(1, dataset.count + 1) if b not in alpha]
    return bands or list(range(1, dataset.count + 1))


def alpha_bands(dataset) -> list[int]:
    """1-based indexes of the dataset's bands whose colour interpretation is alpha."""
    return [i + 1 for i, ci in enumerate(dataset.colorinterp) if ci == ColorInterp.alpha]


def select_bands(dataset, bands: Sequence[int] | None, option: str = "--bands") -> list[int]:
    """Validate 1-based band indexes against a dataset (each must exist, and be listed once);
    None means all data bands."""
    if bands is None:
        return data_bands(dataset)
    check_band_list(bands, option)
    bad = [b for b in bands if not 1 <= b <= dataset.count]
    if bad:
        raise GeoPix2PixError(
            f"{option} {band_list_text(bands)}: band {bad[0]} does not exist in "
            f"{dataset.name}, which has {dataset.count} band(s); use indexes 1..{dataset.count}"
        )
    return list(bands)


def check_one_dtype(dataset, bands: Sequence[int], option: str = "--bands") -> list[int]:
    """`bands`, where they share one data type; else one line: a raster's bands are read
    together, as one array (a VRT stacking a Byte band with Float32 ones has two)."""
    types = {dataset.dtypes[b - 1] for b in bands}
    if len(types) > 1:
        listed = ", ".join(f"{b} {dataset.dtypes[b - 1]}" for b in bands)
        raise GeoPix2PixError(
            f"{dataset.name}: its bands {listed} are of {len(types)} data types, and a "
            f"raster's bands are read as one; choose bands of one type with {option}, or "
            f"convert it first (e.g. gdal_translate -ot Float32 {dataset.name} out.tif)")
    return list(bands)


BAND_HELP = "write bands like 1,2,3 or 1-3"
MOST_BANDS = 65535  # a band number above this is no raster's (a GeoTIFF holds at most 65535)
TOO_MANY_BANDS = f"more than {MOST_BANDS} bands listed, more than any raster holds; {BAND_HELP}"
SHOWN_PARTS = 12  # a band list in a message: at most this many of its numbers or ranges
NO_BANDS = f"no band given; leave the option out for the default bands, or {BAND_HELP}"


def check_band_list(bands: Sequence[int] | None, option: str) -> None:
    """Refuse a band list of the Python API that names no band: an empty one (all bands is
    None, as on the command line, where `parse_bands` refuses '') or one with a number below
    1 (bands are 1-based)."""
    if bands is None:
        return
    if len(bands) == 0:
        raise GeoPix2PixError(f"{option} []: {NO_BANDS}")
    low = [b for b in bands if b < 1]
    if low:
        raise GeoPix2PixError(f"{option} {band_list_text(bands)}: {_below_one(low[0])}")


def _below_one(number: int) -> str:
    return f"band numbers start at 1 (there is no band {number}); {BAND_HELP}"


def parse_bands(text: str | None) -> list[int] | None:
    """'1,2,3' or '1-3' -> [1, 2, 3]; None -> None (all bands). An empty text, a part that is
    not a number (-1 included: bands are 1-based) or a rising range (4-2) is a ValueError
    saying what to write instead."""
    if text is None:
        return None
    if not text.strip():
        raise ValueError(NO_BANDS)
    bands: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if part.startswith("-") and part[1:].strip().isdigit():  # -1: no band, no range
            raise ValueError(_below_one(-int(part[1:])))
        if "-" in part:
            first, last = (_band_number(p) for p in part.split("-", 1))
            if last < first:
                raise ValueError(f"a range goes up, e.g. {last}-{first}")
            if len(bands) + last - first >= MOST_BANDS:  # (checked before it is built)
                raise ValueError(TOO_MANY_BANDS)
            bands.extend(range(first, last + 1))
        elif len(bands) >= MOST_BANDS:
            raise ValueError(TOO_MANY_BANDS)
        else:
            bands.append(_band_number(part))
    return bands


def band_list_text(bands: Sequence[int]) -> str:
    """A band list as the command line writes it: '1,1,2'; a longer one than `SHOWN_PARTS`
    with its runs as ranges ('1-200000') and, past `SHOWN_PARTS` parts, ',...' at the end."""
    if len(bands) <= SHOWN_PARTS:
        return ",".join(map(str, bands))
    parts: list[str] = []
    start = 0
    for i in range(1, len(bands) + 1):
        if i == len(bands) or bands[i] != bands[i - 1] + 1:
            first, last = bands[start], bands[i - 1]
            parts.append(str(first) if first == last else f"{first}-{last}")
            start = i
    return ",".join(parts[:SHOWN_PARTS]) + (",..." if len(parts) > SHOWN_PARTS else "")


def repeated_band_warning(option: str, bands: Sequence[int] | None) -> str | None:
    """A warning when `bands` lists a band more than once: legitimate (a grey scene fed to a
    model of three bands, a panchromatic band repeated for an encoder pretrained on RGB) but
    more often a slip for another band, so it is said, not refused."""
    seen: set[int] = set()
    for band in bands or ():
        if band in seen:
            return (f"{option} {band_list_text(bands)} reads band {band} more than once: "
                    "several bands get the same values (as a grey scene fed to a model of more "
                    "bands does); check that it is not a slip for another band")
        seen.add(band)
    return None


def _band_number(text: str) -> int:
    """A 1-based band number; anything else (0 included) is a ValueError."""
    text = text.strip()
    if not text.isdigit():
        what = repr(text) if text else "an empty part"
        raise ValueError(f"{what} is not a band number; {BAND_HELP}")
    if int(text) == 0:
        raise ValueError(_below_one(0))
    if int(text) > MOST_BANDS:
        raise ValueError(f"band {int(text)} is no raster's: band numbers go up to {MOST_BANDS}; "
                         f"{BAND_HELP}")
    return int(text)
