"""Accuracy of the co-registration check (issue 20) on the real pairs in ../shared/data.

Shifts each pair's target by known offsets THROUGH ITS TRANSFORM (a copy with a translated
Affine in a temporary folder), reads it back onto the source grid as export does (PairReader:
a bilinear WarpedVRT, or a direct read for whole-pixel offsets on the same grid), estimates the
shift per chip and the scene's robust median of the confident chips, and prints a markdown
table of applied vs recovered shifts for docs/benchmarks.md.

    python tools/bench_coregistration.py [--chip-size 64] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geopix2pix.chips.coregistration import Shift, estimate_shift, scene_shift
from geopix2pix.raster.pair import PairReader

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PAIRS = {
    "dem_hillshade": ("dem_hillshade_exploradores/exploradores_aster_dem_30m.tif",
                      "dem_hillshade_exploradores/exploradores_aster_hillshade_gdal_az315_alt45.tif"),
    "sar_rgb": ("sar_optical_spacenet6_rotterdam/sar_masked_HH_HV_VH_VV_dB.tif",
                "sar_optical_spacenet6_rotterdam/rgb_unmasked.tif"),
}
OFFSETS = [(0.0, 0.0), (0.3, -0.2), (0.5, 0.5), (-1.25, 0.75), (2.0, 0.0), (-3.0, 2.0),
           (2.6, -1.4)]


def shifted_copy(source: Path, target: Path, dx: float, dy: float, folder: Path) -> Path:
    """A copy of `target` whose content lies (dx, dy) source pixels right/down of the original:
    its transform translated by that many of the source's pixels."""
    with rasterio.open(source) as src:
        ref = src.transform
    out = folder / f"target_{dx:+.2f}_{dy:+.2f}.tif"
    shutil.copyfile(target, out)
    with rasterio.open(out, "r+") as dst:
        dst.transform = Affine.translation(dx * ref.a, dy * ref.e) @ dst.transform
    return out


MARGIN = 4  # px kept clear of the source's edges, where a shifted target holds no data


def chip_shifts(source: Path, target: Path, chip_size: int) -> list[Shift]:
    """The estimated shift of every whole chip of the source grid, `MARGIN` inside its edges."""
    shifts = []
    with PairReader(source, target, *_all_bands(source, target)) as reader:
        for row in range(MARGIN, reader.source.height - chip_size - MARGIN + 1, chip_size):
            for col in range(MARGIN, reader.source.width - chip_size - MARGIN + 1, chip_size):
                read = reader.read(Window(col, row, chip_size, chip_size))
                shifts.append(estimate_shift(read.source, read.target, read.valid))
    return shifts


def _all_bands(*paths: Path) -> list[list[int]]:
    bands = []
    for path in paths:
        with rasterio.open(path) as ds:
            bands.append(list(range(1, ds.count + 1)))
    return bands


def measure(name: str, data: Path, chip_size: int, offsets=OFFSETS) -> list[dict]:
    source, target = (data / p for p in PAIRS[name])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        unshifted = chip_shifts(source, target, chip_size)
        for dx, dy in offsets:
            shifted = shifted_copy(source, target, dx, dy, Path(tmp))
            shifts = chip_shifts(source, shifted, chip_size)
            relative = [np.hypot(s.dx - s0.dx - dx, s.dy - s0.dy - dy)
                        for s, s0 in zip(shifts, unshifted) if s.confident and s0.confident]
            confident = [s for s in shifts if s.confident]
            errors = [np.hypot(s.dx - dx, s.dy - dy) for s in confident]
            scene = scene_shift(shifts)
            sx, sy, n = scene.dx, scene.dy, scene.confident
            rows.append(dict(pair=name, dx=dx, dy=dy, chips=len(shifts), confident=n,
                             scene_dx=sx, scene_dy=sy,
                             scene_error=float(np.hypot(sx - dx, sy - dy)),
                             chip_p90=float(np.percentile(errors, 90)) if errors else float("nan"),
                             chip_max=max(errors, default=float("nan")),
                             relative_max=max(relative, default=float("nan")),
                             psr=[round(s.confidence, 1) for s in shifts]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chip-size", type=int, default=64)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--psr", action="store_true", help="print every chip's confidence")
    args = parser.parse_args()
    print(f"chip size {args.chip_size}\n")
    print("| pair | applied (dx, dy) | chips | confident | scene median | scene error | "
          "chip error p90 / max | chip vs unshifted, max |")
    print("|---|---|---|---|---|---|---|---|")
    for name in PAIRS:
        for r in measure(name, args.data, args.chip_size):
            print(f"| {r['pair']} | ({r['dx']:+.2f}, {r['dy']:+.2f}) | {r['chips']} | "
                  f"{r['confident']} | ({r['scene_dx']:+.2f}, {r['scene_dy']:+.2f}) | "
                  f"{r['scene_error']:.2f} | {r['chip_p90']:.2f} / {r['chip_max']:.2f} | "
                  f"{r['relative_max']:.2f} |")
            if args.psr:
                print("   psr", r["psr"])


if __name__ == "__main__":
    main()
