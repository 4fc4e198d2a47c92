"""Benchmark: what the digests cost writing and reading model files and checkpoints.

A model file records a SHA-256 digest of its header and tensors, a checkpoint one of its whole
contents (`geopix2pix.models.digest`), computed when written and compared when read. This times
`save_model` / `load_model` and `save_checkpoint` / `load_checkpoint` as they are and with the
digest switched off (the same code with a constant in its place, files written each way), one
after the other (each first in turn, after a sync of the disks) in one process, and prints the
median seconds and ratios. The writes go through the page cache, whose flushing makes them vary
from run to run: read their ratio with care.

    python tools/bench_model_files.py --ngf 64 --repeats 7
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_predict import machine


@contextlib.contextmanager
def digests(on: bool):
    """The digest functions as they are (`on`), or replaced by a constant."""
    import geopix2pix.models.io as model_io
    import geopix2pix.training.checkpoint as checkpoint

    saved = model_io.weights_digest, checkpoint.state_digest
    if not on:
        model_io.weights_digest = checkpoint.state_digest = lambda *args, **kwargs: "off"
    try:
        yield
    finally:
        model_io.weights_digest, checkpoint.state_digest = saved


def timed(work, on: bool) -> float:
    os.sync()  # each timing starts with no earlier write still being flushed
    with digests(on):
        start = time.perf_counter()
        work(on)
        return time.perf_counter() - start


def workloads(folder: Path, ngf: int) -> list[tuple[str, object, object, object]]:
    """(name, write(on), read(on), path(on)) of a U-Net's model file and of a checkpoint of it
    with Adam's moments, as a run writes them."""
    from geopix2pix.models import GeneratorSpec, build_generator, load_model, save_model
    from geopix2pix.training.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint

    spec = GeneratorSpec("unet", 3, 1, 256, ngf=ngf)
    generator = build_generator(spec).eval()
    optimizer = torch.optim.Adam(generator.parameters())
    generator(torch.zeros(1, 3, 256, 256)).mean().backward()
    optimizer.step()
    state = {"generator": generator.state_dict(), "opt_g": optimizer.state_dict(), "step": 1}
    for on in (True, False):
        (folder / f"run-{on}").mkdir()

    def model_path(on):
        return folder / f"model-{on}.safetensors"

    return [("model file", lambda on: save_model(model_path(on), generator, spec, {}),
             lambda on: load_model(model_path(on)), model_path),
            ("checkpoint", lambda on: save_checkpoint(folder / f"run-{on}", state),
             lambda on: load_checkpoint(folder / f"run-{on}"),
             lambda on: folder / f"run-{on}" / CHECKPOINT)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    print(machine("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, write, read, path in workloads(Path(tmp), args.ngf):
            for what, work in (("write", write), ("read", read)):
                timed(work, True), timed(work, False)  # warm: files exist, caches filled
                pairs = [(timed(work, True), timed(work, False)) if i % 2 else
                         tuple(reversed((timed(work, False), timed(work, True))))
                         for i in range(args.repeats)]  # each first in turn
                on = statistics.median(p[0] for p in pairs)
                off = statistics.median(p[1] for p in pairs)
                size = path(True).stat().st_size / 2**20
                print(f"{name:<11} {what:<6} {size:5.0f} MiB  with digest {on:6.3f} s  "
                      f"without {off:6.3f} s  ratio {on / off:5.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
