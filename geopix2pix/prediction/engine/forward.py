"""Running the generator over the predict pipeline's batches (see `pipeline`).

Both devices launch batches ahead and hand the outputs on in the batches' order:
- on CUDA the calling thread queues each batch on the GPU (copy in from the reader's pinned
  batches, bf16 autocast (fp16 on GPUs without bf16), channels_last, the windows weighted and
  summed there into their runs' sums by the pipeline's `fold`, one copy out into pinned memory)
  before collecting the outputs of the one before, so the GPU does not wait for the hand-over;
- on the CPU a thread pool runs whole batches at once, each thread on its share of torch's threads
  (`cpu_workers`). A layer run on every core waits at its end for the slowest core, so a pipeline
  thread that takes a core from it stalls the other cores too, while independent
  forwards just share the cores (and small convolutions run faster that way; docs/benchmarks.md,
  tools/bench_cpu_forward.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from geopix2pix.prediction.engine.channels import Channel
from geopix2pix.runtime.device import cuda_autocast_dtype

# forwards at once on the CPU: each holds a batch's activations, and the gain is largest on few
# cores, where a pipeline thread takes the biggest share of them
MAX_CPU_WORKERS = 2

# a launched batch's outputs (float32, on the host): its windows, or its runs' weighted sums
Outputs = np.ndarray | list[np.ndarray]
Result = Callable[[], Outputs]  # waits for a launched batch's outputs
# (window outputs (n, bands, size, size), runs' lengths) -> each run's weighted sums, computed
# where the outputs are (`blend.fold_segments`)
Fold = Callable[[torch.Tensor, Sequence[int]], list[torch.Tensor]]


class ClassProbabilities(torch.nn.Module):
    """A categorical generator giving each pixel's class probabilities: the softmax of its raw
    class scores over the channels, in float32 (also under autocast), so that the pipeline blends
    probabilities wherever it weights and sums the windows."""

    def __init__(self, generator: torch.nn.Module):
        super().__init__()
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.generator(x).float(), dim=1)


def cpu_workers(threads: int) -> list[int]:
    """The torch threads of each model thread, for running the generator on `threads` CPU
    threads: one forward per model thread, at most `MAX_CPU_WORKERS` at once, sharing them all."""
    workers = max(1, min(threads, MAX_CPU_WORKERS))
    return [threads // workers + (i < threads % workers) for i in range(workers)]


def cpu_forward(generator: torch.nn.Module, batch: np.ndarray, lengths: Sequence[int] = (),
                fold: Fold | None = None) -> Outputs:
    """The generator's outputs for a batch, in the calling model thread (folded into its runs'
    sums with `fold`)."""
    with torch.inference_mode():
        outputs = generator(torch.from_numpy(batch)).float()
        if fold is None:
            return outputs.numpy()
        return [sums.numpy() for sums in fold(outputs, lengths)]


def _set_threads(counts: Sequence[int]) -> Callable[[], None]:
    """A thread pool initializer giving each new thread the next of `counts` torch threads."""
    remaining, lock = iter(counts), threading.Lock()

    def initializer() -> None:
        with lock:
            count = next(remaining)
        torch.get_num_threads()  # torch sets a new thread up first, over any count set before
        torch.set_num_threads(count)

    return initializer


def device_outputs(generator: torch.nn.Module, x: torch.Tensor, lengths: Sequence[int],
                   fold: Fold | None, precision: torch.dtype | None = None
                   ) -> tuple[torch.Tensor, list[torch.Size]]:
    """(the batch's outputs flattened into one float32 tensor, the shape of each part), where `x`
    is: the window outputs, or with `fold` each run's sums; under autocast to `precision`."""
    with torch.autocast(x.device.type, dtype=precision, enabled=precision is not None):
        y = generator(x.contiguous(memory_format=torch.channels_last)).float()
    parts = [y] if fold is None else fold(y, lengths)
    flat = torch.cat([part.reshape(-1) for part in parts]) if fold else y.reshape(-1)
    return flat, [part.shape for part in parts]


def host_outputs(values: np.ndarray, shapes: Sequence[torch.Size], folded: bool) -> Outputs:
    """`device_outputs`' flat values, copied to the host, back in their parts' shapes."""
    arrays, start = [], 0
    for shape in shapes:
        arrays.append(values[start:start + shape.numel()].reshape(shape))
        start += shape.numel()
    return arrays if folded else arrays[0]


def _launch_cuda(generator: torch.nn.Module, batch: np.ndarray, lengths: Sequence[int],
                 device: torch.device, fold: Fold | None, precision: torch.dtype) -> Result:
    """Queue the copy in, the forward (and `fold`) and the copy out of a batch on the GPU; return
    at once."""
    host = torch.from_numpy(batch)
    if not host.is_pinned():  # the reader's batches are (`reading`); others are copied first
        host = host.pin_memory()
    flat, shapes = device_outputs(generator, host.to(device, non_blocking=True), lengths, fold,
                                  precision)
    outputs = torch.empty(flat.shape, dtype=torch.float32, pin_memory=True)  # one copy out
    outputs.copy_(flat, non_blocking=True)
    done = torch.cuda.Event(blocking=True)  # waiting sleeps, leaving the core to the readers
    done.record(torch.cuda.current_stream(device))  # `device` need not be the current GPU
    held = [host]  # a reader's pinned batch must not be freed, and reused, while copied in

    def result() -> Outputs:
        done.synchronize()
        held.clear()  # the copy in is done as well
        return host_outputs(outputs.numpy(), shapes, fold is not None)

    return result


Launch = Callable[[np.ndarray, Sequence[int]], Result]


@contextlib.contextmanager
def _launcher(generator: torch.nn.Module, device: torch.device,
              fold: Fold | None) -> Iterator[tuple[Launch, int]]:
    """(launch(batch, runs' lengths) -> result, batches launched ahead of the oldest one
    collected), on the CPU or on CUDA."""
    if device.type == "cpu":
        counts = cpu_workers(torch.get_num_threads())
        threads = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(len(counts), "geopix2pix-model",
                                    initializer=_set_threads(counts)) as pool:
                yield (lambda batch, lengths: pool.submit(
                    cpu_forward, generator, batch, lengths, fold).result, len(counts))
        finally:  # the model threads changed the count new threads start with
            torch.set_num_threads(threads)
        return
    generator.to(memory_format=torch.channels_last)
    precision = cuda_autocast_dtype()
    try:
        float32_output(generator)
        with torch.inference_mode():
            yield (lambda batch, lengths: _launch_cuda(generator, batch, lengths, device, fold,
                                                       precision)), 1
    finally:  # after a failure, batches dropped uncollected may still be copied in: let them
        torch.cuda.current_stream(device).synchronize()


def float32_output(generator: torch.nn.Module) -> None:
    """Run the generator's output layer (its last convolution, and so the activation after it)
    in float32 under autocast: in bf16 its values have 8 bits of mantissa, steps of 1/512 of
    the target's range near its ends (6 m on a DEM of 0 to 3,000 m), which the output would
    show as terraces. The layers before it keep autocast's speed. Once for good (outside
    autocast it changes nothing), so that predict threads sharing one model agree."""
    convs = [m for m in generator.modules()
             if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with _PATCHING:
        if not convs or "forward" in vars(convs[-1]):
            return
        head = convs[-1]
        original = head.forward

        def forward(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(x.device.type, enabled=False):
                return original(x.float())

        head.forward = forward


_PATCHING = threading.Lock()


def run(generator: torch.nn.Module, device: torch.device, to_model: Iterable, to_blend: Channel,
        on_batch: Callable[[int], None] | None = None, fold: Fold | None = None) -> None:
    """The generator over the batches from `to_model` ((windows, runs) items, each run a (length,
    ...) tuple), their outputs handed on to `to_blend` as (outputs, runs) in the batches' order:
    the window outputs, or with `fold` each run's sums."""
    with _launcher(generator, device, fold) as (launch, ahead):
        pending: deque[tuple[Result, list, int]] = deque()

        def hand_over() -> None:
            result, runs, size = pending.popleft()
            to_blend.put((result(), runs))
            if on_batch:
                on_batch(size)

        for batch, runs in to_model:
            pending.append((launch(batch, [run[0] for run in runs]), runs, len(batch)))
            if len(pending) > ahead:
                hand_over()
        while pending:
            hand_over()
