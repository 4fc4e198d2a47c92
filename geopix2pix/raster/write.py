"""Writing GeoTIFFs as QGIS users expect them, and writing any output without ever leaving a
partial file under the final name."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from geopix2pix.errors import GeoPix2PixError, warn_user
from geopix2pix.runtime.folders import (
    cannot_make,
    make_folders,
    refuse_read_only,
    remove_folders,
)
from geopix2pix.runtime.partials import discard, partial_name, remove_stale

OUTPUT_BLOCK = 512  # the tile side of the GeoTIFFs geopix2pix writes (smaller rasters: less)
NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # a write's errors, which name no file


def gtiff_profile(dtype: str, count: int, crs, transform, width: int, height: int,
                  nodata: float | None, compress: str = "deflate",
                  blocksize: int = OUTPUT_BLOCK) -> dict:
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
    """Refuse to replace an existing output unless asked to, and a link there (even a broken
    one) in any case; make the parent folder, and remove the temporaries killed runs left for
    `path`."""
    return _prepare(Path(path), overwrite)[0]


def _prepare(path: Path, overwrite: bool, own: bool = False) -> tuple[Path, list[Path]]:
    """`check_can_write`, and the folders it made (outermost first). A file of the tool's
    `own` folders (a run's, a chips folder's) that is a link is replaced as any file is (a
    folder copied with ``cp -rs``, or a DVC or git-annex cache, keeps its files)."""
    refuse_special_file(path)
    if not own:  # (a path the user named: --json, predict's OUT)
        refuse_link(path)
    if os.path.lexists(path) and not overwrite:
        raise GeoPix2PixError(f"{path} already exists; pass --overwrite to replace it")
    refuse_read_only(path.parent, path)
    try:
        made = make_folders(path.parent)
    except OSError as exc:
        raise cannot_make(path.parent, exc, f" for {path.name}") from None
    remove_stale(path)
    return path, made


def refuse_link(path: Path) -> None:
    """Refuse an output the user named that is a link (even a broken one), with or without
    --overwrite: outputs are renamed into place, which would replace the link."""
    if path.is_symlink():
        raise GeoPix2PixError(f"{path} is a link (to {os.readlink(path)}): outputs are written "
                              "as new files renamed into place, which would replace the link; "
                              "give the path of the file it links to instead")


def refuse_special_file(path: Path, fix: str = "choose a file path") -> None:
    """Refuse an output that is, or links to, a device, a pipe or a socket (/dev/stdout): an
    output is written beside and renamed into place, which would replace it (a root user's
    /dev/stdout, for one), and --overwrite would not make that right."""
    try:
        mode = os.stat(path).st_mode  # (through a link)
    except (OSError, ValueError):  # nothing there (or a broken link): an ordinary output
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise GeoPix2PixError(f"{path} is a device, pipe or socket, not a file: outputs are "
                              f"written as new files renamed into place; {fix}")


@contextlib.contextmanager
def output_folder(path: str | os.PathLike, overwrite: bool, own: bool = False
                  ) -> Iterator[Path]:
    """`check_can_write` for a block that writes `path` (`own`: see `_prepare`): if the block
    fails (or is stopped), the folders made for it are removed again while empty, so a failed
    command leaves the output's folder as it was."""
    final, made = _prepare(Path(path), overwrite, own)
    try:
        yield final
    except BaseException:
        remove_folders(made)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False, own: bool = False
                ) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to `path` only if the block completes
    (`publish`), and remove it in any case (`discard`), with the folders made for it when the
    block fails (`output_folder`; `own`: a file of the tool's own folders, see `_prepare`)."""
    with output_folder(path, overwrite, own) as final:
        temp = partial_name(final)
        try:
            yield temp
            publish(temp, final, overwrite)
        except OSError as exc:  # writing the temporary: said of the output
            if exc.filename not in (str(temp), temp) and exc.errno not in NO_ROOM:
                raise
            raise cannot_write(final, exc.strerror or str(exc), exc.errno) from None
        finally:
            discard(temp)


def make_folder(path: Path) -> None:
    """Make the folder `path` (its parent exists); a failure (a full disk, out of inodes) is one
    line (`cannot_write`)."""
    try:
        path.mkdir()
    except OSError as exc:
        raise cannot_write(path, exc.strerror or str(exc), exc.errno) from None


def cannot_write(path: str | os.PathLike, reason: str, code: int | None = None,
                 hint: str | None = None) -> GeoPix2PixError:
    """The one-line error for an output that could not be written: which, why (the operating
    system's words) and what to do about it (by the error number `code`, or `hint`); for a full
    disk (or quota, or file-size limit) also how much room is left where it was written."""
    if code in NO_ROOM:
        return _no_room(Path(path), code)
    if hint is None and code in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "choose a folder you can write to"
    return GeoPix2PixError(f"cannot write {os.fspath(path)} ({reason}); "
                           f"{hint or 'choose another output folder'}")


def _no_room(path: Path, code: int) -> GeoPix2PixError:
    """`cannot_write` for a full disk (ENOSPC), an exhausted quota (EDQUOT) or a file larger
    than the file system or `ulimit -f` allow (EFBIG), with the room left in its folder."""
    folder = path.parent
    free, where = free_space(folder), f"the filesystem of {folder}{os.sep}"
    if free is None:
        room = f"{where} is full"
    elif code == errno.ENOSPC and free_inodes(folder) == 0:
        room = f"no more files fit on {where} (its inodes are used up; {format_size(free)} free)"
    else:
        room = f"{format_size(free)} free on {where}"
    if code == errno.EFBIG:
        what = f"the file is larger than this file system (or `ulimit -f`) allows ({room}); " \
               "choose an output folder on another file system"
    elif code == errno.EDQUOT:
        what = f"your disk quota there is used up ({room}); free some of your files or choose " \
               "another output folder"
    else:
        what = f"{room}; free some space or choose another output folder"
    return GeoPix2PixError(f"cannot write {path} ({os.strerror(code)}): {what}")


def free_space(folder: Path) -> int | None:
    """The bytes free to this user on the file system of `folder` (or of its nearest existing
    parent); None when it cannot be told."""
    try:
        return shutil.disk_usage(_existing(folder)).free
    except OSError:
        return None


def free_inodes(folder: Path) -> int | None:
    """How many more files the file system of `folder` (or of its nearest existing parent) can
    hold; None when it cannot be told (or it sets no limit)."""
    try:
        stat = os.statvfs(_existing(folder))
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return stat.f_favail if stat.f_files else None


def _existing(folder: Path) -> Path:
    """`folder`, or its nearest parent that exists (a folder not made yet is on its disk)."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def format_size(size: int) -> str:
    """`size` bytes in words: "512 bytes", "8.0 KiB", "1.2 MiB"."""
    if size < 1024:
        return f"{size} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        size /= 1024
        if size < 1024 or unit == "TiB":
            break
    return f"{size:.1f} {unit}"


# Files GDAL keeps beside a raster about it: statistics, metadata and colour stretches (.aux.xml,
# which QGIS and gdalinfo -stats write), pyramids (.ovr, QGIS's "Build pyramids") and a mask (.msk)
SIDECARS = (".aux.xml", ".ovr", ".msk")


def publish(temp: Path, final: Path, overwrite: bool) -> None:
    """Give the complete `temp` its final name, then remove the GDAL sidecars (`SIDECARS`) of
    the file it replaced, or left by one removed earlier: they describe other pixels (QGIS
    would show the old statistics, stretch and pyramids). Without `overwrite` never replace a
    file that appeared at `final` meanwhile (another run, or another name for the same file on
    a case-insensitive filesystem): a hard link fails rather than replace (`discard` then
    removes `temp`); where links are not supported, check and rename."""
    _give_name(temp, final, overwrite)
    for suffix in SIDECARS:
        sidecar = final.with_name(final.name + suffix)
        try:
            sidecar.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:  # the output itself is written: a warning, not a failure
            warn_user(f"{sidecar} describes the file {final} replaced and could not be removed "
                      f"({exc.strerror or exc}); remove it, or QGIS shows that file's "
                      "statistics and pyramids")


def _give_name(temp: Path, final: Path, overwrite: bool) -> None:
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


def replaced_inputs(outs: Sequence[Path], inputs: Sequence[Path | str]
                    ) -> dict[int, tuple[Path | str, str]]:
    """{index: (input, file)}: the outputs that are (would overwrite) one of the files an input
    raster reads: itself, or a file a VRT of it reads (a GDAL name, /vsicurl/..., is no file
    here)."""
    def identity(path: Path | str) -> tuple[int, int] | None:
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return stat.st_dev, stat.st_ino

    files: dict[tuple[int, int], tuple[Path | str, str]] = {}
    for path in inputs:
        for file in _files_read(path):  # (the raster itself first, as it was named)
            if (key := identity(file)) is not None:
                files.setdefault(key, (path, str(file)))
    return {index: files[key] for index, out in enumerate(outs)
            if (key := identity(out)) is not None and key in files}


def _files_read(path: Path | str) -> list[Path | str]:
    """The raster file `path` and the files GDAL reads for it (a VRT's sources, sidecars)."""
    import warnings

    import rasterio

    if not os.path.isfile(path):
        return [path]
    try:
        with warnings.catch_warnings(), rasterio.open(path) as dataset:
            warnings.simplefilter("ignore")
            return [path, *dataset.files]
    except Exception:  # not a raster: it is read (and refused) later
        return [path]


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
    """Write a text file of the tool's own folders in one rename, so readers see the old file or
    the whole new one."""
    with atomic_path(path, overwrite=True, own=True) as temp:
        temp.write_text(text)
