"""The pairs `export_chips` is given in Python, checked before any file is opened: SOURCE and
TARGET (one pair) or ``pairs`` (a CSV path, or a list of (source, target) paths), never both, and
every listed pair exactly two paths, so a slip is one line naming it rather than Python's
"not enough values to unpack"."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

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
