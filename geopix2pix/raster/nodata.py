"""A nodata value the user declares for a raster (--source-nodata, --target-nodata, ...), and the
warning for a raster without one that looks like it has fill values.

A converted ASCII grid or a vendor's DEM often holds -9999 in its voids without a nodata tag;
GDAL then calls every pixel valid. `Override` is the value the user gives instead (as rio's
--src-nodata and gdalwarp's -srcnodata do): `open_raster(path, nodata=override)` returns the
dataset seen through `Retagged`, which says that value wherever the file's tag would be said
(``nodata``, ``nodatavals``, the mask flags and the masks GDAL would then give), so every reader
(`read_window`, `chip_nodata`, `warped_view`'s src_nodata) treats the raster exactly as if the
file carried that tag. `fill_value_lines` says when it replaces the file's own tag, and warns of
an untagged raster whose sample is, for a share of its pixels, exactly a common fill value.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.windows import Window

from geopix2pix.errors import GeoPix2PixError

FILL_SHARE = 0.005  # of the sample's pixels at one fill value: enough to warn
SAMPLE_SIDE = 512  # the sample read: at most this many rows and columns (decimated)
CHEAP_READ = (2 * SAMPLE_SIDE) ** 2  # pixels a band's read may decode for the sample
OVERVIEW_REACH = 1.2  # GDAL takes an overview this much coarser than a nearest read asks, less
SAMPLE_WINDOWS = 16  # a larger raster without overviews: at most this many windows a side,
SAMPLE_WINDOW = 32  # of this many pixels a side, each inside one block where it can be
FLOAT_FILLS = (-9999.0, -32768.0, float(np.finfo(np.float32).min))
INTEGER_FILLS = (-9999, -32768)  # and the dtype's min and max (not uint8's: real in RGB)


@dataclass(frozen=True)
class Override:
    """A nodata value given for the rasters of one option (`option`, e.g. --source-nodata)."""

    value: float
    option: str

    @classmethod
    def of(cls, value: float | None, option: str) -> Override | None:
        """The override of an option's value; None where the option was not given."""
        return None if value is None else cls(float(value), option)

    def fitted(self, dataset, path) -> float:
        """The value as `dataset`'s dtype holds it (float32 0.1 is not the double 0.1); a
        value it cannot hold is a one-line error naming the option, the file and what to do."""
        dtype = np.dtype(dataset.dtypes[0])
        value, shown = self.value, _shown(self.value)
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            if math.isfinite(value) and value == int(value) and info.min <= value <= info.max:
                return float(value)
            what = "NaN" if math.isnan(value) else shown
            raise GeoPix2PixError(f"{self.option} {shown}: {path} is {dtype} (whole numbers "
                                  f"{info.min}..{info.max}), which cannot hold {what}; give "
                                  "its fill value within that range, or leave the option out")
        with np.errstate(over="ignore"):
            fitted = float(dtype.type(value))
        if math.isfinite(value) and not math.isfinite(fitted):
            limit = f"{float(np.finfo(dtype).max):.9g}"
            raise GeoPix2PixError(f"{self.option} {shown}: {path} is {dtype}, which cannot hold "
                                  f"{shown}; give a value within -{limit}..{limit}, or nan")
        return fitted


def _shown(value: float, dtype: np.dtype | None = None) -> str:
    """A value as the user would type it again: -9999, nan; the shortest that `dtype` reads
    back as the value (-3.4028235e+38 for float32's lowest, which `Override.fitted` rounds)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return str(np.float32(value)) if dtype == np.float32 else repr(value)


class Retagged:
    """An open rasterio dataset as if its file carried the nodata tag `nodata` (one for all
    bands, as a GeoTIFF's): everything else is the dataset's own. GDAL's rule for the masks
    follows: an explicit mask (internal or .msk) stays the mask; otherwise the nodata value
    makes it (an alpha band's own mask gives way to the nodata, as in GDAL)."""

    def __init__(self, dataset, nodata: float, override: Override):
        self._dataset = dataset
        self.nodata = nodata
        self.override = override
        self.file_nodata = dataset.nodata  # the file's own tag, None where it has none

    def __getattr__(self, name: str):
        return getattr(self._dataset, name)

    @property
    def gdal_dataset(self):
        """The dataset itself, for GDAL (a WarpedVRT of it is given the nodata as src_nodata)."""
        return self._dataset

    @property
    def nodatavals(self) -> tuple[float, ...]:
        return (self.nodata,) * self._dataset.count

    @property
    def mask_flag_enums(self) -> tuple[list[MaskFlags], ...]:
        return tuple(flags if _explicit_mask(flags) else [MaskFlags.nodata]
                     for flags in self._dataset.mask_flag_enums)

    def read_masks(self, indexes=None, window=None, **kwargs):
        """GDAL's masks (255 valid): the file's explicit mask, else the nodata value's."""
        bands = range(1, self.count + 1) if indexes is None else indexes
        single = isinstance(bands, int)
        bands = [bands] if single else list(bands)
        if all(_explicit_mask(self.mask_flag_enums[b - 1]) for b in bands):
            return self._dataset.read_masks(indexes, window=window, **kwargs)
        data = self._dataset.read(bands, window=window, **kwargs)
        masks = np.where(_is_nodata(data, self.nodata), 0, 255).astype(np.uint8)
        return masks[0] if single else masks

    def dataset_mask(self, window=None, **kwargs):
        return self.read_masks(window=window, **kwargs).min(0)

    @property
    def profile(self):
        return {**self._dataset.profile, "nodata": self.nodata}

    @property
    def meta(self):
        return {**self._dataset.meta, "nodata": self.nodata}

    def close(self) -> None:
        self._dataset.close()

    def __enter__(self) -> Retagged:
        return self

    def __exit__(self, *exc) -> None:
        self._dataset.close()

    def __repr__(self) -> str:
        return f"Retagged({self._dataset!r}, nodata={self.nodata!r})"


def _explicit_mask(flags: Sequence[MaskFlags]) -> bool:
    return MaskFlags.per_dataset in flags and MaskFlags.alpha not in flags


def _is_nodata(data: np.ndarray, nodata: float) -> np.ndarray:
    return np.isnan(data) if math.isnan(nodata) else data == nodata


def retagged(dataset, override: Override | None, path):
    """`dataset` as if it carried `override`'s nodata tag (`Retagged`); itself without one. A
    value its dtype cannot hold is refused (`Override.fitted`), the dataset closed."""
    if override is None:
        return dataset
    try:
        return Retagged(dataset, override.fitted(dataset, path), override)
    except GeoPix2PixError:
        dataset.close()
        raise


def gdal_dataset(dataset):
    """The rasterio dataset GDAL works on: a `Retagged` one's own."""
    return getattr(dataset, "gdal_dataset", dataset)


def one_nodata(dataset):
    """`dataset` itself where GDAL's warper can keep each band's voids apart as it is: its bands
    share one nodata value (a GeoTIFF's always do; a `Retagged` one's too), or one has none, or
    it has an alpha band or a mask (GDAL's rules for those), or its name is none GDAL can open
    again. Else (a VRT stacking files of other fill values) a float64 VRT of it whose every band
    holds NaN where its own nodata was, opened (the caller closes it): rasterio gives the warper
    one nodata value for all bands, and NaN is the one no valid value of any band can equal (an
    integer band's own value would be; float64 holds every value up to 32-bit integers)."""
    values = dataset.nodatavals
    if None in values or len({"nan" if math.isnan(v) else v for v in values}) <= 1 or \
            ColorInterp.alpha in dataset.colorinterp or \
            any(MaskFlags.per_dataset in flags for flags in dataset.mask_flag_enums):
        return dataset
    name = _gdal_name(dataset.name)
    if name is None:
        return dataset
    bands = "".join(
        f'<VRTRasterBand dataType="Float64" band="{band}">'
        "<NoDataValue>nan</NoDataValue><ComplexSource>"
        f'<SourceFilename relativeToVRT="0">{escape(name)}</SourceFilename>'
        f"<SourceBand>{band}</SourceBand><NODATA>{nodata!r}</NODATA>"
        "</ComplexSource></VRTRasterBand>"
        for band, nodata in enumerate(values, start=1))
    crs = f"<SRS>{escape(dataset.crs.to_wkt())}</SRS>" if dataset.crs else ""
    transform = ", ".join(map(repr, dataset.transform.to_gdal()))
    return rasterio.open(f'<VRTDataset rasterXSize="{dataset.width}" rasterYSize='
                         f'"{dataset.height}">{crs}<GeoTransform>{transform}</GeoTransform>'
                         f"{bands}</VRTDataset>")


def _gdal_name(name: str) -> str | None:
    """The name GDAL opens a rasterio dataset's `name` by (zip://a.zip!b.tif as
    /vsizip/a.zip/b.tif, a relative path made absolute), None where it cannot be told."""
    try:
        from rasterio._path import _parse_path

        vsi = _parse_path(name).as_vsi()
    except (ImportError, AttributeError, ValueError):
        return None
    if not vsi or vsi.startswith("<"):  # (a VRT given as its XML text)
        return None
    return vsi if vsi.startswith("/vsi") or os.path.isabs(vsi) else os.path.abspath(vsi)


def override_of(dataset) -> Override | None:
    """The override a dataset was opened with (to open it again alike), None without."""
    return getattr(dataset, "override", None) if isinstance(dataset, Retagged) else None


def fill_value_lines(dataset, path, bands: Sequence[int], option: str,
                     also: Iterable[tuple[float, str]] = (), classes: bool = False) -> list[str]:
    """What to tell the user of the nodata of an open raster: a note when `option` replaces
    the file's own (different) nodata value; a warning when the raster has no nodata value at
    all and a sample of it holds, on at least `FILL_SHARE` of its pixels, a common fill value
    (`fill_candidates`), or one of `also` ((value, why) pairs: e.g. the value the model's
    training sources were tagged with). A class map (`classes`, or a band with a colour table)
    is not warned of its dtype's minimum or maximum: 0 is as often a class as a void there."""
    if isinstance(dataset, Retagged):
        old, new = dataset.file_nodata, dataset.nodata
        if old is None or old == new or (math.isnan(old) and math.isnan(new)):
            return []
        return [f"{path}: its nodata value {_shown(old)} is replaced by {option} {_shown(new)}, "
                "as given"]
    if dataset.nodata is not None:
        return []
    dtype = np.dtype(dataset.dtypes[bands[0] - 1])
    classes = classes or dataset.colorinterp[bands[0] - 1] == ColorInterp.palette
    candidates = {value: "a common fill value" for value in fill_candidates(dtype, classes)}
    for value, why in also:
        if value is not None and not math.isnan(value) and value not in candidates and \
                _holds(dtype, value):
            candidates[value] = why
    if not candidates:
        return []
    sample = sample_pixels(dataset, bands)
    found = []
    for value, why in candidates.items():
        share = float((sample == dtype.type(value)).any(0).mean()) if sample.size else 0.0
        if share >= FILL_SHARE:
            shown = _shown(value, dtype)
            found.append(f"{path} has no nodata value, but {100 * share:.3g} % of its pixels are "
                         f"{shown}, {why}: if those are voids, pass {option} {shown}")
    return found


def fill_candidates(dtype: np.dtype, classes: bool = False) -> tuple[float, ...]:
    """The fill values an untagged raster of `dtype` is checked for; none for uint8 (0 and 255
    are too often real values of an RGB image), nor the dtype's ends for a class map."""
    if dtype.kind == "f":
        return FLOAT_FILLS
    if dtype.kind not in "iu" or dtype == np.uint8:
        return ()
    info = np.iinfo(dtype)
    ends = [] if classes or dtype.itemsize == 8 else [float(info.min), float(info.max)]
    values = [*ends, *map(float, INTEGER_FILLS)]
    return tuple(dict.fromkeys(v for v in values if info.min <= v <= info.max))


def _holds(dtype: np.dtype, value: float) -> bool:
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return math.isfinite(float(dtype.type(value)))
    info = np.iinfo(dtype)
    return value == int(value) and info.min <= value <= info.max


GOLDEN = (math.sqrt(5) - 1) / 2  # `_sample_spans`' places within the parts


def sample_pixels(dataset, bands: Sequence[int]) -> np.ndarray:
    """The bands' sample, (bands, pixels): the raster decimated to at most `SAMPLE_SIDE` pixels
    a side where that is cheap: where GDAL decodes for it at most `CHEAP_READ` pixels a band
    (a small raster, or one with an overview coarse enough), or no more than the windows below
    would, or the file is in strips (a window decodes its rows' strips whole); else a fixed grid
    of small windows from edge to edge (`_sample_windows`), each decoding one tile, where GDAL
    would serve the decimated read by decoding every tile of the file (or of a fine overview)."""
    step = max(1, math.ceil(max(dataset.height, dataset.width) / SAMPLE_SIDE))
    windows = _sample_windows(dataset, bands[0])
    block_rows, block_cols = dataset.block_shapes[bands[0] - 1]
    striped = block_cols >= dataset.width
    windows_decode = len(windows) * block_rows * block_cols
    if striped or _decimated_decode(dataset, bands, step) <= max(CHEAP_READ, windows_decode):
        shape = (len(bands), max(1, dataset.height // step), max(1, dataset.width // step))
        read = dataset.read(list(bands), out_shape=shape, resampling=Resampling.nearest)
        return read.reshape(len(bands), -1)
    return np.concatenate([dataset.read(list(bands), window=window).reshape(len(bands), -1)
                           for window in windows], axis=1)


def _decimated_decode(dataset, bands: Sequence[int], step: int) -> float:
    """The pixels a band's read decimated by `step` decodes at most, over `bands`: those of the
    coarsest overview GDAL takes for it (one less than `OVERVIEW_REACH` times as coarse as
    asked; a 2x overview alone is a quarter of the file), else the whole file's. (A GeoTIFF's
    overviews cover every band; a VRT's bands may come from files with and without them.)"""
    def decoded(band: int) -> float:
        factors = [f for f in dataset.overviews(band) if f < OVERVIEW_REACH * step]
        return dataset.height * dataset.width / max(factors, default=1) ** 2

    return max(map(decoded, bands))


def _sample_windows(dataset, band: int) -> list[Window]:
    """The `_sample_spans` of the rows by those of the columns: a cost bounded whatever the
    raster's size (each window decodes one tile), the voids of any large area still hit in
    proportion, a frame of fill values along the edges included."""
    block_rows, block_cols = dataset.block_shapes[band - 1]
    return [Window(col, row, width, height)
            for row, height in _sample_spans(dataset.height, block_rows)
            for col, width in _sample_spans(dataset.width, block_cols)]


def _sample_spans(size: int, block: int) -> list[tuple[int, int]]:
    """(start, length) of up to `SAMPLE_WINDOWS` spans of `SAMPLE_WINDOW` pixels, one in each
    of as many equal parts of `size`, at a place in its part that differs from part to part (a
    golden-ratio sequence, the first at the part's start): every place along the axis, the
    edges included, is as likely to be read as any other, so a frame of fill values along the
    edges is hit in proportion as a void in the middle is (spans at the parts' middles missed a
    frame narrower than half a part). Each span is moved inside the block holding its start
    where the block is long enough (a span across two blocks decodes both)."""
    length = min(SAMPLE_WINDOW, size)
    count = min(SAMPLE_WINDOWS, max(1, size // SAMPLE_WINDOW))
    part = size / count
    spans = []
    for i in range(count):
        place = (i * GOLDEN) % 1.0  # where in its part, as a share of the room there
        start = min(int(i * part + place * (part - length)), size - length)
        first = start // block * block
        last = min(first + block, size) - length  # the block's last start for the span
        if last >= first:
            start = min(max(first, start), last)
        spans.append((start, length))
    return spans
