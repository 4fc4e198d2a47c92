"""Writing a run's files: a failure to write one (a full disk, a read-only folder, a permission)
is a one-line GeoPix2PixError that names the file and gives the operating system's reason.

The writers fail in their own ways: Python's files raise OSError; safetensors raises its own
SafetensorError ("Error while serializing: I/O error: No space left on device (os error 28)");
``torch.save`` into a Python file raises a RuntimeError whose context is the OSError.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

from geopix2pix.errors import GeoPix2PixError, causes, data_errors, describe

_SAFETENSORS_IO = re.compile(r"I/O error: (?P<reason>.+?)(?: \(os error \d+\))?$")


def _is_safetensors_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "SafetensorError"


def write_failure(exc: BaseException) -> str | None:
    """The reason, in words, why a write failed with ``exc``; None when ``exc`` is not a failure
    to write (a bug, not the user's to fix)."""
    for error in causes(exc, context=True):
        if isinstance(error, OSError):
            return error.strerror or describe(error)
        if _is_safetensors_error(error):
            text = " ".join(str(error).split())
            match = _SAFETENSORS_IO.search(text)
            return match.group("reason") if match else text
        if isinstance(error, data_errors()):
            return describe(error)
    return None


@contextlib.contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Run the block that writes ``path``; a failure to write becomes
    ``GeoPix2PixError("cannot write PATH: REASON")``."""
    try:
        yield
    except GeoPix2PixError:
        raise
    except Exception as exc:
        reason = write_failure(exc)
        if reason is None:
            raise
        raise GeoPix2PixError(f"cannot write {os.fspath(path)}: {reason}") from exc
