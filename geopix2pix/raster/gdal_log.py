"""Writing that failed without an exception: GDAL signals some errors that rasterio only logs
("GDAL signalled an error: ..."), and some write errors (libtiff's, e.g. a file-size limit)
reach neither, so a GeoTIFF whose blocks could not all be written can close without complaint.
Writers watch the log while writing and check the closed file before publishing it: it opens,
and no block lies past its end (`checked_write`). A failure is one line naming the file
(`raster.write.cannot_write`); one that ran out of room (a full disk: GDAL's errors carry no
error number) says how much is left there.

libtiff's own error handler prints those write errors straight to stderr, a line per block
("_tiffWriteProc: No space left on device."), before our one-line error; it is unset while
writing (found among the libraries loaded in the process; where it cannot be, nothing
changes)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError, data_errors, describe
from geopix2pix.raster.write import NO_ROOM, cannot_write, free_space

LOGGER = "rasterio"  # rasterio._env and rasterio._err log them
_SIGNALLED = re.compile(r"GDAL signalled an error: err_no=\d+, msg=(['\"])(?P<msg>.*)\1$")
LOW_SPACE = 1 << 20  # bytes: below this a failed write is put down to a full disk


class _Failures(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = _SIGNALLED.match(record.getMessage())
        if match:
            self.messages.append(match.group("msg"))


@contextlib.contextmanager
def signalled_errors() -> Iterator[list[str]]:
    """The messages of the errors GDAL signals, from any thread, while the block runs (with
    libtiff's own printing of them off)."""
    logger = logging.getLogger(LOGGER)
    failures = _Failures()
    level = logger.level
    logger.addHandler(failures)
    if logger.getEffectiveLevel() > logging.INFO:  # rasterio logs them at INFO
        logger.setLevel(logging.INFO)
    try:
        with libtiff_quiet():
            yield failures.messages
    finally:
        logger.removeHandler(failures)
        logger.setLevel(level)


def _loaded_library(stem: str) -> str | None:
    """The path of the library `stem` (libtiff, libgdal) that GDAL uses (rasterio's own copy in
    its wheels), if loaded."""
    import rasterio

    package = Path(rasterio.__file__).parent
    for libs in (package.with_name("rasterio.libs"), package / ".dylibs"):  # Linux, macOS wheels
        found = sorted(libs.glob(f"{stem}*")) if libs.is_dir() else []
        if found:
            return str(found[0])
    try:  # a GDAL built elsewhere (conda, the system): the library this process has mapped
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if f"/{stem}" in line}
    except OSError:
        return None
    return min(paths) if len(paths) == 1 else None  # two copies: cannot tell which


@functools.cache
def _cpl_error_reset():
    """GDAL's CPLErrorReset, or None."""
    path = _loaded_library("libgdal")
    try:
        return ctypes.CDLL(path).CPLErrorReset if path else None
    except (OSError, AttributeError):
        return None


def reset_gdal_errors() -> None:
    """Clear GDAL's last error in this thread, as opening a dataset here would: rasterio raises
    a stale one (a libtiff complaint left by an earlier write) at its next check otherwise."""
    reset = _cpl_error_reset()
    if reset is not None:
        reset()


@functools.cache
def _libtiff():
    """libtiff's TIFFSetErrorHandler, or None."""
    path = _loaded_library("libtiff")
    try:
        setter = ctypes.CDLL(path).TIFFSetErrorHandler if path else None
    except (OSError, AttributeError):
        return None
    if setter is not None:
        setter.restype, setter.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    return setter


class _Quiet:
    """How many blocks keep libtiff quiet now (writers in several threads overlap), and the
    handler to restore when the last one ends."""

    lock = threading.Lock()
    holders = 0
    previous = None


@contextlib.contextmanager
def libtiff_quiet() -> Iterator[None]:
    """libtiff's global error handler unset while the block runs (errors GDAL does not route
    still fail the write, which `check_written` reports), restored when the last such block in
    the process ends."""
    setter = _libtiff()
    if setter is None:
        yield
        return
    with _Quiet.lock:
        if _Quiet.holders == 0:
            _Quiet.previous = setter(None)
        _Quiet.holders += 1
    try:
        yield
    finally:
        with _Quiet.lock:
            _Quiet.holders -= 1
            if _Quiet.holders == 0:
                setter(_Quiet.previous)


def _blocks_end(dataset) -> int:
    """The byte just past the last of the GeoTIFF's data blocks (0 when GDAL gives no offsets)."""
    end = 0
    for band, (height, width) in enumerate(dataset.block_shapes, start=1):
        for row in range(-(-dataset.height // height)):
            for col in range(-(-dataset.width // width)):
                offset = dataset.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
                size = dataset.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
                if offset and size:
                    end = max(end, int(offset) + int(size))
    return end


def _file_problem(path: Path) -> str | None:
    """What is wrong with the closed GeoTIFF at `path`, or None."""
    import rasterio

    try:
        with rasterio.open(path) as dataset:
            end = _blocks_end(dataset)
    except rasterio.errors.RasterioError as exc:
        return str(exc)
    written = path.stat().st_size
    if end > written:
        return f"only {written} of its {end} bytes were written"
    return None


def no_room_errno(reason: str, path: Path) -> int | None:
    """The OS error a failed write of `path` that GDAL described as `reason` was, if it ran out
    of room (ENOSPC, EDQUOT, EFBIG): as GDAL says it, or ENOSPC when the folder of `path` has
    (almost) no room left; None otherwise (GDAL's errors carry no error number)."""
    for code in NO_ROOM:
        if os.strerror(code).lower() in reason.lower():
            return code
    if "disk is full" in reason:  # SQLite's words (a GeoPackage)
        return errno.ENOSPC
    free = free_space(path.parent)
    return errno.ENOSPC if free is not None and free < LOW_SPACE else None


def write_error(name: Path, reason: str, path: Path) -> GeoPix2PixError:
    """The one-line error (`raster.write.cannot_write`) for the output `name`, written at
    `path`, that GDAL could not write."""
    return cannot_write(name, reason, no_room_errno(reason, path),
                        hint="check the free space and any file-size limit there")


def check_written(path: Path, name: Path, failures: list[str]) -> None:
    """Raise `GeoPix2PixError` when writing `path` (to be published as `name`) went wrong:
    GDAL signalled errors, or the file does not open or is shorter than its blocks."""
    problem = failures[0] if failures else _file_problem(path)
    if problem is not None:
        raise write_error(name, problem.replace(str(path), str(name)), path)


@contextlib.contextmanager
def checked_write(path: Path, name: Path | None = None) -> Iterator[None]:
    """Run the block that writes and closes the GeoTIFF `path` (to be published as `name`); a
    failure, raised by GDAL or only signalled (a full disk), becomes one line (`write_error`)
    said of `name`."""
    name = name or path
    with signalled_errors() as failures:
        try:
            yield
        except data_errors() as exc:
            raise write_error(name, describe(exc).replace(str(path), str(name)), path) from None
    check_written(path, name, failures)
