"""The pairs `export_chips` is given, checked before any raster is opened: SOURCE and TARGET
(one pair) or ``pairs`` (a CSV path, or a list of (source, target) paths), never both, every
listed pair exactly two paths, and a CSV that is UTF-8 text (with or without Excel's byte-order
mark) with `source` and `target` columns, both filled in on every row, no cell beyond the
header's columns, and files that exist; a slip is one line naming the CSV and its line rather
than Python's "not enough values to unpack", a UnicodeDecodeError, or a missing raster named
without the row that lists it."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.io import anchored, is_gdal_name, raster_path

PATHS = (str, os.PathLike)


def checked_pairs(source: object, target: object, pairs: object) -> object:
    """``pairs`` as `export_chips` reads it: None, a CSV path, or a list of (source, target)
    pairs (any iterable of them, e.g. ``zip(sources, targets)``, becomes a list). Refuses
    ``pairs`` given with SOURCE or TARGET, and a list that is not made of pairs of paths."""
    if pairs is None:
        return None
    if source is not None or target is not None:
        raise GeoPix2PixError("give source and target (one pair) or pairs (a CSV or a list of "
                              "(source, target) pairs), not both")
    if isinstance(pairs, PATHS):
        return pairs
    if not isinstance(pairs, Iterable) or isinstance(pairs, bytes):
        raise GeoPix2PixError(f"pairs={pairs!r}: expected a CSV path or a list of (source, "
                              "target) pairs of paths")
    listed = list(pairs)
    if not listed:
        raise GeoPix2PixError(f"pairs={pairs!r}: expected at least one (source, target) pair "
                              "of paths")
    for index, pair in enumerate(listed):
        if not _is_pair(pair):
            raise GeoPix2PixError(f"pairs[{index}]={pair!r}: expected a (source, target) pair "
                                  "of paths, as in pairs=[(source, target), ...]")
    return listed


def _is_pair(pair: object) -> bool:
    return (isinstance(pair, Sequence) and not isinstance(pair, (str, bytes)) and len(pair) == 2
            and all(isinstance(path, PATHS) for path in pair))


def read_pairs_csv(path: str | os.PathLike) -> list[tuple[Path | str, Path | str]]:
    """Pairs from a CSV with `source,target` columns, paths relative to the CSV's folder."""
    rows = csv_rows(path, "--pairs", ("source", "target"), "one source and one target path",
                    optional=("source_mask", "target_mask"))
    return [_row_pair(row, Path(path), where) for where, row in rows]


def csv_rows(path: str | os.PathLike, option: str, columns: tuple[str, ...],
             holds: str, optional: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The rows of the CSV `option` names, each with where it is ("--pairs a.csv, line 3"): a
    UTF-8 text file (with or without Excel's byte-order mark) with `columns` in its header and
    at least one row, whose rows (each `holds` what) have no cell beyond the header's
    columns. Other columns are the user's and ignored, but not one spelt nearly as one of
    `columns` or `optional` (Target_Mask, target masks): it would be ignored without a word."""
    path = Path(path)
    if not path.exists():
        raise GeoPix2PixError(f"{option} {path}: no such file; check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError:
        raise GeoPix2PixError(f"{option} {path} is not a UTF-8 text file (a raster, or a "
                              "spreadsheet saved as UTF-16?); save it as CSV UTF-8 with "
                              f"{','.join(columns)} columns") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    _refuse_near_misses(reader.fieldnames, (*columns, *optional), f"{option} {path}")
    rows = []
    for row in reader if set(columns) <= set(reader.fieldnames) else ():
        where = f"{option} {path}, line {reader.line_num}"
        extra = [cell.strip() for cell in row.get(None) or [] if cell.strip()]  # csv's rest key
        if extra:
            raise GeoPix2PixError(
                f"{where}: more cells than the header's {len(reader.fieldnames)} column(s) "
                f"(extra: {', '.join(extra)}); a line holds {holds}: remove the extra cells, "
                "or quote a path that holds a comma")
        rows.append((where, row))
    if not rows:
        raise GeoPix2PixError(f"{option} {path} needs a header with "
                              f"{' and '.join(repr(c) for c in columns)} columns and at least "
                              "one row")
    return rows


def _refuse_near_misses(header: list[str], known: tuple[str, ...], where: str) -> None:
    """One line for a column spelt nearly as a known one (case, spaces, dashes, underscores, a
    plural: TargetMask, target masks)."""
    def plain(name: str) -> str:
        return "".join(c for c in name.lower() if c not in " -_").rstrip("s")

    for name in header:
        near = [k for k in known if plain(k) == plain(name)]
        if name not in known and near:
            raise GeoPix2PixError(f"{where}: column {name!r} is not one export-chips reads; "
                                  f"name it {near[0]!r} (the columns it reads: "
                                  f"{', '.join(known)}; others are ignored)")


def listed_file(typed: str, csv_path: Path, where: str, name: str) -> Path | str:
    """A raster a CSV lists, relative to the CSV's folder, which must exist (a GDAL name,
    /vsizip/... or NETCDF:..., is left to GDAL, its own file relative to the CSV's folder too:
    `anchored`)."""
    full = raster_path(anchored(typed, csv_path.parent))
    if not is_gdal_name(full) and not full.exists():
        looked = "" if str(full) == typed else \
            f" (looked for {full}: paths are relative to the CSV's folder)"
        raise GeoPix2PixError(f"{where}: {name} {typed} does not exist{looked}; check the path")
    return full


def _row_pair(row: dict, path: Path, where: str) -> tuple[Path | str, Path | str]:
    """One row's (source, target), relative to the CSV's folder: both filled in and both files
    there."""
    source, target = ((row.get(name) or "").strip() for name in ("source", "target"))
    if not source or not target:
        raise GeoPix2PixError(f"{where}: a source and a target path are needed; fill them in "
                              "or remove the line")
    return tuple(listed_file(typed, path, where, name)
                 for name, typed in (("source", source), ("target", target)))
