"""Writing a run's files: a failure to write one (a full disk, a read-only folder, a permission)
is a one-line GeoPix2PixError that names the file and gives the operating system's reason.

The writers fail in their own ways: Python's files raise OSError; ``torch.save`` into a Python
file raises a RuntimeError whose context is the OSError; other data writes a rasterio error.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from geopix2pix.errors import GeoPix2PixError, causes, data_errors, describe
from geopix2pix.raster.write import cannot_write


def write_failure(exc: BaseException) -> tuple[str, int | None] | None:
    """Why a write failed with ``exc``: the reason in words and the OS error number (None when
    not the OS's); None when ``exc`` is not a failure to write (a bug, not the user's to fix)."""
    for error in causes(exc, context=True):
        if isinstance(error, OSError):
            return error.strerror or describe(error), error.errno
        if isinstance(error, data_errors()):
            return describe(error), None
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Run the block that writes ``path``; a failure to write becomes one line
    (``raster.write.cannot_write``: the file, the reason, what to do)."""
    try:
        yield
    except GeoPix2PixError:
        raise
    except Exception as exc:
        failure = write_failure(exc)
        if failure is None:
            raise
        raise cannot_write(path, *failure) from exc
