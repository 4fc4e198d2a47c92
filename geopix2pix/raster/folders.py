"""Output folders (export-chips, train, demo): what a command may remove there with --overwrite.

A command names what it writes (`Owned`: file patterns, and folders with what may be in them,
recursively). With --overwrite only those are removed; a folder holding anything else is
refused (naming it), as is a folder that is, or contains, one of the command's inputs. Files
that operating systems and apps leave behind (.DS_Store, Thumbs.db, SQLite journals of an index
open in QGIS) count as the command's. The completeness marker goes first, so a run killed while
clearing never leaves a folder that looks complete.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError

# left by file browsers and apps, anywhere: never the user's work
LITTER = (".DS_Store", "._*", "Thumbs.db", "desktop.ini")


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
            return entry.name in self.folders
        return any(fnmatch.fnmatchcase(entry.name, p) for f in self.files
                   for p in file_patterns(f))

    def foreign(self, folder: Path) -> list[str]:
        """The entries of `folder` (relative paths, folders with a trailing /) that the command
        does not write; a folder of ours is looked into."""
        found = []
        for entry in sorted(folder.iterdir()):
            name = entry.name
            is_folder = entry.is_dir() and not entry.is_symlink()
            if not is_folder and any(fnmatch.fnmatchcase(name, p) for p in LITTER):
                continue
            if is_folder:
                inner = self.folders.get(name)
                found += [f"{name}/"] if inner is None else \
                    [f"{name}/{sub}" for sub in inner.foreign(entry)]
            elif not any(fnmatch.fnmatchcase(name, p)
                         for f in self.files for p in file_patterns(f)):
                found.append(name)
        return found


def prepare_output_dir(path: str | os.PathLike, overwrite: bool, marker: str, *, owned: Owned,
                       inputs: Sequence[str | os.PathLike] = (),
                       command: str = "this command", resume: str | None = None) -> Path:
    """Create the output folder of `command`, refusing a non-empty one without --overwrite, and
    with it one holding anything but what `owned` says the command writes, or any of `inputs`
    (see the module's docstring). `marker` is the file that says a run completed, or with
    `resume` (how to continue it) one that can be continued."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise GeoPix2PixError(f"{path} exists and is not a folder; choose another output folder")
    _refuse_inputs(path, inputs, command)
    entries = sorted(path.iterdir()) if path.exists() else []
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
        (path / marker).unlink(missing_ok=True)
        for child in sorted(path.iterdir()):
            _remove(child)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GeoPix2PixError(f"cannot make the folder {path} ({exc.strerror or exc}); choose "
                              "another output folder") from None
    return path


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
