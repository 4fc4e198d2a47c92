"""Errors a user can fix: the CLI prints them on one line and exits with status 2.

GDAL's errors reach us through rasterio as a chain: rasterio raises "Read failed. See previous
exception for details." from the GDAL error that says what failed, itself raised from the
decoder's. `describe` makes that chain one line."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator


class GeoPix2PixError(Exception):
    """Bad input the user can fix: the CLI prints it on one line and exits with status 2."""


class ModelError(GeoPix2PixError, ValueError):
    """A network or model description that cannot be built as asked (an unknown generator, a
    chip size it cannot take, a bad band count). Raised by `models` and `training` without the
    caller's context; the caller that knows it (an option, a model file) says it in its own
    line, and one that does not still gets a one-line error, never a traceback."""


class GeoPix2PixWarning(UserWarning):
    """Something the user should know about a result that was still produced (a scene predicted
    at another pixel size than the training's, a scene of several that failed): the Python API
    issues it through `warnings` where no callback takes it; the CLI prints "warning: ..."."""


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep  # frames a warning skips


def warn_user(message: str) -> None:
    """Issue `message` as a GeoPix2PixWarning at the line that called geopix2pix (not inside
    it), every time (Python's default filter shows a message once per line, so a notebook
    cell run again would say nothing). The command line prints its own "warning: ..." lines
    and ignores these."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE):
        frame = frame.f_back
    if frame is None:
        warnings.warn_explicit(message, GeoPix2PixWarning, "geopix2pix", 0, registry=None)
        return
    # no module_globals: in a REPL or `python -c`, __main__'s loader cannot give its source
    # and warnings would raise ImportError for it
    warnings.warn_explicit(message, GeoPix2PixWarning, frame.f_code.co_filename, frame.f_lineno,
                           module=frame.f_globals.get("__name__"), registry=None)


class ReportedElsewhere(GeoPix2PixError):
    """An error another process reports (rank 0 under torchrun): this one stops with exit
    status 2 without printing it a second time."""


_REPORTED = "_geopix2pix_reported"


def mark_reported(exc: BaseException) -> None:
    """Note that `exc` was already shown to the user (see `error_line`)."""
    setattr(exc, _REPORTED, True)


def was_reported(exc: BaseException) -> bool:
    """Whether `exc` was already shown to the user, here or by another process."""
    return isinstance(exc, ReportedElsewhere) or getattr(exc, _REPORTED, False)


def error_line(exc: BaseException) -> str | None:
    """The one line the user reads for `exc` ("Error: ..."): for bad input (GeoPix2PixError)
    and the errors of reading or writing data; None for anything else (a bug)."""
    if isinstance(exc, GeoPix2PixError):
        return f"Error: {exc}"
    if isinstance(exc, data_errors()):
        return f"Error: {describe(exc)}"
    return None


def refuse_spawned_reimport(function: str) -> None:
    """Raise when `function` runs while a spawned worker process imports the user's script
    (multiprocessing runs it as ``__mp_main__``): a script calling it without an
    ``if __name__ == "__main__":`` guard would start it again in every worker."""
    frame = sys._getframe(1)
    while frame is not None:  # the script's own top level, run as __mp_main__, is calling
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__mp_main__":
            break
        frame = frame.f_back
    if frame is not None:
        raise GeoPix2PixError(f"{function} was called while a worker process imported your "
                              f"script; put the call under `if __name__ == \"__main__\":`")


PLACEHOLDER = "See previous exception"  # rasterio's message that points down the chain
READ_FAILURES = ("IReadBlock failed", "Read failed")


def data_errors() -> tuple[type[BaseException], ...]:
    """The errors of reading or writing data (GDAL through rasterio, the OS): a damaged or
    missing file, a full disk, a permission; the user's to fix, not a bug of ours."""
    from rasterio.errors import RasterioError

    try:
        from rasterio._err import CPLE_BaseError
    except ImportError:  # rasterio's private module moved: its public errors still count
        return RasterioError, OSError
    return RasterioError, CPLE_BaseError, OSError


def causes(exc: BaseException, context: bool = False) -> Iterator[BaseException]:
    """`exc` and the errors it was raised from (with `context`, or while handling), outermost
    first, each once."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or (current.__context__ if context else None)


def describe(exc: BaseException, hint: bool = True) -> str:
    """One line for `exc` and the errors it was raised from: each message that says something
    new, outermost first, and (with `hint`) for a block that failed to decode a hint at what to
    check."""
    messages: list[str] = []
    read_failure = False
    for cause in causes(exc):
        text = " ".join(str(cause).split()).rstrip(".")
        read_failure |= any(failure in text for failure in READ_FAILURES)
        if text and PLACEHOLDER not in text and not any(text in m for m in messages):
            messages.append(text)
    line = ": ".join(messages) or type(exc).__name__
    if read_failure and hint:
        line += " (the file may be damaged or incomplete; `gdalinfo -checksum FILE` reads " \
                "every block)"
    return line
