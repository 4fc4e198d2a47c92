"""Benchmark: predicting many small scenes in one call (a folder of tiles).

Generates ``--tiles`` scenes of ``--size`` pixels (as bench_predict's scenes), predicts them in one
`predict` call with consecutive small scenes grouped into one pipeline run (`prediction.grouped`,
the default) and with every scene run alone (``grouped.SMALL_WINDOWS = 0``, the previous way),
in turn, and times the bare generator forward over the same number of windows at the same batch
size, in the same process. Prints medians over ``--repeats``: seconds, milliseconds per tile, and
each way's ratio to the bare forward. ``--workers 1,4`` times the grouped way with each number of
reading threads (GEOPIX2PIX_READ_WORKERS; on a GPU, more than one reads scenes ahead in parallel).

    python tools/bench_tiles.py --tiles 30 --size 300 --chip-size 64 --ngf 8 --batch-size 8
    python tools/bench_tiles.py --tiles 60 --size 512 --device cuda --batch-size 32 --workers 1,4
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_predict import bare_forward, machine, make_model, make_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=30)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--chip-size", type=int, default=64)
    parser.add_argument("--ngf", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", default="", help="reading threads for the grouped way, "
                        "e.g. 1,4 (default: predict's own choice)")
    args = parser.parse_args()

    from geopix2pix.models import load_model
    from geopix2pix.prediction import grouped, predict
    from geopix2pix.prediction.engine.forward import cpu_workers
    from geopix2pix.prediction.engine.reading import WORKERS_VARIABLE

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory(prefix="bench_tiles_") as work:
        work = Path(work)
        tiles = []
        for i in range(args.tiles):
            tiles.append(work / f"tile_{i}.tif")
            make_scene(tiles[-1], args.size, args.size)
        make_model(work / "model.safetensors", args.chip_size, args.ngf)
        model = load_model(work / "model.safetensors", device=device)
        print(machine(str(device)))
        print(f"{args.tiles} tiles of {args.size}^2, chip {args.chip_size}, ngf {args.ngf}, "
              f"batch {args.batch_size}; {args.repeats} runs each, medians")
        small = grouped.SMALL_WINDOWS

        readers = {f"grouped, {w} readers": w for w in args.workers.split(",") if w} or \
            {"grouped": ""}

        def run(way: str) -> tuple[float, int]:
            grouped.SMALL_WINDOWS = 0 if way == "alone" else small
            os.environ[WORKERS_VARIABLE] = str(readers.get(way, ""))
            start = time.perf_counter()
            results = predict(tiles, out_dir=work / "out", model=model, overwrite=True,
                              batch_size=args.batch_size, device=args.device, progress=False)
            assert all(result.ok for result in results), [r.error for r in results]
            return time.perf_counter() - start, sum(result.windows for result in results)

        ways = [*readers, "alone"]
        run(ways[0])  # warm-up
        times: dict[str, list[float]] = {way: [] for way in [*ways, "bare"]}
        windows = 0
        together = cpu_workers(torch.get_num_threads()) if device.type == "cpu" else None
        for _ in range(args.repeats):
            for way in ways:
                seconds, windows = run(way)
                times[way].append(seconds)
            times["bare"].append(bare_forward(model.generator, device, windows,
                                              args.batch_size, args.chip_size, together)[0])
        bare = statistics.median(times["bare"])
        print(f"{windows} windows; bare forward (as predict runs it) {bare:.2f} s")
        for way in ways:
            seconds = statistics.median(times[way])
            print(f"{way:>18}: {seconds:.2f} s = {1000 * seconds / args.tiles:.0f} ms/tile, "
                  f"ratio to the bare forward {seconds / bare:.2f}")


if __name__ == "__main__":
    main()
