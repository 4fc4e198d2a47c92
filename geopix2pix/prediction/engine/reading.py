"""The predict pipeline's reading: the scene's window rows -> scaled windows -> batches.

The reader thread reads a chunk's window rows strip by strip (`iter_chunk_strips`: each strip
reuses the rows it shares with the strip above), scales them with the model's source `Scaling`
and copies the windows into batches, each batch noting the runs of consecutive windows of one row
it holds.

One thread reads fast enough for a model on the CPU. For a GPU each strip's new rows are read and
scaled by several threads at once (`read_workers`, `ColumnReader`): split by columns at the file's
block edges, so no block is decoded twice, each through its own handle on the scene (a GDAL
dataset is not for concurrent use; GDAL and numpy release the GIL), and joined again. Nothing is
read twice or out of order, and batches stay full. Small scenes predicted together (`grouped`)
have too few blocks to split: they are read ahead in parallel instead, each whole by one thread
through its own dataset (`_read_ahead`).
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

from geopix2pix.chips.scaling import Scaling, with_validity
from geopix2pix.prediction.engine.channels import DONE, Channel, Stopped
from geopix2pix.prediction.engine.windows import (
    Chunk,
    Convert,
    Layout,
    block_reader,
    iter_chunk_strips,
    point_reflect,
)
from geopix2pix.runtime.device import available_cpus

SCALE_PIECE = 1024  # columns scaled at a time
MAX_READ_WORKERS = 4  # threads reading each strip for a GPU
CPUS_PER_READ_WORKER = 4  # ... one for each of these CPUs, leaving the others to the other stages
WORKERS_VARIABLE = "GEOPIX2PIX_READ_WORKERS"  # overrides `read_workers`

Run = tuple[int, "np.ndarray | None"]  # (windows, validity of their row if they start it)
Batch = tuple[np.ndarray, list[Run]]


def read_workers(device: torch.device) -> int:
    """Threads reading each strip when predicting on `device`: one on the CPU, where the model
    threads need the cores; on a GPU one per `CPUS_PER_READ_WORKER` of this process's share of
    the CPUs (torchrun starts LOCAL_WORLD_SIZE processes on a machine), at most
    `MAX_READ_WORKERS`. The environment variable GEOPIX2PIX_READ_WORKERS overrides both."""
    try:
        override = int(os.environ.get(WORKERS_VARIABLE, "0"))
    except ValueError:
        override = 0
    if override > 0:
        return override
    if device.type == "cpu":
        return 1
    try:
        processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        processes = 1
    return max(1, min(MAX_READ_WORKERS, available_cpus() // processes // CPUS_PER_READ_WORKER))


def column_parts(cols: tuple[int, int], width: int, block: int,
                 parts: int) -> list[tuple[int, int]]:
    """Columns [start, stop) (possibly past the scene's edges) cut into at most `parts` pieces of
    about equal width, at multiples of `block` inside the scene."""
    start, stop = cols
    cuts: list[int] = []
    for k in range(1, parts):
        cut = round((start + (stop - start) * k / parts) / block) * block
        if max(start, 0) < cut < min(stop, width) and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    edges = [start, *cuts, stop]
    return list(zip(edges, edges[1:]))


class _PieceReader:
    """A thread reading column pieces of strips through a handle of its own on the scene, opened
    and closed in it (rasterio ties a dataset to the thread that opened it)."""

    def __init__(self, reopen: Callable[[], AbstractContextManager], bands: Sequence[int],
                 convert: Convert | None, name: str):
        self.reopen, self.bands, self.convert = reopen, bands, convert
        self.tasks: queue.SimpleQueue = queue.SimpleQueue()
        self.results: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            opened = self.reopen()
            read = block_reader(opened.__enter__(), self.bands, self.convert)
        except BaseException as exc:  # every piece asked for gets the error
            while self.tasks.get() is not None:
                self.results.put((exc, None))
            return
        try:
            while (task := self.tasks.get()) is not None:
                try:
                    self.results.put((None, read(*task)))
                except BaseException as exc:
                    self.results.put((exc, None))
        finally:
            opened.__exit__(None, None, None)

    def submit(self, rows: tuple[int, int], cols: tuple[int, int],
               out: np.ndarray | None) -> None:
        self.tasks.put((rows, cols, out))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        error, piece = self.results.get()
        if error is not None:
            raise error
        return piece

    def close(self) -> None:
        self.tasks.put(None)
        self.thread.join()


class ColumnReader:
    """`read(rows, cols)` -> (data, valid) as `block_reader` gives them, read in `workers`
    threads: the calling thread reads the first column piece through `dataset`, and each of
    `workers - 1` threads always the same other piece, through a handle of its own from
    `reopen`. One thread without `reopen`, or for a block too narrow to split."""

    def __init__(self, dataset, bands: Sequence[int], convert: Convert | None,
                 workers: int = 1, reopen: Callable[[], AbstractContextManager] | None = None):
        self.dataset = dataset
        self.workers = workers if reopen is not None else 1
        self.block = dataset.block_shapes[0][1] if dataset.block_shapes else 512
        self._read = block_reader(dataset, bands, convert)
        self._threads: list[_PieceReader] = []
        self._make = lambda k: _PieceReader(reopen, bands, convert, f"geopix2pix-read-{k}")

    def __call__(self, rows: tuple[int, int], cols: tuple[int, int],
                 out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        parts = column_parts(cols, self.dataset.width, self.block, self.workers)
        if len(parts) == 1:
            return self._read(rows, cols, out)
        while len(self._threads) < len(parts) - 1:  # started on the first strip split this wide
            self._threads.append(self._make(len(self._threads) + 1))

        def piece_out(part: tuple[int, int]) -> np.ndarray | None:  # each its own columns
            return None if out is None else out[..., part[0] - cols[0]:part[1] - cols[0]]

        for thread, part in zip(self._threads, parts[1:]):
            thread.submit(rows, part, piece_out(part))
        first = self._read(rows, parts[0], piece_out(parts[0]))
        pieces = [first] + [thread.result() for thread in self._threads[:len(parts) - 1]]
        valid = np.concatenate([valid for _, valid in pieces], axis=-1)
        if out is None:
            out = np.concatenate([data for data, _ in pieces], axis=-1)
        return out, valid

    def __enter__(self) -> ColumnReader:
        return self

    def __exit__(self, *exc) -> None:
        for thread in self._threads:
            thread.close()


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

    def __call__(self, data: np.ndarray, valid: np.ndarray,
                 out: np.ndarray | None = None) -> np.ndarray:
        """The scaled data (float32), written into `out` when given."""
        if out is None:
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


@dataclass
class Source:
    """A raster to read the windows of: its chunks' window rows, in processing order."""

    dataset: object  # rasterio dataset or WarpedVRT
    bands: list[int]
    layout: Layout
    chunks: list[Chunk]
    workers: int = 1  # threads reading each strip (`read_workers`): needs `reopen`
    reopen: Callable[[], AbstractContextManager] | None = None  # another handle on `dataset`


def _source_window_rows(source: Source, scaling: Scaling, workers: int, copy: bool = False,
                        validity: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(scaled windows (n, bands, size, size), validity (size, span)) of each window row of each
    of the source's chunks, in processing order, read strip by strip through a `ColumnReader` of
    `workers` threads.

    ``centre`` scaling depends on each window's mean, so it is applied per window; the other
    modes are pixel-wise and applied to the strips' rows as they are read (the windows are then
    views of the scaled strip, valid until the next row is asked for unless `copy`). With
    `validity` each window gets its validity band after its bands (a model trained with
    ``--validity-band``)."""
    centre = scaling.mode == "centre"
    convert = None if centre else StripScaler(scaling)  # its table is per dtype
    with ColumnReader(source.dataset, source.bands, convert, workers, source.reopen) as read:
        for chunk in source.chunks:
            for strip in iter_chunk_strips(read, source.layout, chunk):
                if centre:  # a relative height: extrapolated past the scene's edges
                    data, valid = point_reflect(strip, source.layout.height,
                                                source.layout.width)
                    windows = np.stack([scaling.forward(d, v) for d, v in
                                        zip(strip.windows(data), strip.windows(valid))])
                else:
                    valid = strip.valid
                    # (a validity band is concatenated below: that is the copy then)
                    data = strip.data.copy() if copy and not validity else strip.data
                    windows = strip.windows(data)
                if validity:
                    windows = with_validity(windows, strip.windows(valid))
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


@dataclass
class _Failed:
    error: BaseException


def _read_ahead(sources: Sequence[Source], scaling: Scaling, workers: int,
                validity: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """`_source_window_rows` of each source in turn, `workers` sources at a time read ahead, each
    whole by one thread through its own dataset (so no handle is opened and no thread started
    per source), into a channel of one window row."""
    halt = threading.Event()
    channels = [Channel(halt, depth=1) for _ in sources]

    def fill(source: Source, channel: Channel) -> None:
        if halt.is_set():
            return
        try:
            for item in _source_window_rows(source, scaling, 1, True, validity):
                channel.put(item)
            channel.put(DONE)
        except Stopped:
            pass
        except BaseException as exc:  # raised where the rows are taken
            with contextlib.suppress(Stopped):
                channel.put(_Failed(exc))

    with ThreadPoolExecutor(workers, thread_name_prefix="geopix2pix-read-ahead") as pool:
        try:
            for source, channel in zip(sources, channels):
                pool.submit(fill, source, channel)
            for channel in channels:
                for item in channel:
                    if isinstance(item, _Failed):
                        raise item.error
                    yield item
        finally:  # the threads stop at their next row; the pool waits for them
            halt.set()
            pool.shutdown(cancel_futures=True)


def sources_at_once(sources: Sequence[Source]) -> int:
    """How many of `sources` are read at the same time: with several sources and read workers
    (a GPU) that many are read ahead in parallel (`_read_ahead`: a small scene has too few
    blocks to split), otherwise one at a time, each strip split by columns among its workers."""
    workers = max(source.workers for source in sources)
    return min(workers, len(sources)) if len(sources) > 1 else 1


def _sources_window_rows(sources: Sequence[Source], scaling: Scaling,
                         validity: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The window rows of each source in turn (`sources_at_once` of them read at once)."""
    at_once = sources_at_once(sources)
    if at_once > 1:
        yield from _read_ahead(sources, scaling, at_once, validity)
        return
    for source in sources:
        yield from _source_window_rows(source, scaling, source.workers, validity=validity)


def read(sources: Sequence[Source], scaling: Scaling, batch_size: int, out: Channel,
         pinned: bool = False, validity: bool = False) -> None:
    """The reader thread: the batches of the sources' windows into `out` (a batch may hold the
    last windows of one source and the first of the next), then `DONE`; the batches in
    page-locked memory with `pinned` (for a GPU); with `validity`, each window's validity band
    after its bands."""
    rows = _sources_window_rows(sources, scaling, validity)
    with contextlib.closing(rows):  # its threads end here, whatever stops this one
        for batch in _batches(rows, batch_size, pinned):
            out.put(batch)
    out.put(DONE)
