"""The predict pipeline for one raster: read -> generator -> blend -> write, overlapped.

Four stages joined by small bounded queues, so the scene is never held whole:
- a reader thread reads the input one window row at a time (one `Strip` per row of windows,
  reading only the rows the strip above did not have), scales it with the model's source
  `Scaling` (``centre`` mode per window) and copies its windows (strided views of it) into
  batches;
- the generator runs on each batch (eval mode, ``torch.inference_mode``). On CUDA the calling
  thread runs it (bf16 autocast, channels_last), queueing the next batch on the GPU before
  collecting the outputs of the one before, so the GPU does not wait for the hand-over. On the
  CPU several model threads each run whole batches with a share of torch's threads
  (`cpu_workers`) and hand their outputs on in the batches' order: a layer run on every core waits
  at its end for the slowest core, so a pipeline thread that takes a core from it costs it about
  twice its own CPU time, while independent single-threaded forwards just share the cores (and
  small convolutions run faster that way; docs/benchmarks.md);
- a blender thread regroups the outputs by window row, weights and sums each row's windows at
  once (`overlap_add`) into a `StripAccumulator` and pops the finished rows;
- a writer thread turns them into output values (the target's units and dtype, nodata) and
  writes them (rasterio releases the GIL in reads and writes).
An error in any stage stops all of them and is raised in the caller.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from geopix2pix.chips.scaling import Scaling
from geopix2pix.prediction.blend import (
    RowWeights,
    StripAccumulator,
    overlap_add,
    window_weights,
)
from geopix2pix.prediction.windows import Chunk, Layout, iter_chunk_strips, iter_strips
from geopix2pix.prediction.writer import OutputSpec, to_output

QUEUE_DEPTH = 4
SCALE_PIECE = 1024  # columns scaled at a time
# forwards at once on the CPU: each holds a batch's activations, and the gain is largest on few
# cores, where a pipeline thread takes the biggest share of them
MAX_CPU_WORKERS = 2
_DONE = object()


def cpu_workers(threads: int) -> list[int]:
    """The torch threads of each model thread, for running the generator on `threads` CPU
    threads: one forward per model thread, at most `MAX_CPU_WORKERS` at once, sharing them all."""
    workers = max(1, min(threads, MAX_CPU_WORKERS))
    return [threads // workers + (i < threads % workers) for i in range(workers)]


class _Stopped(Exception):
    """Another stage failed; this one gives up quietly."""


@dataclass
class _Channel:
    """A bounded queue whose put/get give up when the pipeline is stopped."""

    stop: threading.Event
    depth: int = QUEUE_DEPTH

    def __post_init__(self) -> None:
        self.queue: queue.Queue = queue.Queue(self.depth)

    def put(self, item) -> None:
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                self.queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def get(self):
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return self.queue.get(timeout=0.05)
            except queue.Empty:
                continue

    def __iter__(self) -> Iterator:
        while (item := self.get()) is not _DONE:
            yield item


class _Stage(threading.Thread):
    """A pipeline thread recording its exception and stopping the others on failure."""

    def __init__(self, target: Callable[[], None], stop: threading.Event, name: str):
        super().__init__(name=name, daemon=True)
        self._target_fn, self._stop_event, self.error = target, stop, None

    def run(self) -> None:
        try:
            self._target_fn()
        except _Stopped:
            pass
        except BaseException as exc:  # re-raised in the caller
            self.error = exc
            self._stop_event.set()


@dataclass
class Job:
    """Everything the pipeline needs for one raster."""

    dataset: object  # rasterio dataset or WarpedVRT
    bands: list[int]
    layout: Layout
    chunks: list[Chunk]
    source_scaling: Scaling
    spec: OutputSpec
    batch_size: int


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


def _window_rows(job: Job) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(scaled windows (n, bands, size, size), validity (size, span)) of each window row of each
    chunk, in processing order, read strip by strip.

    ``centre`` scaling depends on each window's mean, so it is applied per window; the other
    modes are pixel-wise and applied to the strips' rows as they are read (the windows are then
    views of the scaled strip)."""
    scaling = job.source_scaling
    centre = scaling.mode == "centre"
    convert = None if centre else StripScaler(scaling)
    for chunk in job.chunks:
        for strip in iter_chunk_strips(job.dataset, job.bands, job.layout, chunk, convert):
            if centre:
                windows = np.stack([scaling.forward(data, valid) for data, valid in
                                    zip(strip.windows(strip.data), strip.windows(strip.valid))])
            else:
                windows = strip.windows(strip.data)
            yield windows, strip.valid


def _reader(job: Job, out: _Channel) -> None:
    """Batches of `job.batch_size` windows, each with the validity of the window rows that start
    in it: (windows, [validity, ...])."""
    batch, fill, rows = None, 0, []
    for windows, valid in _window_rows(job):
        rows.append(valid)
        start = 0
        while start < len(windows):
            if batch is None:
                batch = np.empty((job.batch_size, *windows.shape[1:]), dtype=np.float32)
            take = min(job.batch_size - fill, len(windows) - start)
            batch[fill:fill + take] = windows[start:start + take]
            fill, start = fill + take, start + take
            if fill == job.batch_size:
                out.put((batch, rows))
                batch, fill, rows = None, 0, []
    if fill:  # a row's validity always travels with its first window
        out.put((batch[:fill], rows))
    out.put(_DONE)


def _output_rows(job: Job, inbox: _Channel) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(outputs (n, bands, size, size), input validity (size, span)) of each window row, in
    processing order, regrouped from the model's batches."""
    batches = iter(inbox)
    outputs, used, valids = None, 0, deque()
    for _, chunk, _ in iter_strips(job.layout, job.chunks):
        parts, missing = [], len(chunk.cols)
        while missing:
            if outputs is None or used == len(outputs):
                outputs, row_valids = next(batches)
                used = 0
                valids.extend(row_valids)
            take = min(missing, len(outputs) - used)
            parts.append(outputs[used:used + take])
            used, missing = used + take, missing - take
        yield (parts[0] if len(parts) == 1 else np.concatenate(parts)), valids.popleft()


def _blender(job: Job, inbox: _Channel, out: _Channel) -> None:
    layout, spec = job.layout, job.spec
    weights = window_weights(layout.size, layout.stride, layout.margin, layout.blend)
    row_weights = RowWeights(weights, layout.stride)
    rows = _output_rows(job, inbox)
    last_row = layout.rows[-1]
    reach = layout.size + layout.stride
    for chunk in job.chunks:
        acc = StripAccumulator(spec.count, chunk.col0, chunk.col1, reach, layout.height)
        weight_sums, reached = row_weights(len(chunk.cols))
        for i, row in enumerate(layout.rows):
            outputs, valid = next(rows)
            # in place when the outputs are a plain array (a model's own output or a copy);
            # a broadcast or strided view may share memory between windows
            weighted = (np.multiply(outputs, weights, out=outputs)
                        if outputs.flags.c_contiguous else outputs * weights)
            sums = overlap_add(weighted, layout.stride)
            acc.add(sums, weight_sums, valid & reached, row, chunk.cols[0])
            until = layout.span(layout.rows[i + 1])[0] if row != last_row else layout.height
            first, blended, ok = acc.pop(until)
            if blended.shape[1]:
                out.put((first, chunk.col0, blended, ok))
    out.put(_DONE)


def _writer(write: Callable[[int, int, np.ndarray, np.ndarray], None], spec: OutputSpec,
            inbox: _Channel) -> None:
    for first, col0, blended, valid in inbox:
        write(first, col0, to_output(blended, valid, spec), valid)


@dataclass
class _Launched:
    """A batch whose outputs are being computed (asynchronously on CUDA)."""

    outputs: torch.Tensor  # float32, on the host once `done` has passed
    done: torch.cuda.Event | None
    size: int
    rows: list

    def result(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.outputs.numpy()


def _launch(generator: torch.nn.Module, batch: np.ndarray, rows: list,
            device: torch.device) -> _Launched:
    """Start the generator on a batch. On CUDA this only queues the copy in, the forward (bf16
    autocast, channels_last) and the copy out into pinned memory, and returns at once, so the
    next batch can be queued while this one runs; elsewhere it computes the outputs."""
    x = torch.from_numpy(batch)
    if device.type != "cuda":
        return _Launched(generator(x).float(), None, len(batch), rows)
    x = x.pin_memory().to(device, non_blocking=True).contiguous(
        memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = generator(x).float()
    outputs = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
    outputs.copy_(y, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(device))  # `device` need not be the current GPU
    return _Launched(outputs, done, len(batch), rows)


def _hand_over(launched: _Launched, to_blend: _Channel,
               on_batch: Callable[[int], None] | None) -> None:
    to_blend.put((launched.result(), launched.rows))
    if on_batch:
        on_batch(launched.size)


class _InOrder:
    """Batches taken by several model threads, their outputs handed on in the batches' order."""

    def __init__(self, inbox: _Channel, outbox: _Channel, stop: threading.Event,
                 on_batch: Callable[[int], None] | None):
        self.inbox, self.outbox, self.stop, self.on_batch = inbox, outbox, stop, on_batch
        self._taking = threading.Lock()
        self._turn = threading.Condition()
        self._taken = self._handed = 0
        self._exhausted = False

    def take(self) -> tuple[int, tuple] | None:
        """(sequence number, (batch, rows)), or None once the batches are all taken."""
        with self._taking:
            if self._exhausted:
                return None
            item = self.inbox.get()
            if item is _DONE:
                self._exhausted = True
                return None
            self._taken += 1
            return self._taken - 1, item

    def hand_over(self, number: int, launched: _Launched) -> None:
        """Waits for the batches before `number` to be handed on, then hands this one on."""
        with self._turn:
            while self._handed != number:
                if self.stop.is_set():
                    raise _Stopped
                self._turn.wait(0.05)
            _hand_over(launched, self.outbox, self.on_batch)
            self._handed += 1
            self._turn.notify_all()


def _cpu_worker(generator: torch.nn.Module, batches: _InOrder, threads: int,
                device: torch.device) -> None:
    # this thread's OpenMP team; torch first sets a new thread up from the process-wide count,
    # which would undo a count set before that
    torch.get_num_threads()
    torch.set_num_threads(threads)
    with torch.inference_mode():
        while (item := batches.take()) is not None:
            number, (batch, rows) = item
            batches.hand_over(number, _launch(generator, batch, rows, device))


def run(job: Job, generator: torch.nn.Module, device: torch.device,
        write: Callable[[int, int, np.ndarray, np.ndarray], None],
        on_batch: Callable[[int], None] | None = None) -> None:
    """Predict `job` through `generator`, handing finished strips to `write(row0, col0, data,
    valid)` (called from the writer thread). On the CPU the generator runs in model threads of
    its own, so thread-local torch settings of the caller (grad mode, autocast) do not reach it;
    it runs in eval mode under `torch.inference_mode` in any case."""
    stop = threading.Event()
    to_model, to_blend, to_write = _Channel(stop), _Channel(stop), _Channel(stop)
    stages = [
        _Stage(lambda: _reader(job, to_model), stop, "geopix2pix-read"),
        _Stage(lambda: _blender(job, to_blend, to_write), stop, "geopix2pix-blend"),
        _Stage(lambda: _writer(write, job.spec, to_write), stop, "geopix2pix-write"),
    ]
    generator.eval()
    threads = torch.get_num_threads()
    model_stages = []
    if device.type == "cpu":
        batches = _InOrder(to_model, to_blend, stop, on_batch)
        model_stages = [_Stage(lambda n=n: _cpu_worker(generator, batches, n, device), stop,
                               f"geopix2pix-model-{i}")
                        for i, n in enumerate(cpu_workers(threads))]
    elif device.type == "cuda":
        generator.to(memory_format=torch.channels_last)
    try:
        for stage in stages + model_stages:
            stage.start()
        if model_stages:
            for stage in model_stages:
                stage.join()
        else:
            _run_queued(generator, device, to_model, to_blend, on_batch)
        if not stop.is_set():
            to_blend.put(_DONE)
        for stage in stages:
            stage.join()
    except _Stopped:
        pass
    finally:
        stop.set()  # ends the stages early when the caller failed; a no-op once they are done
        for stage in stages + model_stages:
            if stage.is_alive():
                stage.join()
        torch.set_num_threads(threads)  # the model threads changed the process-wide default
    for stage in stages + model_stages:
        if stage.error is not None:
            raise stage.error


def _run_queued(generator: torch.nn.Module, device: torch.device, to_model: _Channel,
                to_blend: _Channel, on_batch: Callable[[int], None] | None) -> None:
    """The generator over the batches in the calling thread, each batch queued on the
    accelerator before the outputs of the one before are collected."""
    with torch.inference_mode():
        running: _Launched | None = None
        for batch, rows in to_model:
            queued = _launch(generator, batch, rows, device)
            if running is not None:
                _hand_over(running, to_blend, on_batch)
            running = queued
        if running is not None:
            _hand_over(running, to_blend, on_batch)
