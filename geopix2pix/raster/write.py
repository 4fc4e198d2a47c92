"""Writing GeoTIFFs as QGIS users expect them, and writing any output without ever leaving a
partial file under the final name."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from geopix2pix.errors import GeoPix2PixError

COMPRESSIONS = ("deflate", "zstd", "lzw", "none")


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
    """Refuse to replace an existing output unless asked to; make the parent folder."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise GeoPix2PixError(f"{path} already exists; pass --overwrite to replace it")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoPix2PixError(f"cannot make the folder {path.parent} for {path.name} "
                              f"({exc.strerror or exc}); choose another output folder") from None
    return path


def partial_name(path: Path) -> Path:
    """A unique temporary name beside `path`; it never looks like a finished output."""
    return path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; rename it to `path` only if the block completes.

    Without `overwrite` the rename never replaces a file that appeared at `path` meanwhile
    (another run, or another name for the same file on a case-insensitive filesystem)."""
    final = check_can_write(path, overwrite)
    temp = partial_name(final)
    try:
        yield temp
        if overwrite:
            os.replace(temp, final)
        else:
            _rename_without_replacing(temp, final)
    finally:
        if temp.exists():
            temp.unlink()
        aux = temp.with_name(temp.name + ".aux.xml")
        if aux.exists():
            aux.unlink()


def _rename_without_replacing(temp: Path, final: Path) -> None:
    """Move `temp` to `final` unless `final` exists: a hard link, which fails rather than
    replace (the caller removes `temp`); where links are not supported, check and rename."""
    appeared = GeoPix2PixError(f"{final} appeared while it was being written and was kept; "
                               "pass --overwrite to replace it")
    try:
        os.link(temp, final)
    except FileExistsError:
        raise appeared from None
    except OSError:  # no hard links on this filesystem (or `temp` is a folder)
        if final.exists():
            raise appeared from None
        os.replace(temp, final)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a text file in one rename, so readers see the old file or the whole new one."""
    with atomic_path(path, overwrite=True) as temp:
        temp.write_text(text)


def prepare_output_dir(path: str | os.PathLike, overwrite: bool, marker: str) -> Path:
    """Create an output folder, refusing a non-empty one without --overwrite.

    With --overwrite the completeness `marker` file goes first, so a run killed while clearing
    never leaves a folder that looks complete.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GeoPix2PixError(f"{path} exists and is not a folder; choose another output folder")
    if path.exists() and any(path.iterdir()):
        if not overwrite:
            raise GeoPix2PixError(
                f"{path} is not empty; pass --overwrite to replace its contents or choose another "
                "output folder"
            )
        (path / marker).unlink(missing_ok=True)
        for child in path.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path
