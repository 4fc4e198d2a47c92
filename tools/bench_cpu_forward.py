"""Benchmark: how the generator's forward on the CPU shares the cores with other work.

Why predict runs several model threads of one forward each on the CPU (`forward.cpu_workers`):
it times the same forwards (random input, inference mode) one batch at a time on all of torch's
threads, and as predict runs them, each alone and beside a background thread doing numpy work for
a share (``--duty``) of its time, like predict's reading, blending and writing threads. It prints
the wall seconds and what the background thread's CPU seconds cost the forwards.

    python tools/bench_cpu_forward.py --chip-size 64 --ngf 8 --batch-size 16 --forwards 300
    python tools/bench_cpu_forward.py --chip-size 256 --ngf 64 --batch-size 4 --forwards 16
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from bench_predict import bare_forward, machine, make_model


class Background:
    """A thread doing numpy work (GIL released) for `duty` of its time, in ~1 ms pieces."""

    def __init__(self, duty: float):
        self.duty, self.cpu = duty, 0.0
        self._stop = threading.Event()
        self._data = np.random.rand(200_000).astype(np.float32)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.thread_time()
            for _ in range(5):
                np.sqrt(self._data, out=self._data)
                np.add(self._data, 1.0, out=self._data)
            spent = time.thread_time() - start
            self.cpu += spent
            time.sleep(spent * (1 - self.duty) / self.duty)

    def __enter__(self) -> Background:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    from geopix2pix.models import load_model
    from geopix2pix.prediction.engine.forward import cpu_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip-size", type=int, default=64)
    parser.add_argument("--ngf", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--forwards", type=int, default=300, help="batches per timing")
    parser.add_argument("--duty", type=float, default=0.1, help="background thread's busy share")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    path = Path(tempfile.mkdtemp(prefix="bench_cpu_forward_")) / "model.safetensors"
    make_model(path, args.chip_size, args.ngf)
    generator = load_model(path, device=torch.device("cpu")).generator.eval()
    together = cpu_workers(torch.get_num_threads())
    print(machine("cpu"))
    print(f"model: U-Net chip {args.chip_size}, ngf {args.ngf}; {args.forwards} forwards of "
          f"{args.batch_size} windows; as predict: model threads of "
          f"{'+'.join(map(str, together))} torch thread(s); background thread at "
          f"{args.duty:.0%} duty")
    windows = args.forwards * args.batch_size
    ways = (("one at a time", None), (f"{len(together)} at once", together))

    def timed(way, background: bool) -> tuple[float, float]:
        """(wall seconds, the background thread's CPU seconds)"""
        if not background:
            return bare_forward(generator, torch.device("cpu"), windows, args.batch_size,
                                args.chip_size, way)[0], 0.0
        with Background(args.duty) as thread:
            wall = bare_forward(generator, torch.device("cpu"), windows, args.batch_size,
                                args.chip_size, way)[0]
        return wall, thread.cpu

    for round_ in range(1, args.rounds + 1):
        for name, way in ways:
            order = (False, True) if round_ % 2 else (True, False)  # alternate which runs first
            times = {busy: timed(way, busy) for busy in order}
            (alone, _), (busy, cpu) = times[False], times[True]
            print(f"round {round_}, {name:>14}: alone {alone:6.2f} s, beside the background "
                  f"thread {busy:6.2f} s (+{busy - alone:.2f} s for its {cpu:.2f} "
                  f"CPU-s: {(busy - alone) / max(cpu, 1e-9):.2f} s per CPU-s)",
                  flush=True)


if __name__ == "__main__":
    main()
