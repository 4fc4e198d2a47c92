"""Opening rasters with clear errors, choosing bands, and reading windows with their validity.

Validity follows GDAL: a pixel is invalid when any selected band is nodata or NaN, or when the
dataset's mask (internal mask, per-dataset mask or alpha band) says so; and, as QGIS shows it,
wherever a band whose colour interpretation is alpha is 0, also where GDAL builds no mask from
it (a float alpha, or one of 5 bands: `unmasked_alpha_bands`). Every reader in geopix2pix
(chip export, the chip dataset, prediction, evaluation) goes through `read_window`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import stat
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyproj
import rasterio
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.bands import alpha_bands, data_bands
from geopix2pix.raster.grid import Grid, control_points
from geopix2pix.raster.interruptible import interruptible
from geopix2pix.raster.nodata import Override, gdal_dataset, one_nodata, retagged

RESAMPLING = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear,
              "cubic": Resampling.cubic}  # a target's, at export
# and a scene's, read at a coarser pixel size (predict --resample-to-model)
WARP_RESAMPLING = {**RESAMPLING, "average": Resampling.average}


_GDAL_NAME = re.compile(r"^(/vsi[a-z0-9_]+/|[A-Za-z][A-Za-z0-9_]+:)")  # /vsizip/..., NETCDF:..


def is_gdal_name(path: str | os.PathLike) -> bool:
    """Whether `path` names a dataset to GDAL rather than a file: a virtual file system path
    (/vsizip/a.zip/b.tif) or a driver's subdataset syntax (NETCDF:"f.nc":var)."""
    return bool(_GDAL_NAME.match(os.fspath(path)))


_SUBDATASET = re.compile(r'^[A-Za-z][A-Za-z0-9_]+:(?:[A-Za-z0-9_]+:)*"([^"]+)":?(.*)$')
# unquoted, as GDAL lists a GeoPackage's tables (GPKG:/data/multi.gpkg:table), a SAFE's
# resolutions (SENTINEL2_L1C:/p/MTD_MSIL1C.xml:10m:EPSG_32633) or a TIFF's pages (GTIFF_DIR:2:a.tif)
_BARE_SUBDATASET = re.compile(r"^[A-Z][A-Z0-9_]+:(?!//)(.+)$")  # (drivers are upper case)


def scene_name(path: str | os.PathLike) -> str:
    """A raster's name for the files made from it (predict --out-dir writes NAME.tif): its file
    stem; for a driver's subdataset (NETCDF:"a.nc":sst) the file's stem and the subdataset
    (a_sst; unquoted, GPKG:a.gpkg:dem a_dem, GTIFF_DIR:2:a.tif a_2), so two variables of one
    file do not share an output."""
    text = os.fspath(path)
    match = _SUBDATASET.match(text)
    if match is not None:
        file, rest = match.group(1), [match.group(2)]
    elif (bare := _BARE_SUBDATASET.match(text)) is not None and not Path(text).exists():
        parts = re.sub(r"(?:^|:)([A-Za-z]):([\\/])", r":\1|\2", bare.group(1)).split(":")
        parts = [p.replace("|", ":", 1) for p in parts if p]  # (a drive letter kept: D:\\d)
        file = next((p for p in parts if "/" in p or "\\" in p or Path(p).suffix), parts[-1])
        rest = [p for p in parts if p is not file]
    else:
        return Path(text).stem
    sub = re.sub(r"[^A-Za-z0-9]+", "_", "_".join(rest)).strip("_")
    return Path(re.split(r"[\\/]", file)[-1]).stem + (f"_{sub}" if sub else "")


_VSI_FILE = re.compile(r"^(/vsi(?:zip|tar|gzip|7z|rar)/)(?!/)(.*)$")  # an archive's path


def anchored(name: str, folder: Path) -> Path | str:
    """`name` as written in a file of `folder` (a --pairs CSV): a path relative to that folder,
    and so is a GDAL name's own file (/vsizip/a.zip/b.tif -> /vsizip//abs/folder/a.zip/b.tif,
    NETCDF:"a.nc":v -> NETCDF:"/abs/folder/a.nc":v); URLs and absolute names as they are."""
    if not is_gdal_name(name):
        return folder / name
    archive = _VSI_FILE.match(name)
    if archive:
        return f"{archive.group(1)}/{(folder / archive.group(2)).resolve().as_posix().lstrip('/')}"
    quoted = re.match(r'^([^"]*)"([^"]+)"(.*)$', name)
    if quoted and not Path(quoted.group(2)).is_absolute():
        return f'{quoted.group(1)}"{(folder / quoted.group(2)).resolve()}"{quoted.group(3)}'
    return name


def raster_path(path: str | os.PathLike) -> Path | str:
    """`path` as a Path, but a GDAL name as the string it is (Path would fold the double slash
    of /vsizip//abs/a.zip/b.tif)."""
    return os.fspath(path) if is_gdal_name(path) else Path(path)


def full_path(path: str | os.PathLike) -> str:
    """The absolute path of a raster file, or a GDAL name as it is (it names no file here)."""
    return os.fspath(path) if is_gdal_name(path) else str(Path(path).resolve())


def open_raster(path: str | os.PathLike, require_crs: bool = True,
                nodata: Override | None = None):
    """Open a raster for reading, turning the usual mistakes into one-line errors. With
    `require_crs`, the raster must be placed on a map: a CRS and a geotransform (see
    `placement_problem`). With `nodata`, it is read as if it carried that nodata tag
    (`raster.nodata`). A Ctrl-C or SIGTERM while GDAL opens it stops the program
    (`interruptible`)."""
    path = check_raster_file(path)
    try:
        dataset = interruptible(open_dataset, path)
    except RasterioIOError as exc:
        if isinstance(path, Path) and path.is_dir():
            raise GeoPix2PixError(f"{path} is a folder, not a raster GDAL can read; pass the "
                                  f"rasters in it (e.g. {path / '*.tif'})") from None
        raise GeoPix2PixError(
            f"{path} is not a raster GDAL can read ({str(exc).splitlines()[0]}); pass a "
            "GeoTIFF or another GDAL raster"
        ) from None
    if dataset.count == 0:  # a container of rasters (GeoPackage tables, NetCDF variables)
        listed = dataset.subdatasets
        dataset.close()
        some = f"{len(listed)} subdatasets, e.g. {listed[0]}" if listed else "no raster band"
        raise GeoPix2PixError(f"{path} holds {some}; pass "
                              f"{'one of them' if listed else 'a raster with bands'} instead")
    complex_types = sorted({dt for dt in dataset.dtypes if dt.startswith("complex")})
    if complex_types:
        dataset.close()
        raise GeoPix2PixError(
            f"{path} has complex ({', '.join(complex_types)}) bands, which geopix2pix does not "
            "read; convert them to real values first (amplitude, intensity or dB)")
    message = placement_problem(dataset, path) if require_crs else None
    if message:
        dataset.close()
        raise GeoPix2PixError(message)
    return retagged(dataset, nodata, path)  # closed when it refuses the value


def open_dataset(path: str | os.PathLike):
    """`rasterio.open(path)` without rasterio's warning for a raster without geotransform, which
    `placement_problem` says in our words (or --allow-no-crs accepts)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)


_NOT_FILES = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def check_raster_file(path: str | os.PathLike) -> Path | str:
    """`path` as `raster_path` gives it, once it names something GDAL can open without blocking:
    an existing file or folder (GDAL reads a few rasters as folders), not a pipe, socket or
    device (GDAL would wait on a pipe for a writer; it needs a file it can seek in). A GDAL
    name (/vsizip/..., NETCDF:"f.nc":v) goes as it is: GDAL alone can tell what it names."""
    if is_gdal_name(path):
        return os.fspath(path)
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise GeoPix2PixError(f"{path}: no such file; check the path") from None
    except OSError as exc:
        raise GeoPix2PixError(f"{path} cannot be read: {exc.strerror}") from None
    for test, what in _NOT_FILES:
        if test(mode):
            raise GeoPix2PixError(f"{path} is {what}, not a raster file; GDAL reads rasters "
                                  "from files it can seek in: save the data to a file first")
    return path


def placement_problem(dataset, path: str | os.PathLike) -> str | None:
    """Why a raster is not placed on a map grid, and what to do; None when it is (a CRS and a
    geotransform). Without CRS: `no_crs_message`. With a CRS but no geotransform (rasterio then
    gives the identity matrix), its pixels are nowhere in that CRS."""
    if dataset.crs is None:
        return no_crs_message(dataset, path)
    if not has_geotransform(dataset):
        return (f"{path} has a CRS ({dataset.crs}) but no geotransform, so its pixels are "
                "not placed on the map; set one first (e.g. gdal_edit.py -a_ullr <ulx> <uly> "
                f"<lrx> <lry> {path})")
    return None


def check_on_the_earth(dataset, path: str | os.PathLike,
                       needs: str = "chips.gpkg and an AOI need its place on the Earth") -> None:
    """Refuse, in one line, a raster in a local engineering CRS (LOCAL_CS: no datum on the
    Earth, so PROJ can take it to no other CRS) where its place on the Earth is needed (`needs`
    says what needs it: an export's chips.gpkg (EPSG:4326) and AOI, evaluate's warp onto
    another CRS). A CRS pyproj cannot parse is let through."""
    try:
        local = pyproj.CRS.from_user_input(dataset.crs.to_wkt()).geodetic_crs is None
    except pyproj.exceptions.CRSError:
        local = False
    if local:
        raise GeoPix2PixError(
            f"{path} is in a local engineering CRS, which places it on no map ({needs}); assign "
            f"its real CRS first (e.g. gdal_edit.py -a_srs EPSG:<code> {path})")


def has_geotransform(dataset) -> bool:
    """Whether the raster has a geotransform: rasterio gives the identity matrix (pixel
    coordinates) for one without, and GDAL does not write the identity as one."""
    return not dataset.transform.is_identity


def no_crs_message(dataset, path: str | os.PathLike) -> str:
    """Why a raster without CRS cannot be used, and what to do: assign a CRS (and a
    geotransform, where it has none either), or for a raster placed by ground control points
    or RPCs (a raw satellite scene), warp it onto a grid."""
    placed = control_points(dataset)
    if placed:
        gcps = placed.get("gcps")
        what = f"{len(gcps)} ground control points" if gcps else "RPCs"
        rpc = "" if gcps else "-rpc "
        return (f"{path} is placed by {what}, not on a map grid; warp it onto one first "
                f"(e.g. gdalwarp {rpc}-t_srs EPSG:<code> {path} warped.tif)")
    if not has_geotransform(dataset):
        return (f"{path} has no CRS and no geotransform: nothing places it on the map; assign "
                f"both first (e.g. gdal_edit.py -a_srs EPSG:<code> -a_ullr <ulx> <uly> <lrx> "
                f"<lry> {path})")
    return f"{path} has no CRS; assign one first (e.g. gdal_edit.py -a_srs EPSG:<code> {path})"


def needs_mask_read(dataset, bands: Sequence[int]) -> bool:
    """True when validity needs GDAL's mask band (internal mask or alpha), not only the values."""
    return any(
        MaskFlags.per_dataset in dataset.mask_flag_enums[b - 1]
        or MaskFlags.alpha in dataset.mask_flag_enums[b - 1]
        for b in bands
    )


def unmasked_alpha_bands(dataset, bands: Sequence[int]) -> list[int]:
    """The alpha bands whose zeros GDAL's mask of `bands` does not mark invalid: all, unless it
    is GDAL's own from an alpha band (only from the last of 2 or 4 integer bands; a float
    alpha, or one of 5 bands, gives none, though QGIS hides its zeros all the same)."""
    if any(MaskFlags.alpha in dataset.mask_flag_enums[b - 1] for b in bands):
        return []
    return alpha_bands(dataset)


def invalid_pixels(dataset, data: np.ndarray, bands: Sequence[int],
                   window: Window | None = None) -> np.ndarray:
    """Boolean (rows, cols) array: True where any selected band is invalid: masked, at nodata,
    or (floating point) NaN or infinite; or where an alpha band is 0 (`unmasked_alpha_bands`)."""
    invalid = np.zeros(data.shape[1:], dtype=bool)
    if needs_mask_read(dataset, bands):
        invalid |= (dataset.read_masks(list(bands), window=window, boundless=False) == 0).any(0)
    for alpha in unmasked_alpha_bands(dataset, bands):
        invalid |= dataset.read(alpha, window=window) == 0
    for i, band in enumerate(bands):
        nodata = dataset.nodatavals[band - 1]
        if nodata is None:
            continue
        invalid |= np.isnan(data[i]) if np.isnan(nodata) else data[i] == nodata
    if np.issubdtype(data.dtype, np.floating):  # NaN, and infinities (no measurement either)
        invalid |= ~np.isfinite(data).all(0)
    return invalid


def read_window(dataset, bands: Sequence[int], window: Window) -> tuple[np.ndarray, np.ndarray]:
    """Read a window: (data (bands, rows, cols) in the file's dtype, valid mask (rows, cols))."""
    data = dataset.read(list(bands), window=window)
    return data, ~invalid_pixels(dataset, data, bands, window)


def decoded_block_bytes(dataset, rows: int, cols: int) -> int:
    """Bytes of the decoded blocks that a read of `rows` x `cols` pixels can touch (one block more
    each way, since a read need not start on a block edge; all bands, which GDAL decodes
    together): the GDAL block cache that reading a row of windows needs so that no block is
    decoded twice."""
    block_rows, block_cols = dataset.block_shapes[0]
    rows = min((math.ceil(rows / block_rows) + 1) * block_rows, dataset.height)
    cols = min((math.ceil(cols / block_cols) + 1) * block_cols, dataset.width)
    return rows * cols * dataset.count * max(np.dtype(dt).itemsize for dt in dataset.dtypes)


def warped_view(dataset, grid: Grid, resampling: str = "bilinear") -> WarpedVRT:
    """A view of `dataset` on `grid` (GDAL warping with `resampling`, one of `WARP_RESAMPLING`),
    with invalid pixels kept invalid.

    Nodata and NaN are excluded from the resampling kernel; where the source declares neither, an
    alpha band (its own, warped, or one added) marks what lies outside its footprint or under its
    mask. An alpha band of its own above 0 is opaque (`OPAQUE_ABOVE_ZERO`).
    """
    # tolerance 0.01 pixel instead of GDAL's default 0.125-pixel
    # approximation, which shows as a visible shift between source and target chips
    kwargs = dict(crs=grid.crs, transform=grid.transform, width=grid.width, height=grid.height,
                  resampling=WARP_RESAMPLING[resampling], tolerance=0.01)
    if grid.crs is not None and not isinstance(grid.crs, CRS):  # ("EPSG:32633" will do)
        grid = dataclasses.replace(grid, crs=CRS.from_user_input(grid.crs))
    wrapped, onto = _longitudes_past_180(Grid.of(dataset)), _longitudes_past_180(grid)
    if wrapped is not None or onto is not None:
        # both sides through PROJ's strings where they share a datum: EPSG's own datum
        # transformation against a string's +towgs84 moved a Fiji (EPSG:4748) grid 400 m
        alike = _same_datum(dataset.crs, grid.crs)
        source_side = wrapped if wrapped is not None else \
            CRS.from_proj4(dataset.crs.to_proj4()) if alike else None
        if source_side is not None:
            kwargs["src_crs"] = source_side
        kwargs["crs"] = onto if onto is not None else \
            CRS.from_proj4(grid.crs.to_proj4()) if alike else grid.crs
    # each band's nodata kept out of that band's kernel: rasterio's default (UNIFIED_SRC_NODATA
    # YES) takes a pixel for nodata only where every band is, and blended a void of one band
    # (-9999 in band 1 only) into its neighbours' values as if it were one
    source = one_nodata(dataset)  # (bands of other nodata values: one)
    if source is not dataset:
        kwargs.update(src_nodata=source.nodata, nodata=source.nodata, UNIFIED_SRC_NODATA="NO")
        try:
            return _ClosingItsSource(source, **kwargs)
        except BaseException:
            source.close()
            raise
    if dataset.nodata is not None:
        kwargs.update(src_nodata=dataset.nodata, nodata=dataset.nodata, UNIFIED_SRC_NODATA="NO")
    elif np.issubdtype(np.dtype(dataset.dtypes[0]), np.floating) and not needs_mask_read(
            dataset, data_bands(dataset)):
        kwargs.update(src_nodata=np.nan, nodata=np.nan, UNIFIED_SRC_NODATA="NO")
    elif ColorInterp.alpha not in dataset.colorinterp:  # (an alpha band of its own is warped,
        kwargs.update(add_alpha=True)  # 0 outside the footprint too: GDAL adds no second one)
    if alpha_bands(dataset):
        kwargs.update(SRC_ALPHA_MAX=OPAQUE_ABOVE_ZERO)
    return WarpedVRT(gdal_dataset(dataset), **kwargs)  # a `Retagged` one's nodata: src_nodata


class _ClosingItsSource(WarpedVRT):
    """A WarpedVRT of a dataset opened for it alone (`nodata.one_nodata`'s VRT), which it
    closes with itself."""

    def close(self) -> None:
        source = getattr(self, "src_dataset", None)
        super().close()
        if source is not None:
            source.close()


# GDAL's warper weighs a pixel by alpha / SRC_ALPHA_MAX (255 for a float alpha), at most 1, and
# blends it into the nodata it starts from (a float alpha of 1 gave all NaN): a tiny maximum
# makes any alpha above 0 opaque, as `invalid_pixels` reads an alpha band.
OPAQUE_ABOVE_ZERO = "1e-30"


def _longitudes_past_180(grid: Grid) -> CRS | None:
    """For a grid in degrees defined past +-180 (179.9..180.2), its CRS with PROJ's lon_wrap
    about that meridian, else None. GDAL's warper goes from each output pixel back to the
    raster: without it on the raster's CRS, it finds 180.1 degrees as -179.9, outside the
    raster; without it on the output grid's (a global raster in -180..180 warped onto one
    past 180), it looks for 180.1 past the raster's edge. Either way the ground east of 180
    would be lost."""
    crs = grid.crs
    if crs is None or not crs.is_geographic or not math.isclose(
            crs.units_factor[1], math.pi / 180, rel_tol=1e-9):
        return None  # (in degrees, whatever their name: a CRS in grads loses its unit there)
    left, _, right, _ = grid.bounds
    meridian = 180 if right > 180 else -180 if left < -180 else None
    if meridian is None:
        return None
    return CRS.from_proj4(f"{crs.to_proj4()} +lon_wrap={meridian}")


def _same_datum(a: CRS | None, b: CRS | None) -> bool:
    """Whether two CRSs share their geodetic CRS (EPSG:3139 and EPSG:4748: Fiji's)."""
    if a is None or b is None:
        return False
    try:
        return pyproj.CRS(a.to_wkt()).geodetic_crs == pyproj.CRS(b.to_wkt()).geodetic_crs
    except pyproj.exceptions.CRSError:
        return False


def chip_nodata(dataset, bands: Sequence[int]) -> float | None:
    """The nodata value chips of this raster are written with.

    The raster's own nodata when it declares one, NaN for floating-point rasters without one, and
    None for integer rasters without one (their invalid pixels go into an internal mask instead).
    """
    if dataset.nodata is not None:
        return float(dataset.nodata)
    if np.issubdtype(np.dtype(dataset.dtypes[bands[0] - 1]), np.floating):
        return float("nan")
    return None
