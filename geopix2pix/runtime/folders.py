"""Output folders (export-chips, train, demo): what a command may remove there with --overwrite.

A command names what it writes (`Owned`: file patterns, and folders with what may be in them,
recursively). With --overwrite only those are removed; a folder holding anything else is
refused (naming it), as is a folder that is, or contains, one of the command's inputs. Files
that operating systems and apps leave behind (.DS_Store, Thumbs.db, SQLite journals of an index
open in QGIS) count as the command's.

export-chips and train (`open_output_dir`) keep an earlier run's outputs complete and in place
until the new ones are: the new run writes into a hidden folder beside them, swapped in whole
(`runtime.staging`); a run that fails or is stopped before then removes what it wrote, and the
folders it made. The demo, whose outputs record their own paths, sets an earlier folder aside
instead while it writes in its place (`runtime.aside`).
A folder the command cannot write in (read-only) is refused before any work.
"""

from __future__ import annotations

import contextlib
import fnmatch
import itertools
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.partials import stale_folder
from geopix2pix.runtime.staging import make_staging, remove_stale_folders, swap_in

# left by file browsers and apps, anywhere: never the user's work
LITTER = (".DS_Store", "._*", "Thumbs.db", "desktop.ini")


def is_litter(entry: Path) -> bool:
    """Whether `entry` is a file that file browsers and apps leave anywhere (never a folder)."""
    return not (entry.is_dir() and not entry.is_symlink()) and \
        any(fnmatch.fnmatchcase(entry.name, p) for p in LITTER)


def file_patterns(name: str) -> tuple[str, ...]:
    """Glob patterns of what writing the file `name` leaves: the file, GDAL's .aux.xml and
    SQLite's journals beside it, and its temporaries (`partials.partial_name`, also nested, and
    the `.NAME.*.tmp` model files were written as before)."""
    stem, suffix = Path(name).stem, Path(name).suffix
    partial = f".{stem}.*.partial{suffix}"
    return (name, f"{name}.aux.xml", f"{name}-wal", f"{name}-shm", f"{name}-journal",
            f"{partial}*", f".{partial}*", f".{name}.*.tmp")


@dataclass(frozen=True)
class Owned:
    """What a command writes in a folder: `files` (names or glob patterns) and `folders` (name
    -> what may be in it)."""

    files: Sequence[str] = ()
    folders: Mapping[str, Owned] = field(default_factory=dict)

    def owns(self, entry: Path) -> bool:
        """Whether `entry` (in the folder) is one of the command's, by its name."""
        if entry.is_dir() and not entry.is_symlink():
            return entry.name in self.folders or self._stale_staging(entry.name)
        return any(fnmatch.fnmatchcase(entry.name, p) for f in self.files
                   for p in file_patterns(f))

    def _stale_staging(self, name: str) -> bool:
        """Whether the folder `name` is what a killed run left while building (or swapping in)
        one of our folders (`runtime.staging`)."""
        return any(stale_folder(name, Path(ours)) for ours in self.folders)

    def foreign(self, folder: Path) -> list[str]:
        """The entries of `folder` (relative paths, folders with a trailing /) that the command
        does not write; a folder of ours is looked into."""
        found = []
        for entry in sorted(folder.iterdir()):
            name = entry.name
            is_folder = entry.is_dir() and not entry.is_symlink()
            if not is_folder and is_litter(entry):
                continue
            if is_folder and self._stale_staging(name):
                continue
            if is_folder:
                inner = self.folders.get(name)
                found += [f"{name}/"] if inner is None else \
                    [f"{name}/{sub}" for sub in inner.foreign(entry)]
            elif not any(fnmatch.fnmatchcase(name, p)
                         for f in self.files for p in file_patterns(f)):
                found.append(name)
        return found


@dataclass
class OutputDir:
    """A command's output folder: `final`, where its outputs end up, and `path`, where this run
    writes them: a hidden staging folder beside `final` (`runtime.staging`), or `final` itself
    when that was empty."""

    final: Path
    path: Path
    owned: Owned
    created: list[Path] = field(default_factory=list)  # folders this run made, outermost first
    committed: bool = False
    replaced: bool = False  # whether the commit replaced earlier outputs at `final`

    @property
    def staged(self) -> bool:
        return self.path != self.final

    def commit(self) -> None:
        """Put this run's outputs at `final` (swapping the staging folder in, the earlier
        outputs out); from then on `path` is `final`."""
        if self.staged and not self.committed:
            self.replaced = os.path.lexists(self.final)
            swap_in(self.path, Path(os.path.realpath(self.final)))
        self.path, self.committed = self.final, True

    def abandon(self, exc: BaseException | None = None) -> None:
        """Remove what this run wrote, when it failed or was stopped (`exc`) before `commit`:
        its staging folder, or its outputs in `final`, and the folders it made (only when
        empty). An error message of ours names the outputs where the user will look for them,
        in `final`, not in the hidden staging folder that is gone."""
        if self.committed:
            return
        if self.staged and isinstance(exc, GeoPix2PixError) and exc.args:
            exc.args = (str(exc.args[0]).replace(str(self.path), str(self.final)),
                        *exc.args[1:])
        if self.staged:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            remove_outputs(self.path, self.owned)
        remove_folders(self.created)


def open_output_dir(path: str | os.PathLike, overwrite: bool, marker: str, *, owned: Owned,
                    inputs: Sequence[str | os.PathLike] = (), command: str = "this command",
                    resume: str | None = None, stage_new: bool = True) -> OutputDir:
    """The output folder of `command`, checked as by `check_output_dir`, to write in: an
    earlier run's outputs (--overwrite) stay in place, complete, while this run writes into a
    staging folder beside them; so does a folder that does not exist yet (unless not
    `stage_new`: then this run makes it and writes in it). An empty folder is written in.
    Staging folders that killed runs left beside it are removed first."""
    path = Path(path)
    full = Path(os.path.realpath(path))
    remove_stale_folders(full)
    earlier = check_output_dir(path, overwrite, marker, owned, inputs, command, resume)
    if path.is_dir() and not earlier:
        _check_writable(path, path)
        return OutputDir(path, path, owned)
    if not earlier and not stage_new:
        refuse_read_only(path, path)
        return OutputDir(path, path, owned, _make_folders(path))
    if earlier:
        _check_swappable(path, full)
    created = _make_folders(full.parent)
    _check_writable(full.parent, path, created)
    try:
        staging = make_staging(full)
    except OSError as exc:
        remove_folders(created)
        raise _cannot_write(full.parent, path, exc) from None
    return OutputDir(path, staging, owned, created)


def check_output_dir(path: Path, overwrite: bool, marker: str, owned: Owned,
                     inputs: Sequence[str | os.PathLike], command: str,
                     resume: str | None) -> bool:
    """Refuse an output folder `command` may not write in: a non-empty one without `overwrite`,
    one holding anything but `marker` and what `owned` names, or any of `inputs` (see the
    module's docstring); whether it holds an earlier run's outputs, which --overwrite
    replaces."""
    if path.exists() and not path.is_dir():
        raise GeoPix2PixError(f"{path} exists and is not a folder; choose another output folder")
    _refuse_inputs(path, inputs, command)
    entries = [e for e in sorted(path.iterdir()) if not is_litter(e)] if path.exists() else []
    if entries:
        _refuse_foreign(path, Owned((marker, *owned.files), owned.folders), command)
        if not overwrite:
            what = (f"the outputs of an earlier {command}" if (path / marker).exists()
                    else f"what an unfinished {command} left")
            options = "pass --overwrite to replace them"
            if resume and (path / marker).exists():
                options = f"pass {resume}, --overwrite to replace them,"
            raise GeoPix2PixError(f"{path} is not empty (it holds {what}); {options} or choose "
                                  "another output folder")
    return bool(entries)


def make_folders(folder: Path) -> list[Path]:
    """Make `folder` and its missing parents, top-down; return those this call made, outermost
    first: not one another process made meanwhile, nor any of a path through "..", which the
    system resolves (through links) where the path's text does not. When one cannot be made,
    those made above it go again and the OSError propagates."""
    made: list[Path] = []
    try:
        if ".." not in folder.parts:
            missing = itertools.takewhile(lambda each: not os.path.lexists(each),
                                          (folder, *folder.parents))
            for each in reversed(list(missing)):
                try:
                    each.mkdir()
                except FileExistsError:
                    continue
                made.append(each)
        folder.mkdir(parents=True, exist_ok=True)  # (done already, or a broken link's error)
    except OSError:
        remove_folders(made)
        raise
    return made


def remove_folders(made: Sequence[Path]) -> None:
    """Remove the folders `made` (outermost first, as `make_folders` returns them) while they
    are empty: one that holds something stays, and so do its parents."""
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _make_folders(path: Path) -> list[Path]:
    """`make_folders`, its failure one line."""
    try:
        return make_folders(path)
    except OSError as exc:
        raise cannot_make(path, exc) from None


def cannot_make(folder: Path, exc: OSError, what: str = "") -> GeoPix2PixError:
    """The one-line error of `make_folders(folder)` failing with `exc` (to hold `what`, e.g.
    " for out.tif"): naming the file in the way where the folder or a parent is one."""
    there = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), None)
    if there is not None and there.exists() and not there.is_dir():
        return GeoPix2PixError(f"cannot make the folder {folder}{what}: {there} is a file, not a "
                               "folder; choose another output folder")
    return GeoPix2PixError(f"cannot make the folder {folder}{what} ({exc.strerror or exc}); "
                           "choose another output folder")


def _cannot_write(folder: Path, out: Path, exc: OSError | None = None) -> GeoPix2PixError:
    reason = (exc.strerror if exc is not None else None) or \
        ("read-only file system" if _read_only_fs(folder) else "permission denied")
    where = "" if folder == out else f" (to write {out})"
    return GeoPix2PixError(f"cannot write in the folder {folder}{where}: {reason.lower()}; "
                           "make it writable or choose another output folder")


def _read_only_fs(folder: Path) -> bool:
    with contextlib.suppress(OSError, AttributeError):
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    return False


def refuse_read_only(folder: Path, out: Path) -> None:
    """Refuse, before any work, to write `out` in `folder` (or, where that does not exist yet,
    in the folder it would be made in) when this process cannot: its mode, or a read-only file
    system. One line naming the folder and what to do."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
    if not existing.is_dir():  # making the folder fails, and says so
        return
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only_fs(existing):
        raise _cannot_write(existing, out)


def _check_writable(folder: Path, out: Path, created: Sequence[Path] = ()) -> None:
    """`refuse_read_only`, removing the folders this run `created` when refused."""
    try:
        refuse_read_only(folder, out)
    except GeoPix2PixError:
        remove_folders(list(created))
        raise


def _check_swappable(path: Path, full: Path) -> None:
    """Refuse to replace a folder that cannot be swapped with one built beside it (a mount
    point), rather than fail once the new outputs are built; and one not writable (its earlier
    outputs could not be removed)."""
    _check_writable(full, path)
    swap = "--overwrite builds the new outputs beside it and swaps them in"
    if os.path.ismount(full):
        raise GeoPix2PixError(f"{path} is a mount point: {swap}, which a mount point does not "
                              "allow; empty it first, or choose a folder inside it")
    with contextlib.suppress(OSError):
        if os.path.samefile(full, os.getcwd()):
            raise GeoPix2PixError(f"{path} is the current folder: {swap}, which would leave "
                                  f"this shell in the removed one; run from its parent folder "
                                  f"(-o {full.name})")


def remove_outputs(path: Path, owned: Owned) -> None:
    """Remove what a run that failed or was stopped wrote in its (prepared) folder, so that it
    is empty again and a rerun needs no --overwrite."""
    for entry in sorted(path.iterdir()) if path.is_dir() else []:
        if owned.owns(entry):
            _remove(entry)


def _relation(candidate: Path, folder: Path) -> str | None:
    """'is' when `candidate` is `folder`, 'contains' when it lies inside it, else None (by file
    identity, so links and case-insensitive names count)."""
    for chain in dict.fromkeys((Path(os.path.abspath(candidate)), candidate.resolve())):
        for place in (chain, *chain.parents):
            with contextlib.suppress(OSError):
                if os.path.samefile(place, folder):
                    return "is" if place == chain else "contains"
    return None


def _refuse_inputs(path: Path, inputs: Sequence[str | os.PathLike], command: str) -> None:
    """Refuse an output folder that is, or contains, one of the command's inputs."""
    if not path.exists():
        return
    for item in inputs:
        relation = _relation(Path(item), path)
        if relation:
            raise GeoPix2PixError(
                f"the output folder {path} {relation} an input of {command} ({item}); choose an "
                "output folder apart from the inputs"
            )


def _refuse_foreign(path: Path, owned: Owned, command: str) -> None:
    """Refuse a folder holding entries `command` does not write: --overwrite never removes
    them."""
    foreign = owned.foreign(path)
    if not foreign:
        return
    listed = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                       else "")
    raise GeoPix2PixError(
        f"{path} is not empty: it holds {listed}, which {command} did not write and "
        "--overwrite would not remove; move them away or choose another output folder"
    )


def _remove(child: Path) -> None:
    """Remove a file, a link (not what it points to) or a folder tree."""
    if child.is_dir() and not child.is_symlink():
        shutil.rmtree(child)
    else:
        child.unlink(missing_ok=True)
