"""The predict pipeline's reading: the scene's window rows -> scaled windows -> batches, in one or
several reader threads.

A reader reads a chunk's window rows strip by strip (`iter_chunk_strips`: each strip reuses the
rows it shares with the strip above), scales them with the model's source `Scaling` and copies
the windows into batches, each batch noting the runs of consecutive windows of one row it holds.

One reader keeps up with a model on the CPU. A GPU needs several (`reader_count`): the window
rows are then cut into groups of a few batches' worth (`plan_groups`), dealt out to the readers in
turn, each reading with its own handle on the scene (a GDAL dataset is not for concurrent use;
GDAL and numpy release the GIL), and `merged` takes their batches back in processing order.
A group starts with a whole strip, so reading in groups reads ``size - stride`` extra rows per
group, and no batch spans two groups.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch

from geopix2pix.chips.scaling import Scaling
from geopix2pix.prediction.channels import Channel
from geopix2pix.prediction.windows import Chunk, Layout, iter_chunk_strips

SCALE_PIECE = 1024  # columns scaled at a time
MAX_READERS = 4  # reader threads feeding a GPU
CPUS_PER_READER = 4  # ... one for each of these CPUs, leaving the others to the other stages
GROUP_BATCHES = 4  # with several readers, each group of window rows holds about this many batches
GROUP_END = object()  # a reader's last item of a group

Group = tuple[Chunk, Sequence[int]]  # a chunk and some of its window rows
Run = tuple[int, "np.ndarray | None"]  # (windows, validity of their row if they start it)
Batch = tuple[np.ndarray, list[Run]]


def reader_count(device: torch.device) -> int:
    """Reader threads for predicting on `device`: one on the CPU, where the model threads need
    the cores; on a GPU one per `CPUS_PER_READER` of this process's share of the CPUs (torchrun
    starts LOCAL_WORLD_SIZE processes on a machine), at most `MAX_READERS`."""
    if device.type == "cpu":
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    return max(1, min(MAX_READERS, (cpus or 1) // processes // CPUS_PER_READER))


def plan_groups(layout: Layout, chunks: Sequence[Chunk], batch_size: int,
                readers: int) -> list[Group]:
    """The groups of window rows read in turn, in processing order: each chunk whole for one
    reader; for several, groups of at least 2 window rows and about `GROUP_BATCHES` batches."""
    if readers == 1:
        return [(chunk, layout.rows) for chunk in chunks]
    groups = []
    for chunk in chunks:
        per = max(2, math.ceil(GROUP_BATCHES * batch_size / len(chunk.cols)))
        groups += [(chunk, layout.rows[i:i + per]) for i in range(0, len(layout.rows), per)]
    return groups


class StripScaler:
    """A whole strip through the source `Scaling.forward`, for the pixel-wise modes (all but
    ``centre``).

    Integer data of up to 16 bits goes through a lookup table holding `forward` of every value of
    the dtype (built on the first strip), which gives the same values as `forward` for a fraction
    of the work; other data is scaled in column pieces so the float64 temporaries stay small.
    """

    def __init__(self, scaling: Scaling):
        self.scaling = scaling
        self.table: np.ndarray | None = None

    def _lookup_table(self, bands: int, dtype: np.dtype) -> np.ndarray:
        """(bands, 2**bits) float32: forward of each value, indexed by its unsigned bit pattern."""
        if self.table is None or self.table.shape[0] != bands:
            codes = np.arange(2 ** (8 * dtype.itemsize)).astype(f"u{dtype.itemsize}")
            values = np.broadcast_to(codes.view(dtype), (bands, 1, codes.size))
            self.table = self.scaling.forward(values, np.ones((1, codes.size), bool))[:, 0]
        return self.table

    def __call__(self, data: np.ndarray, valid: np.ndarray) -> np.ndarray:
        out = np.empty(data.shape, dtype=np.float32)
        if data.dtype.kind in "iu" and data.dtype.itemsize <= 2:
            table = self._lookup_table(data.shape[0], data.dtype)
            codes = data.view(f"u{data.dtype.itemsize}")
            for band in range(data.shape[0]):
                # every code is in the table: "clip" never clips, and is the fastest mode
                table[band].take(codes[band], out=out[band], mode="clip")
            if not valid.all():
                out[:, ~valid] = 0.0
            return out
        for c in range(0, out.shape[-1], SCALE_PIECE):
            piece = slice(c, c + SCALE_PIECE)
            out[..., piece] = self.scaling.forward(data[..., piece], valid[:, piece])
        return out


def _window_rows(dataset, bands: list[int], layout: Layout, group: Group, scaling: Scaling,
                 convert: StripScaler | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(scaled windows (n, bands, size, size), validity (size, span)) of each window row of a
    group, read strip by strip.

    ``centre`` scaling depends on each window's mean, so it is applied per window (`convert` is
    None); the other modes are pixel-wise and applied to the strips' rows as they are read (the
    windows are then views of the scaled strip)."""
    chunk, rows = group
    for strip in iter_chunk_strips(dataset, bands, layout, chunk, convert, rows):
        if convert is None:
            windows = np.stack([scaling.forward(data, valid) for data, valid in
                                zip(strip.windows(strip.data), strip.windows(strip.valid))])
        else:
            windows = strip.windows(strip.data)
        yield windows, strip.valid


def _empty(shape: tuple[int, ...], pinned: bool) -> np.ndarray:
    """A float32 batch, in page-locked memory with `pinned` (copied to a GPU without a staging
    copy; the array keeps its torch tensor alive)."""
    if pinned:
        return torch.empty(shape, dtype=torch.float32, pin_memory=True).numpy()
    return np.empty(shape, dtype=np.float32)


def _batches(rows: Iterator[tuple[np.ndarray, np.ndarray]], batch_size: int,
             pinned: bool = False) -> Iterator[Batch]:
    """Batches of `batch_size` windows (the last one shorter), with the runs of consecutive
    windows of one row they hold: (windows, [(length, validity of the row where the run starts
    it, else None), ...])."""
    batch, fill, runs = None, 0, []
    for windows, valid in rows:
        start = 0
        while start < len(windows):
            if batch is None:
                batch = _empty((batch_size, *windows.shape[1:]), pinned)
            take = min(batch_size - fill, len(windows) - start)
            batch[fill:fill + take] = windows[start:start + take]
            runs.append((take, valid if start == 0 else None))
            fill, start = fill + take, start + take
            if fill == batch_size:
                yield batch, runs
                batch, fill, runs = None, 0, []
    if fill:
        yield batch[:fill], runs


def read(dataset, bands: list[int], layout: Layout, groups: Sequence[Group], scaling: Scaling,
         batch_size: int, out: Channel, reopen: Callable[[], AbstractContextManager] | None = None,
         pinned: bool = False) -> None:
    """A reader thread: the batches of `groups` into `out`, each group ended by `GROUP_END`;
    through a handle of its own from `reopen` when given, else through `dataset`; the batches in
    page-locked memory with `pinned` (for a GPU)."""
    convert = None if scaling.mode == "centre" else StripScaler(scaling)
    with reopen() if reopen else contextlib.nullcontext(dataset) as handle:
        for group in groups:
            for batch in _batches(_window_rows(handle, bands, layout, group, scaling, convert),
                                  batch_size, pinned):
                out.put(batch)
            out.put(GROUP_END)


def merged(channels: Sequence[Channel], groups: int) -> Iterator[Batch]:
    """The batches of `groups` groups dealt out in turn to readers writing to `channels`, in
    processing order."""
    for group in range(groups):
        channel = channels[group % len(channels)]
        while (item := channel.get()) is not GROUP_END:
            yield item
