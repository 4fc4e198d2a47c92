"""Handing freed heap memory back to the system between large raster I/O phases.

glibc's growing mmap threshold puts chip- and strip-sized buffers on the heap, and when they are
allocated in one thread and freed in another (a reader and a writer) the heap fragments and the
free pages stay in the process. Two places call `release_free_heap`:
- export, after each job of chips: without it a single-process export's memory grew with the
  number of chips (docs/benchmarks.md, export-chips, "Memory");
- predict with ``--cog``, between writing the tiled GeoTIFF and converting it, so that GDAL's
  conversion buffers do not add to the pipeline's leftover heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None on other C libraries."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def release_free_heap() -> None:
    """Hand the heap's free pages back to the system (a no-op on C libraries other than glibc)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
