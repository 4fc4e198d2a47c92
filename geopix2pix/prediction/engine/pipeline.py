"""The predict pipeline for one raster: read -> generator -> blend -> write, overlapped.

Four stages joined by small bounded queues, so the scene is never held whole:
- a reader thread (`reading`; helped by more threads on a GPU) reads the input one window row
  at a time (one `Strip` per row of windows, reading only the rows the strip above did not
  have), scales it with the model's source `Scaling` and copies its windows into batches,
  noting the runs of consecutive windows of one row each batch holds;
- the calling thread runs the generator on the batches (eval mode, ``torch.inference_mode``; see
  `forward`): queued ahead on CUDA, in a pool of model threads on the CPU, the outputs handed on
  in the batches' order. A categorical model's class scores become probabilities right there
  (`forward.ClassProbabilities`), so probabilities are what every path blends. On CUDA
  (`FOLD_ON`) the windows are also weighted and each run summed there (`fold_segments`), so only
  the runs' sums are copied back;
- a blender thread weights each row's windows and sums them at once (`overlap_add`, so the sums
  do not depend on how batches cut the rows) unless that was done where the model ran, adds the
  sums into a `StripAccumulator` (one channel per band, or per class) and pops the finished rows;
- a writer thread turns them into output values (the target's units and dtype, nodata; for a
  categorical model the most probable class's code, `writer.to_output`) and writes them
  (rasterio releases the GIL in reads and writes).
An error in any stage stops all of them and is raised in the caller; so does Ctrl-C or SIGTERM,
raised once the threads are joined (`runtime.stopping.deferred_stop_signals`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from geopix2pix.chips.scaling import Scaling
from geopix2pix.prediction.engine import forward, reading
from geopix2pix.prediction.engine.blend import (
    RowWeights,
    StripAccumulator,
    fold_segments,
    overlap_add,
    window_weights,
)
from geopix2pix.prediction.engine.channels import DONE, Channel, Stage, StopFlag, Stopped
from geopix2pix.prediction.engine.windows import Layout
from geopix2pix.prediction.engine.writer import OutputSpec, to_output
from geopix2pix.runtime.stopping import deferred_stop_signals

# devices where the window outputs are weighted and summed where the model ran (`fold_segments`),
# so that only the sums are copied back; on the CPU the blender thread's numpy does it faster and
# leaves the model threads their cores
FOLD_ON = frozenset({"cuda"})


@dataclass
class Job:
    """One raster of a pipeline run: where its windows come from, what its output holds,
    `write(row0, col0, data, valid)`, called from the writer thread with its finished strips,
    and `finish()`, called from there after its last strip."""

    source: reading.Source
    spec: OutputSpec
    write: Callable[[int, int, np.ndarray, np.ndarray], None]
    finish: Callable[[], None] = lambda: None


def _runs(inbox: Channel,
          weights: np.ndarray) -> Iterator[tuple[bool, np.ndarray, int, np.ndarray | None]]:
    """(summed, array, windows, row validity or None) of each run of windows in processing order:
    the run's weighted windows (n, bands, size, size), or their weighted sums (bands, size, span)
    where the model ran (`blend.fold_segments`)."""
    for outputs, runs in inbox:
        summed = not isinstance(outputs, np.ndarray)  # a list: each run's sums
        if not summed:
            # in place when the outputs are a plain array (a model's own output or a copy);
            # a broadcast or strided view may share memory between windows
            weighted = (np.multiply(outputs, weights, out=outputs)
                        if outputs.flags.c_contiguous else outputs * weights)
            starts = np.cumsum([0] + [length for length, _ in runs])
            outputs = [weighted[a:b] for a, b in zip(starts, starts[1:])]
        for array, (length, valid) in zip(outputs, runs):
            yield summed, array, length, valid


def _blender(jobs: Sequence[Job], inbox: Channel, out: Channel) -> None:
    """Each job's runs of windows into its strip accumulators, its finished rows handed on as
    (job index, first row, first column, blended, valid)."""
    runs = None
    for index, job in enumerate(jobs):
        layout, spec = job.source.layout, job.spec
        weights = window_weights(layout.size, layout.stride, layout.margin, layout.blend)
        row_weights = RowWeights(weights, layout.stride)
        runs = runs or _runs(inbox, weights)  # the same weights for every job
        last_row = layout.rows[-1]
        reach = layout.size + layout.stride
        for chunk in job.source.chunks:
            acc = StripAccumulator(spec.channels, chunk.col0, chunk.col1, reach, layout.height)
            weight_sums, reached = row_weights(len(chunk.cols))
            for i, row in enumerate(layout.rows):
                done, windows = 0, []
                while done < len(chunk.cols):
                    summed, array, length, valid = next(runs)
                    if done == 0:  # a row's validity travels with its first run
                        acc.add_weights(weight_sums, valid & reached, row, chunk.cols[0])
                    if summed:
                        acc.add(array, row, chunk.cols[done])
                    else:
                        windows.append(array)
                    done += length
                if windows:  # a row's windows summed at once, however the batches cut it
                    row_windows = windows[0] if len(windows) == 1 else np.concatenate(windows)
                    acc.add(overlap_add(row_windows, layout.stride), row, chunk.cols[0])
                until = layout.span(layout.rows[i + 1])[0] if row != last_row else layout.height
                first, blended, ok = acc.pop(until)
                if blended.shape[1]:
                    out.put((index, first, chunk.col0, blended, ok))
    out.put(DONE)


def _writer(jobs: Sequence[Job], inbox: Channel) -> None:
    current = 0
    for index, first, col0, blended, valid in inbox:
        while current < index:  # the jobs before have had all their strips
            jobs[current].finish()
            current += 1
        job = jobs[index]
        job.write(first, col0, to_output(blended, valid, job.spec), valid)
    for job in jobs[current:]:
        job.finish()


def _fold(layout: Layout, device: torch.device) -> forward.Fold:
    """`fold_segments` with the layout's window weights, on `device`."""
    weights = torch.from_numpy(
        window_weights(layout.size, layout.stride, layout.margin, layout.blend)).to(device)
    return lambda windows, lengths: fold_segments(windows, weights, lengths, layout.stride)


def _blended_outputs(generator: torch.nn.Module, jobs: Sequence[Job]) -> torch.nn.Module:
    """The generator giving what the jobs blend: its values, or a categorical model's class
    probabilities (the jobs of one run are all categorical or none is)."""
    categorical = {job.spec.categorical for job in jobs}
    if len(categorical) != 1:
        raise ValueError("the jobs of one run must all be categorical or all not")
    return forward.ClassProbabilities(generator) if categorical.pop() else generator


def run(jobs: Sequence[Job], generator: torch.nn.Module, device: torch.device,
        source_scaling: Scaling, batch_size: int,
        on_batch: Callable[[int], None] | None = None, validity: bool = False) -> None:
    """Predict `jobs` through `generator` in one pipeline (batches run across the jobs, so each
    job's start and end overlap with its neighbours'), at `batch_size` windows a batch, handing
    each job's finished strips to its `write` (called from the writer thread). The jobs share
    the window size, overlap and blending. On the CPU the generator runs in model threads of
    its own, so thread-local torch settings of the caller (grad mode, autocast) do not reach it;
    it runs in eval mode under `torch.inference_mode` in any case. For categorical jobs
    (`OutputSpec.categorical`) the windows' class probabilities are blended. With `validity`
    the generator takes each window's validity band after its bands (``--validity-band``)."""
    layouts = {(j.source.layout.size, j.source.layout.stride, j.source.layout.blend)
               for j in jobs}
    if len(layouts) != 1:
        raise ValueError(f"the jobs of one run must share their windows; got {layouts}")
    generator = _blended_outputs(generator, jobs)
    stop = StopFlag()
    to_model, to_blend, to_write = Channel(stop), Channel(stop), Channel(stop)
    read = partial(reading.read, [job.source for job in jobs], source_scaling, batch_size,
                   to_model, device.type == "cuda", validity)
    stages = [
        Stage(read, stop, "geopix2pix-read"),
        Stage(lambda: _blender(jobs, to_blend, to_write), stop, "geopix2pix-blend"),
        Stage(lambda: _writer(jobs, to_write), stop, "geopix2pix-write"),
    ]
    generator.eval()
    fold = _fold(jobs[0].source.layout, device) if device.type in FOLD_ON else None
    with deferred_stop_signals(stop.set):  # Ctrl-C stops the stages; raised once they are joined
        try:
            for stage in stages:
                stage.start()
            forward.run(generator, device, to_model, to_blend, on_batch, fold)
            to_blend.put(DONE)
            for stage in stages:
                stage.join()
        except Stopped:
            pass
        finally:
            stop.set()  # ends the stages early when the caller failed; a no-op once done
            for stage in stages:
                if stage.is_alive():
                    stage.join()
    for stage in stages:
        if stage.error is not None:
            raise stage.error
