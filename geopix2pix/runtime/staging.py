"""Output folders built beside their destination and swapped in whole once complete.

A command that replaces a folder of outputs (export-chips, train with --overwrite) builds the
new one in a hidden folder beside it (`partials.partial_folder_name`: same filesystem, named
after this process) and swaps it in only when it is complete, so the earlier outputs stay
complete and usable until then, whatever stops the run.

The swap is one atomic exchange of the two names where the system has one (Linux's
``renameat2(RENAME_EXCHANGE)``): there is no moment without a complete folder at the final
name. Elsewhere the earlier folder is renamed aside (``...partial.earlier``), the new one in,
and the earlier removed; an exception between the two renames puts the earlier one back, and
a run killed between them (SIGKILL, a power cut) leaves it aside, which the next run puts back
(`remove_stale_folders`). Folders a killed run was building are removed by the next run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import time
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.partials import partial_folder_name, stale_folder

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def make_staging(final: Path) -> Path:
    """Create the hidden folder beside `final` that a run builds its outputs in."""
    staging = partial_folder_name(final)
    staging.mkdir()
    return staging


def _exchange(first: Path, second: Path) -> bool:
    """Swap the names of two existing paths atomically; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (musl before 1.2.5)
        return False
    return renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                     _RENAME_EXCHANGE) == 0


def swap_in(staging: Path, final: Path) -> None:
    """Put the complete folder `staging` at `final`, replacing what is there (see the module's
    docstring), with the permissions of the folder it replaces; the earlier folder is removed
    after."""
    if not final.exists():
        os.rename(staging, final)
        return
    with contextlib.suppress(OSError):
        staging.chmod(final.stat().st_mode & 0o7777)
    if _exchange(staging, final):
        shutil.rmtree(staging, ignore_errors=True)  # now the earlier folder
        return
    aside = partial_folder_name(final, earlier=True)
    os.rename(final, aside)
    try:
        os.rename(staging, final)
    except BaseException:
        if not final.exists():
            os.rename(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def remove_stale_folders(final: Path) -> None:
    """Remove the folders that killed runs were building beside `final`, and put back an
    earlier folder a killed swap left aside (when nothing took its place)."""
    stale: list[tuple[Path, str | None]] = []
    with contextlib.suppress(OSError), os.scandir(final.parent) as entries:
        stale = [(Path(e.path), stale_folder(e.name, final)) for e in entries
                 if e.is_dir(follow_symlinks=False)]
    for path, kind in sorted(stale, key=lambda item: item[1] != "earlier"):
        if kind == "earlier" and not os.path.lexists(final):
            with contextlib.suppress(OSError):  # failed: kept, the earlier outputs' only copy
                os.rename(path, final)
            continue
        if kind is not None:
            shutil.rmtree(path, ignore_errors=True)


def _left_aside(final: Path) -> Path | None:
    """The earlier folder a killed swap left aside, while nothing is at `final`."""
    if os.path.lexists(final):
        return None
    with contextlib.suppress(OSError), os.scandir(final.parent) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False) and stale_folder(entry.name, final) == \
                    "earlier":
                return Path(entry.path)
    return None


def wait_for_put_back(final: Path, seconds: float = 60.0) -> None:
    """Wait (up to `seconds`) while an earlier folder a killed swap left aside is not yet back
    at `final`: another process (torchrun's rank 0, on this host) puts it back
    (`remove_stale_folders`); GeoPix2PixError when it is still aside after that."""
    deadline = time.monotonic() + seconds
    while (aside := _left_aside(final)) is not None:
        if time.monotonic() >= deadline:
            raise GeoPix2PixError(
                f"{final} is missing and a killed run left it aside as {aside.name}, which "
                f"rank 0 did not put back within {seconds:g} s; rename it to {final.name} and "
                "run again")
        time.sleep(0.05)
