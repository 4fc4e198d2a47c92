"""The pairs `export_chips` is given, checked before any raster is opened: SOURCE and TARGET
(one pair) or ``pairs`` (a CSV path, or a list of (source, target) paths), never both, every
listed pair exactly two paths, and a CSV that is UTF-8 text (with or without Excel's byte-order
mark) with `source` and `target` columns and both filled in on every row; a slip is one line
naming it rather than Python's "not enough values to unpack" or a UnicodeDecodeError."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from geopix2pix.errors import GeoPix2PixError

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


def read_pairs_csv(path: str | os.PathLike) -> list[tuple[Path, Path]]:
    """Pairs from a CSV with `source,target` columns, paths relative to the CSV's folder."""
    path = Path(path)
    if not path.exists():
        raise GeoPix2PixError(f"--pairs {path}: no such file; check the path")
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel's "CSV UTF-8" starts with a BOM
    except UnicodeDecodeError:
        raise GeoPix2PixError(f"--pairs {path} is not a UTF-8 text file (a raster, or a "
                              "spreadsheet saved as UTF-16?); save it as CSV UTF-8 with "
                              "source,target columns") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
    if not {"source", "target"} <= set(reader.fieldnames):
        raise _needs_header(path)
    pairs = []
    for row in reader:
        source, target = ((row.get(name) or "").strip() for name in ("source", "target"))
        if not source or not target:
            raise GeoPix2PixError(f"--pairs {path}, line {reader.line_num}: a source and a "
                                  "target path are needed; fill them in or remove the line")
        pairs.append((path.parent / source, path.parent / target))
    if not pairs:
        raise _needs_header(path)
    return pairs


def _needs_header(path: Path) -> GeoPix2PixError:
    return GeoPix2PixError(f"--pairs {path} needs a header with 'source' and 'target' columns "
                           "and at least one row")
