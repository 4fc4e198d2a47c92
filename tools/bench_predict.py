"""Benchmark `geopix2pix predict`: peak memory by scene size, and time against the bare generator.

For each size a generated uint8 3-band scene (tiled, deflate) is predicted in a fresh subprocess,
which reports its own peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) and, in the same
process, the time of the bare generator forward over the same number of windows at the same batch
size (random input already on the device, no reading, blending or writing). Printed: per size the
windows, predict seconds, bare seconds, their ratio and the peak RSS; then the ratio of the peak
RSS of the largest to the smallest scene.

    python tools/bench_predict.py --sizes 2000,20000 --chip-size 256 --ngf 64 --device cuda
    python tools/bench_predict.py --sizes 500,3000 --chip-size 64 --ngf 8 --device cpu   # minutes
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_scene(path: Path, width: int, height: int) -> None:
    import rasterio
    from rasterio.transform import from_origin

    profile = dict(driver="GTiff", width=width, height=height, count=3, dtype="uint8",
                   crs="EPSG:32633", transform=from_origin(500000, 5_000_000, 10, 10), nodata=0,
                   tiled=True, blockxsize=512, blockysize=512, compress="deflate",
                   BIGTIFF="IF_SAFER")
    xx = np.arange(width)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, height, 512):
            rows = min(512, height - row)
            yy = np.arange(row, row + rows)[:, None]
            band = (np.sin(xx / 37.0) * 60 + np.cos(yy / 53.0) * 60 + 128).astype("uint8")
            dst.write(np.repeat(np.maximum(band, 1)[None], 3, 0),
                      window=rasterio.windows.Window(0, row, width, rows))


def make_model(path: Path, chip: int, ngf: int) -> None:
    from geopix2pix.chips.scaling import Scaling
    from geopix2pix.models import GeneratorSpec, build_generator, init_weights, save_model

    spec = GeneratorSpec(name="unet", in_channels=3, out_channels=1, chip_size=chip, ngf=ngf)
    side = {"bands": [1, 2, 3], "dtype": "uint8", "nodata": 0.0, "descriptions": ["r", "g", "b"],
            "scaling": Scaling("percentile", (0.0,) * 3, (255.0,) * 3).to_dict()}
    target = {"bands": [1], "dtype": "float32", "nodata": -9999.0, "descriptions": ["value"],
              "scaling": Scaling("minmax", (0.0,), (1000.0,)).to_dict()}
    meta = {"source": side, "target": target, "chip_size": chip, "crs": "EPSG:32633",
            "pixel_size": [10, 10], "training": {}, "validation": {}, "version": "bench"}
    save_model(path, init_weights(build_generator(spec)).eval(), spec, meta)


def bare_forward(generator, device, windows: int, batch: int, chip: int) -> float:
    """Seconds for the generator alone over `windows` windows (input pre-made on the device)."""
    import torch

    x = torch.rand(batch, 3, chip, chip, device=device) * 2 - 1
    cuda = device.type == "cuda"
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
        generator.to(memory_format=torch.channels_last)

    def step(n):
        if cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return generator(x[:n]).float().cpu()
        return generator(x[:n])

    with torch.inference_mode():
        step(batch)
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, windows, batch):
            step(min(batch, windows - i))
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - start


def child(args) -> None:
    """Predict one scene and time the bare generator in this process; print JSON."""
    from geopix2pix.models import load_model
    from geopix2pix.prediction import predict
    from geopix2pix.prediction.predictor import resolve_device

    device = resolve_device(args.device)
    model = load_model(args.model, device=device)
    start = time.perf_counter()
    result = predict(args.scene, args.out, model=model, batch_size=args.batch_size,
                     overlap=args.overlap, device=args.device, overwrite=True, progress=False)[0]
    predict_s = time.perf_counter() - start
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    bare_s = bare_forward(model.generator, device, result.windows, args.batch_size,
                          args.chip_size)
    print(json.dumps({"windows": result.windows, "predict_s": predict_s, "bare_s": bare_s,
                      "rss_mb": rss_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2000,20000", help="scene sides, comma-separated")
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene"), parser.add_argument("--out"), parser.add_argument("--model")
    args = parser.parse_args()
    if args.child:
        return child(args)
    import torch

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "model.safetensors"
    make_model(model, args.chip_size, args.ngf)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"torch threads, GPU {gpu}; torch {torch.__version__}")
    print(f"chip {args.chip_size}, ngf {args.ngf}, batch {args.batch_size}, overlap "
          f"{args.overlap}, device {args.device}")
    rss = {}
    for size in [int(s) for s in args.sizes.split(",")]:
        scene = work / f"scene_{size}.tif"
        t0 = time.perf_counter()
        make_scene(scene, size, size)
        made = time.perf_counter() - t0
        cmd = [sys.executable, __file__, "--child", "--scene", str(scene), "--out",
               str(work / f"pred_{size}.tif"), "--model", str(model), "--device", args.device,
               "--batch-size", str(args.batch_size), "--overlap", str(args.overlap),
               "--chip-size", str(args.chip_size)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        rss[size] = r["rss_mb"]
        print(f"{size}x{size}: scene made in {made:.1f} s; {r['windows']} windows; predict "
              f"{r['predict_s']:.2f} s, bare generator {r['bare_s']:.2f} s, ratio "
              f"{r['predict_s'] / r['bare_s']:.3f}; peak RSS {r['rss_mb']:.0f} MB")
        scene.unlink()
    sizes = sorted(rss)
    print(f"peak RSS {sizes[-1]} / {sizes[0]}: {rss[sizes[-1]] / rss[sizes[0]]:.3f}")


if __name__ == "__main__":
    main()
