"""Output folders replaced in place (the demo's): with --overwrite the earlier outputs are set
aside whole, in a hidden folder inside the output folder, while the new ones are written where
they were, and removed only once the new ones are complete.

The demo's outputs record their own paths (its chips name its scenes, its run its chips, its
evaluations their rasters), so they cannot be built in a hidden folder beside the output folder
and swapped in, as export-chips and train are (`runtime.staging`): the paths would name the
hidden folder. Instead each earlier output moves, by one rename, into
`.geopix2pix-earlier.WHERE-PID-RANDOM.partial.STATE` inside the output folder, which itself
stays where it is (a mount point, the current folder, a link, a folder in a parent the user
cannot write in all work). STATE says how far the run got, each step one rename:
- `moving`: the earlier outputs are being moved in (no new output yet);
- `kept`: all moved; the new run writes in the output folder (complete once it wrote its
  marker, the file it writes last: the earlier one is in the hidden folder);
- `returning`: the new run failed or was stopped, its outputs are removed, and the earlier ones
  are being moved back;
- `done`: the new run is complete; the earlier outputs are being removed.

A run that fails or is stopped before it is complete moves them back (Ctrl-C and SIGTERM wait
while outputs move). A run killed outright (SIGKILL, the out-of-memory killer), or stopped twice,
cannot: the next run into that folder does, first, as its STATE and the marker say (the same
rule, `_finish`). One set aside by another process that may still run (another run now, or one
on another host, container or before a restart, which cannot be told apart) is never touched:
the run is refused, naming it.
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
    is_litter,
    make_folders,
    refuse_read_only,
    remove_outputs,
)
from geopix2pix.runtime.partials import folder_state, partial_folder_name
from geopix2pix.runtime.stopping import deferred_stop_signals

ASIDE = "geopix2pix-earlier"  # (hidden: partial_folder_name puts a dot before it)
MOVING, KEPT, RETURNING, DONE = ".moving", ".kept", ".returning", ".done"
_ACTIVE: set[str] = set()  # the hidden folders (names without their state) of this process's
# replacements still running (another thread's run is as much another run as another process's)


@contextlib.contextmanager
def replaced_when_complete(path: str | os.PathLike, overwrite: bool, *, owned: Owned,
                           marker: str, command: str) -> Iterator[Path]:
    """The output folder of `command` to write in, checked as `folders.check_output_dir`
    checks it (--overwrite for a non-empty one, nothing but what `owned` names there). Its
    earlier outputs are set aside while the body runs, removed when it returns, moved back
    when it raises (a failure, Ctrl-C or SIGTERM) before the run wrote `marker`, the file it
    writes last (once written, the run is complete, and it stays). Callers that report a stop
    call `put_back_earlier` first, before they look at the folder."""
    path = Path(path)
    put_back_earlier(path, owned, marker)
    if not check_output_dir(path, overwrite, marker, owned, (), command, None):
        try:
            make_folders(path)
        except OSError as exc:
            raise cannot_make(path, exc) from None
        yield path
        return
    refuse_read_only(path, path)
    base = partial_folder_name(path / ASIDE)
    aside = base.with_name(base.name + MOVING)
    _ACTIVE.add(base.name)
    try:
        with deferred_stop_signals(lambda: None):
            aside = _set_aside(path, aside)
        yield path
    except BaseException:
        with deferred_stop_signals(lambda: None):
            _finish(path, aside, owned, marker)
        raise
    else:
        with deferred_stop_signals(lambda: None):
            _finish(path, aside, owned, marker)
    finally:
        _ACTIVE.discard(base.name)


def _finish(path: Path, aside: Path, owned: Owned, marker: str) -> None:
    """End a replacement whose earlier outputs are in `aside` (`kept`): the run is complete
    where it wrote `marker` (the earlier one moved aside with the rest), so they are removed;
    else they go back (`_move_back`). A stop at any moment leaves a state the next run finishes
    the same way."""
    if aside.name.endswith(KEPT) and (path / marker).is_file():
        done = aside.with_name(aside.name.removesuffix(KEPT) + DONE)
        os.rename(aside, done)
        aside = done
    if aside.name.endswith(DONE):
        shutil.rmtree(aside)
    else:
        _move_back(path, aside, owned)


def _set_aside(path: Path, moving: Path) -> Path:
    """Move every entry of `path` into the new folder `moving` (state `moving`); returns its
    name once all are in it (state `kept`)."""
    moving.mkdir()
    for entry in sorted(path.iterdir()):
        if entry != moving:
            os.rename(entry, moving / entry.name)
    kept = moving.with_name(moving.name.removesuffix(MOVING) + KEPT)
    os.rename(moving, kept)
    return kept


def put_back_earlier(path: Path, owned: Owned, marker: str) -> None:
    """Finish what a killed (or in this process, stopped twice) run into `path` left of its
    earlier outputs (`_finish`): move them back (and remove its own unfinished ones), or
    remove them where it had completed (written `marker`); refuse (one line) where the run
    that set them aside may still run."""
    found: list[tuple[Path, tuple[str, str, int] | None]] = []
    with contextlib.suppress(OSError), os.scandir(path) as entries:  # (none: a new folder)
        found = [(Path(e.path), folder_state(e.name, path / ASIDE)) for e in entries
                 if e.is_dir(follow_symlinks=False)]
    for aside, state in found:
        if state is None:
            continue
        suffix, writer, pid = state
        if writer != "gone" and not _ours_and_over(aside, writer, pid):
            raise GeoPix2PixError(f"{path} {_left(aside, suffix, pid)}")
        with deferred_stop_signals(lambda: None):
            _finish(path, aside, owned, marker)


def _ours_and_over(aside: Path, writer: str, pid: int) -> bool:
    """Whether the hidden folder `aside` is this process's, of a replacement no longer running
    (stopped twice: finished by the next run; not another thread's, nor another host's)."""
    return writer == "running" and pid == os.getpid() and \
        aside.name.rsplit(".", 1)[0] not in _ACTIVE


def unfinished(path: Path) -> bool:
    """Whether `path` holds earlier outputs this process set aside and did not finish putting
    back (stopped twice; the next run into it finishes it)."""
    with contextlib.suppress(OSError), os.scandir(path) as entries:
        return any((state := folder_state(e.name, path / ASIDE)) is not None and
                   _ours_and_over(Path(e.path), state[1], state[2]) for e in entries)
    return False


def _left(aside: Path, suffix: str, pid: int) -> str:
    """What a hidden folder of a run that may still be running holds, and what to do if none is
    (its process `pid` is gone: it ran on another machine or container, or before a restart)."""
    by = f"by process {pid} (still running, or one of another machine or before a restart)"
    if suffix == DONE:
        return (f"is complete, and {aside.name} holds what is left of the outputs it replaced, "
                f"being removed {by}; if none is running, delete {aside.name}")
    if suffix == KEPT:
        return (f"holds the unfinished outputs of a run {by}, and {aside.name} the earlier ones "
                "it replaces; if none is running, delete the run's outputs, move everything in "
                f"{aside.name} (hidden files too) back, and delete it")
    return (f"holds earlier outputs being moved in or out of {aside.name} {by}; if none is "
            f"running, move everything in {aside.name} (hidden files too) back, and delete it")


def _move_back(path: Path, aside: Path, owned: Owned) -> None:
    """Put the earlier outputs set aside in `aside` back into `path`. After the move in was
    complete (`kept`), first remove what the run that set them aside wrote in their place, then
    mark the folder `returning`, so that a move back cut short is only ever continued (never
    again removing what is back)."""
    if not aside.is_dir():  # (failed before it was made)
        return
    if aside.name.endswith(KEPT):
        remove_outputs(path, owned)
        returning = aside.with_name(aside.name.removesuffix(KEPT) + RETURNING)
        os.rename(aside, returning)
        aside = returning
    entries = sorted(aside.iterdir())
    for entry in entries:  # what is in the way, before anything moves: litter goes
        there = path / entry.name
        if os.path.lexists(there) and is_litter(there):
            there.unlink()
        elif os.path.lexists(there):
            raise GeoPix2PixError(
                f"{there} is in the way of the earlier output of that name, set aside whole in "
                f"{aside}; move it away and run again")
    for entry in entries:
        os.rename(entry, path / entry.name)
    aside.rmdir()
