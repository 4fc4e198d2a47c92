"""Output folders replaced in place (the demo's): with --overwrite the earlier folder is set aside
whole while the new one is built where it was, and removed only once the new one is complete.

The demo's outputs record their own paths (its chips name its scenes, its run its chips, its
evaluations their rasters), so they cannot be built in a hidden folder and renamed into place as
export-chips and train are (`runtime.staging`): the paths would name the hidden folder. Instead
the earlier folder is renamed aside (one rename, to `partials.partial_folder_name(...,
earlier=True)`), the new run writes at the final path, and the earlier folder is removed when
the run completes, or put back when it fails or is stopped. A run killed outright (SIGKILL, a
power cut) cannot put it back: the next run into that folder does, first (`put_back_earlier`),
unless the killed run had completed (its marker is written last).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.folders import (
    Owned,
    cannot_make,
    check_output_dir,
    make_folders,
    refuse_read_only,
    remove_outputs,
)
from geopix2pix.runtime.partials import partial_folder_name, stale_folder


@contextlib.contextmanager
def replaced_when_complete(path: str | os.PathLike, overwrite: bool, marker: str, *,
                           owned: Owned, command: str) -> Iterator[Path]:
    """The output folder of `command` to write in, checked as `folders.check_output_dir`
    checks it (--overwrite for a non-empty one, nothing but what `owned` names there). An
    earlier run's outputs are set aside while the body runs, removed when it returns, put back
    when it raises (a failure, Ctrl-C or SIGTERM); `marker` is the file the run writes last."""
    path = Path(path)
    full = Path(os.path.realpath(path))
    put_back_earlier(full, marker, owned)
    aside = None
    if check_output_dir(path, overwrite, marker, owned, (), command, None):
        refuse_read_only(full.parent, path)
        aside = partial_folder_name(full, earlier=True)
        os.rename(full, aside)
    try:
        try:
            make_folders(path)
        except OSError as exc:
            raise cannot_make(path, exc) from None
        yield path
    except BaseException:
        if aside is not None:
            _put_back(full, aside, owned)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def put_back_earlier(full: Path, marker: str, owned: Owned) -> None:
    """Put back the earlier folder a killed run into `full` left aside, removing what that run
    wrote, or (the run had completed: its `marker` is there) remove the earlier folder."""
    with contextlib.suppress(OSError), os.scandir(full.parent) as entries:
        left = [Path(e.path) for e in entries if e.is_dir(follow_symlinks=False)
                and stale_folder(e.name, full) == "earlier"]
    for aside in sorted(left, key=lambda p: p.stat().st_mtime, reverse=True):
        if (full / marker).is_file():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            _put_back(full, aside, owned)


def _put_back(full: Path, aside: Path, owned: Owned) -> None:
    """Remove this (unfinished) run's outputs from `full` and rename `aside` back to it. What
    the run did not write stays, and so does `aside` then, with a line saying where it is."""
    remove_outputs(full, owned)
    with contextlib.suppress(FileNotFoundError):
        try:
            full.rmdir()
        except OSError:
            raise GeoPix2PixError(
                f"{full} holds files the unfinished run did not write, so the earlier outputs "
                f"it replaced were not put back: they are whole in {aside}; move those files "
                f"away and rename {aside.name} to {full.name}") from None
    os.rename(aside, full)
