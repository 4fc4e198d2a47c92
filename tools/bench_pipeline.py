"""Benchmark: how many windows a second the CPU side of predict can feed a fast accelerator, and
which stage limits it.

The pipeline runs alone (`bench_predict.pipeline_alone`: the generator replaced by a slice of its
input) on a generated scene (uint8, 3 bands, tiled 512, deflate), and each stage's thread CPU
seconds are summed: the reader (`reading.read`; without the threads helping it read), the
blender and the writer (GDAL's compression threads are not in any of them). A stage's windows
per CPU-second is its ceiling when it has a core to itself. Each configuration is run
``--repeats`` times, in turn; medians, printed as each configuration completes.

- ``--blend host,device``: the windows weighted and summed in the blender thread, or where the
  model ran (`pipeline.FOLD_ON`: the GPU's way; on the CPU the fold then runs in the model
  threads, so it shows the blender's share only).
- ``--workers 1,2,4``: threads reading each strip (`reading.read_workers`, split by columns).
- Reading alone (read, scale, batch), without the other stages: ``--workers`` threads against
  one thread, measured in the same run (the baseline of the ratio).

    python tools/bench_pipeline.py --scene 3000 --workers 1,2
    python tools/bench_pipeline.py --scene 8000 --device cuda --batch-size 32 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import torch
from bench_predict import (
    machine,
    make_model,
    make_scene,
    parse_scene,
    pipeline_alone,
    thread_timed,
)


class StageClock:
    """The thread CPU seconds spent in each of the pipeline's stage functions."""

    STAGES = (("reading", "read"), ("pipeline", "_blender"), ("pipeline", "_writer"))

    def __init__(self):
        from geopix2pix.prediction.engine import pipeline, reading

        self.seconds: dict[str, float] = {}
        self._lock = threading.Lock()
        for module, name in self.STAGES:
            target = {"reading": reading, "pipeline": pipeline}[module]
            setattr(target, name, thread_timed(getattr(target, name), partial(self._add, name)))

    def _add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] = self.seconds.get(name, 0.0) + seconds


def reading_alone(scene: Path, chip: int, batch: int, workers: int) -> float:
    """Wall seconds of reading, scaling and batching the scene's windows as predict's reader does
    with `workers` threads reading each strip, nothing else running."""
    import rasterio

    from geopix2pix.chips.scaling import Scaling
    from geopix2pix.prediction.engine import reading
    from geopix2pix.prediction.engine.channels import Channel
    from geopix2pix.prediction.engine.windows import make_layout, strip_cache_bytes

    class Sink(Channel):
        def put(self, item) -> None:
            pass

    scaling = Scaling("percentile", (0.0,) * 3, (255.0,) * 3)
    with rasterio.open(scene) as dataset:
        layout = make_layout(dataset.height, dataset.width, chip, 0.5, "hann")
        chunks = layout.chunks()
        with rasterio.Env(GDAL_CACHEMAX=strip_cache_bytes(dataset, layout, chunks)):
            start = time.perf_counter()
            reading.read(dataset, [1, 2, 3], layout, chunks, scaling, batch,
                         Sink(threading.Event()), workers, lambda: rasterio.open(scene))
            return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scene", default="3000", help="WIDTHxHEIGHT or one number")
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--blend", default="host,device")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_pipeline_") as work:
        run(args, device, Path(work))


def run(args, device: torch.device, work: Path) -> None:
    from geopix2pix.models import load_model
    from geopix2pix.prediction import predict
    from geopix2pix.prediction.engine import pipeline, reading

    width, height = parse_scene(args.scene)
    scene, out = work / "scene.tif", work / "out.tif"
    make_scene(scene, width, height)
    make_model(work / "model.safetensors", args.chip_size, 8)
    model = pipeline_alone(load_model(work / "model.safetensors", device=device))
    clock = StageClock()
    print(machine(str(device)))
    print(f"scene {width}x{height}, chip {args.chip_size}, batch {args.batch_size}; "
          f"{args.repeats} runs each, medians; the pipeline alone (no model)")
    configs = [(blend, int(n)) for blend in args.blend.split(",")
               for n in args.workers.split(",")]
    runs: dict[tuple[str, int], list[tuple[float, dict]]] = {c: [] for c in configs}
    windows = 0
    for repeat in range(args.repeats):
        for blend, workers in configs:
            pipeline.FOLD_ON = frozenset({device.type}) if blend == "device" else frozenset()
            os.environ[reading.WORKERS_VARIABLE] = str(workers)
            clock.seconds = {}
            start = time.perf_counter()
            windows = predict(scene, out, model=model, batch_size=args.batch_size,
                              device=args.device, overwrite=True, progress=False)[0].windows
            runs[(blend, workers)].append((time.perf_counter() - start, dict(clock.seconds)))
            if repeat == args.repeats - 1:
                print_config(blend, workers, runs[(blend, workers)], windows)
    os.environ.pop(reading.WORKERS_VARIABLE, None)
    base = None
    for workers in sorted({1, *(int(n) for n in args.workers.split(","))}):
        times = [reading_alone(scene, args.chip_size, args.batch_size, workers)
                 for _ in range(args.repeats)]
        wall = statistics.median(times)
        base = base or wall
        print(f"reading alone, {workers} thread(s): {wall:.3f} s = {windows / wall:.0f} "
              f"windows/s, {base / wall:.2f}x one thread", flush=True)


def print_config(blend: str, workers: int, results: list[tuple[float, dict]],
                 windows: int) -> None:
    wall = statistics.median(r[0] for r in results)
    stages = {name: statistics.median(r[1].get(name, 0.0) for r in results)
              for _, name in StageClock.STAGES}
    text = ", ".join(f"{name.strip('_')} {cpu:.3f} CPU-s ({windows / cpu:.0f}/s)"
                     for name, cpu in stages.items() if cpu)
    print(f"blend on {blend:>6}, {workers} read thread(s): {wall:.3f} s = "
          f"{windows / wall:.0f} windows/s; {text}", flush=True)


if __name__ == "__main__":
    main()
