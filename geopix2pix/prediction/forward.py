"""Running the generator over the predict pipeline's batches (see `pipeline`).

On CUDA the calling thread runs it (bf16 autocast, channels_last), queueing the next batch on the
GPU before collecting the outputs of the one before, so the GPU does not wait for the hand-over.
On the CPU several model threads each run whole batches on their share of torch's threads
(`cpu_workers`) and hand their outputs on in the batches' order: a layer run on every core waits
at its end for the slowest core, so a pipeline thread that takes a core from it costs it about
twice its own CPU time, while independent forwards just share the cores (and small convolutions
run faster that way; docs/benchmarks.md, tools/bench_cpu_forward.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from geopix2pix.prediction.channels import DONE, Channel, Stopped

# forwards at once on the CPU: each holds a batch's activations, and the gain is largest on few
# cores, where a pipeline thread takes the biggest share of them
MAX_CPU_WORKERS = 2


def cpu_workers(threads: int) -> list[int]:
    """The torch threads of each model thread, for running the generator on `threads` CPU
    threads: one forward per model thread, at most `MAX_CPU_WORKERS` at once, sharing them all."""
    workers = max(1, min(threads, MAX_CPU_WORKERS))
    return [threads // workers + (i < threads % workers) for i in range(workers)]


@dataclass
class Launched:
    """A batch whose outputs are being computed (asynchronously on CUDA)."""

    outputs: torch.Tensor  # float32, on the host once `done` has passed
    done: torch.cuda.Event | None
    size: int
    rows: list

    def result(self) -> np.ndarray:
        if self.done is not None:
            self.done.synchronize()
        return self.outputs.numpy()


def launch(generator: torch.nn.Module, batch: np.ndarray, rows: list,
           device: torch.device) -> Launched:
    """Start the generator on a batch. On CUDA this only queues the copy in, the forward (bf16
    autocast, channels_last) and the copy out into pinned memory, and returns at once, so the
    next batch can be queued while this one runs; elsewhere it computes the outputs."""
    x = torch.from_numpy(batch)
    if device.type != "cuda":
        return Launched(generator(x).float(), None, len(batch), rows)
    x = x.pin_memory().to(device, non_blocking=True).contiguous(
        memory_format=torch.channels_last)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = generator(x).float()
    outputs = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
    outputs.copy_(y, non_blocking=True)
    done = torch.cuda.Event()
    done.record(torch.cuda.current_stream(device))  # `device` need not be the current GPU
    return Launched(outputs, done, len(batch), rows)


def send_outputs(launched: Launched, to_blend: Channel,
                 on_batch: Callable[[int], None] | None) -> None:
    """Hand a batch's outputs (waiting for them on CUDA) and its rows on to the blender."""
    to_blend.put((launched.result(), launched.rows))
    if on_batch:
        on_batch(launched.size)


class InOrder:
    """Batches taken by several model threads, their outputs handed on in the batches' order."""

    def __init__(self, inbox: Channel, outbox: Channel, stop: threading.Event,
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
            if item is DONE:
                self._exhausted = True
                return None
            self._taken += 1
            return self._taken - 1, item

    def hand_over(self, number: int, launched: Launched) -> None:
        """Waits for the batches before `number` to be handed on, then hands this one on."""
        with self._turn:
            while self._handed != number:
                if self.stop.is_set():
                    raise Stopped
                self._turn.wait(0.05)
            send_outputs(launched, self.outbox, self.on_batch)
            self._handed += 1
            self._turn.notify_all()


def cpu_worker(generator: torch.nn.Module, batches: InOrder, threads: int,
               device: torch.device) -> None:
    """A model thread: forwards on `threads` torch threads over the batches it takes."""
    # this thread's OpenMP team; torch first sets a new thread up from the process-wide count,
    # which would undo a count set before that
    torch.get_num_threads()
    torch.set_num_threads(threads)
    with torch.inference_mode():
        while (item := batches.take()) is not None:
            number, (batch, rows) = item
            batches.hand_over(number, launch(generator, batch, rows, device))


def run_queued(generator: torch.nn.Module, device: torch.device, to_model: Channel,
               to_blend: Channel, on_batch: Callable[[int], None] | None) -> None:
    """The generator over the batches in the calling thread, each batch queued on the
    accelerator before the outputs of the one before are collected."""
    with torch.inference_mode():
        running: Launched | None = None
        for batch, rows in to_model:
            queued = launch(generator, batch, rows, device)
            if running is not None:
                send_outputs(running, to_blend, on_batch)
            running = queued
        if running is not None:
            send_outputs(running, to_blend, on_batch)
