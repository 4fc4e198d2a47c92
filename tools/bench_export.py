"""Benchmark: export-chips against the I/O limit (a bare rasterio read/write loop).

Generates a tiled, compressed source/target pair (default 8192 x 8192: 3-band uint16 source,
1-band uint8 target on the same grid), then in one run measures:
- the bare loop: read the same chip windows from both rasters and write the same chip GeoTIFFs
  (same profile) with plain rasterio, in one process;
- `export_chips` with 1 worker and with all cores;
- the co-registration check's cost: `export_chips` with 1 worker and `shift_check=False`
  against the same export with the check on (issue 20's goal: within 1.3x), and with every chip
  checked (as `--max-shift` does), and with `--correct-shift` (a first pass measuring the
  shift, then the target warped);
- peak memory (max RSS) of an export of the large scene and of a small one, each in its own
  process, to show that memory does not grow with the scene.
Prints times and the ratios export / bare loop, and whether issue 20's goal holds (the export
with the shift check on, 1 worker, within 1.3x of the bare loop).

    python tools/bench_export.py [--size 8192] [--chip-size 256] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geopix2pix.raster.write import gtiff_profile
from geopix2pix.runtime.device import available_cpus, default_workers


def generate(path: Path, size: int, bands: int, dtype: str, seed: int) -> None:
    """A smooth-plus-noise scene written block by block (never held whole in memory)."""
    rng = np.random.default_rng(seed)
    transform = Affine(10.0, 0, 400000.0, 0, -10.0, 5000000.0)
    profile = gtiff_profile(dtype, bands, "EPSG:32633", transform, size, size, None)
    block = 1024
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, block):
            for col in range(0, size, block):
                h, w = min(block, size - row), min(block, size - col)
                r, c = np.mgrid[row:row + h, col:col + w]
                base = 100 * (np.sin(r / 97.0) + np.cos(c / 61.0)) + 120
                data = np.stack([base + rng.normal(0, 5, (h, w)) + 10 * b for b in range(bands)])
                dst.write(data.clip(0, 250).astype(dtype), window=Window(col, row, w, h))


def bare_loop(source: Path, target: Path, windows: list[tuple[int, int]], size: int,
              out: Path) -> float:
    """Read the same windows from both rasters and write the same chips: the I/O limit."""
    (out / "source").mkdir(parents=True)
    (out / "target").mkdir(parents=True)
    start = time.perf_counter()
    with rasterio.open(source) as src, rasterio.open(target) as tgt:
        for row, col in windows:
            window = Window(col, row, size, size)
            for ds, side in ((src, "source"), (tgt, "target")):
                data = ds.read(window=window)
                profile = gtiff_profile(ds.dtypes[0], ds.count, ds.crs,
                                        ds.window_transform(window), size, size, ds.nodata,
                                        blocksize=min(size, 512))
                with rasterio.open(out / side / f"{row}_{col}.tif", "w", **profile) as dst:
                    dst.write(data)
    return time.perf_counter() - start


EXPORT_SNIPPET = """
import sys, time, json, resource
from geopix2pix.chips.export import export_chips
start = time.perf_counter()
export_chips(sys.argv[1], sys.argv[2], sys.argv[3], chip_size=int(sys.argv[4]),
             workers=int(sys.argv[5]), progress=False, overwrite=True,
             shift_check=sys.argv[6] != "off", correct_shift=sys.argv[6] == "correct",
             max_shift=1000.0 if sys.argv[6] == "all" else None)  # "all": every chip checked
elapsed = time.perf_counter() - start
# VmHWM is this process's own peak; ru_maxrss would include the parent's RSS at fork/exec
rss = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")][0]
child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps(dict(seconds=elapsed, max_rss_mb=rss / 1024, worker_max_rss_mb=child / 1024)))
"""


def run_export(source: Path, target: Path, out: Path, chip: int, workers: int,
               shift_check: str = "on") -> dict:
    """Export in a fresh process, so its peak memory is its own."""
    result = subprocess.run([sys.executable, "-c", EXPORT_SNIPPET, str(source), str(target),
                             str(out), str(chip), str(workers), shift_check],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def chip_windows(chips_dir: Path) -> list[tuple[int, int]]:
    import sqlite3

    with sqlite3.connect(chips_dir / "chips.gpkg") as db:
        return [tuple(r) for r in db.execute("SELECT row, col FROM chips ORDER BY fid")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--small-size", type=int, default=2048)
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--tmp", default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(dir=args.tmp, prefix="bench_export_"))
    try:
        print(f"machine: {available_cpus()} cpus; scene {args.size}^2, chips {args.chip_size}^2")
        t0 = time.perf_counter()
        for size, tag in ((args.size, "big"), (args.small_size, "small")):
            generate(tmp / f"{tag}_s.tif", size, 3, "uint16", 1)
            generate(tmp / f"{tag}_t.tif", size, 1, "uint8", 2)
        print(f"generated inputs in {time.perf_counter() - t0:.1f} s")

        one = run_export(tmp / "big_s.tif", tmp / "big_t.tif", tmp / "chips1", args.chip_size, 1)
        windows = chip_windows(tmp / "chips1")
        bare = bare_loop(tmp / "big_s.tif", tmp / "big_t.tif", windows, args.chip_size,
                         tmp / "bare")
        many = run_export(tmp / "big_s.tif", tmp / "big_t.tif", tmp / "chipsN", args.chip_size,
                          args.workers)
        small = run_export(tmp / "small_s.tif", tmp / "small_t.tif", tmp / "chips_small",
                           args.chip_size, 1)
        off = run_export(tmp / "big_s.tif", tmp / "big_t.tif", tmp / "chips_off",
                         args.chip_size, 1, shift_check="off")
        every = run_export(tmp / "big_s.tif", tmp / "big_t.tif", tmp / "chips_all",
                           args.chip_size, 1, shift_check="all")
        corrected = run_export(tmp / "big_s.tif", tmp / "big_t.tif", tmp / "chips_fixed",
                               args.chip_size, 1, shift_check="correct")
        print(f"chips: {len(windows)} pairs")
        print(f"bare rasterio loop (1 process): {bare:8.2f} s")
        print(f"export, 1 worker:               {one['seconds']:8.2f} s   "
              f"ratio {one['seconds'] / bare:.2f}")
        print(f"export, 1 worker, --no-shift-check: {off['seconds']:8.2f} s   "
              f"check on / off {one['seconds'] / off['seconds']:.2f}")
        print(f"export, 1 worker, every chip checked (--max-shift): {every['seconds']:8.2f} s   "
              f"/ off {every['seconds'] / off['seconds']:.2f}")
        print(f"export, 1 worker, --correct-shift (a first pass, then a resampled "
              f"target): {corrected['seconds']:8.2f} s   / off "
              f"{corrected['seconds'] / off['seconds']:.2f}")
        for against, seconds in (("the bare rasterio loop", bare),
                                 ("the same export with --no-shift-check", off["seconds"])):
            ratio = one["seconds"] / seconds
            print(f"issue 20's goal, 1 worker: export with the shift check on / {against}: "
                  f"{ratio:.2f} ({'within' if ratio <= 1.3 else 'OVER'} 1.3x)")
        print(f"export, {args.workers} workers:              {many['seconds']:8.2f} s   "
              f"ratio {many['seconds'] / bare:.2f}")
        print(f"peak RSS, 1 worker, {args.size}^2: {one['max_rss_mb']:.0f} MB; "
              f"{args.small_size}^2: {small['max_rss_mb']:.0f} MB "
              f"(ratio {one['max_rss_mb'] / small['max_rss_mb']:.2f})")
        print(f"peak RSS, {args.workers} workers: main {many['max_rss_mb']:.0f} MB, "
              f"largest worker {many['worker_max_rss_mb']:.0f} MB (an upper bound: Linux counts "
              "a spawned worker's parent RSS in its ru_maxrss)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
