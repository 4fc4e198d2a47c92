"""Writing GeoTIFFs as QGIS users expect them, and writing any output without ever leaving a
partial file under the final name."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from geopix2pix.errors import GeoPix2PixError

from .folders import refuse_read_only
from .partials import discard, partial_name, remove_stale

COMPRESSIONS = ("deflate", "zstd", "lzw", "none")
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a write's errors, which name no file


def gtiff_profile(dtype: str, count: int, crs, transform, width: int, height: int,
                  nodata: float | None, compress: str = "deflate", blocksize: int = 512) -> dict:
    """A tiled, compressed GeoTIFF profile (predictor by dtype, BIGTIFF when it could be needed)."""
    profile = dict(driver="GTiff", dtype=dtype, count=count, crs=crs, transform=transform,
                   width=width, height=height, nodata=nodata, BIGTIFF="IF_SAFER")
    block = min(blocksize, max(16, 1 << (max(width, height) - 1).bit_length()))
    if width >= 16 and height >= 16:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    if compress != "none":
        floating = np.issubdtype(np.dtype(dtype), np.floating)
        profile.update(compress=compress, predictor=3 if floating else 2)
    return profile


def check_can_write(path: str | os.PathLike, overwrite: bool) -> Path:
    """Refuse to replace an existing output (or a link there, even a broken one) unless asked
    to; make the parent folder, and remove the temporaries killed runs left for `path`."""
    path = Path(path)
    if os.path.lexists(path) and not overwrite:
        raise GeoPix2PixError(f"{path} already exists; pass --overwrite to replace it")
    refuse_read_only(path.parent, path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoPix2PixError(f"cannot make the folder {path.parent} for {path.name} "
                              f"({exc.strerror or exc}); choose another output folder") from None
    remove_stale(path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to `path` only if the block completes
    (`publish`), and remove it in any case (`discard`)."""
    final = check_can_write(path, overwrite)
    temp = partial_name(final)
    try:
        yield temp
        publish(temp, final, overwrite)
    except OSError as exc:  # writing the temporary: said of the output
        if exc.filename not in (str(temp), temp) and exc.errno not in _NO_ROOM:
            raise
        raise cannot_write(final, exc.strerror or str(exc), exc.errno) from None
    finally:
        discard(temp)


def cannot_write(path: str | os.PathLike, reason: str, code: int | None = None) -> GeoPix2PixError:
    """The one-line error for an output that could not be written: which, why (the operating
    system's words) and what to do about it (by the error number `code`)."""
    if code == errno.EFBIG:
        hint = "the file is larger than this file system (or `ulimit -f`) allows; choose an " \
               "output folder on another file system"
    elif code in _NO_ROOM:
        hint = "free some space or choose another output folder"
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a folder you can write to"
    else:
        hint = "choose another output folder"
    return GeoPix2PixError(f"cannot write {os.fspath(path)} ({reason}); {hint}")


def publish(temp: Path, final: Path, overwrite: bool) -> None:
    """Give the complete `temp` its final name. Without `overwrite` never replace a file that
    appeared at `final` meanwhile (another run, or another name for the same file on a
    case-insensitive filesystem): a hard link fails rather than replace (`discard` then removes
    `temp`); where links are not supported, check and rename."""
    if overwrite:
        os.replace(temp, final)
        return
    appeared = GeoPix2PixError(f"{final} appeared while it was being written and was kept; "
                               "pass --overwrite to replace it")
    try:
        os.link(temp, final)
    except FileExistsError:
        raise appeared from None
    except OSError:  # no hard links on this filesystem
        if os.path.lexists(final):
            raise appeared from None
        os.replace(temp, final)


def replaced_inputs(outs: Sequence[Path], inputs: Sequence[Path | str]) -> dict[int, Path]:
    """{index: input}: the outputs that are (would overwrite) one of the input files (a GDAL
    name, /vsicurl/..., is no file here)."""
    def identity(path: Path | str) -> tuple[int, int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    files = {key: path for path in inputs if (key := identity(path)) is not None}
    return {index: files[key] for index, out in enumerate(outs)
            if (key := identity(out)) is not None and key in files}


def case_insensitive(folder: Path) -> bool:
    """Whether names that differ only in case are one file in `folder` (or, while it does not
    exist yet, in its nearest existing parent): macOS and Windows by default."""
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.NamedTemporaryFile(prefix=".geopix2pix-case-", dir=folder) as probe:
            name = Path(probe.name)
            return name.with_name(name.name.swapcase()).exists()
    except OSError:  # cannot write there: writing the outputs will say so
        return False


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file in one rename, so readers see the old file or the whole new one."""
    with atomic_path(path, overwrite=True) as temp:
        temp.write_text(text)
