"""Benchmark `geopix2pix predict`: time against the bare generator, and peak memory by scene size.

Each scene (generated: uint8, 3 bands, tiled 512, deflate; ``WxH`` or one number for a square)
is predicted in a fresh subprocess, which reports its own peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``: the whole process, torch and GDAL included) and times, in
the same process and alternating with the predict runs, the bare generator forward over the same
number of windows at the same batch size (random input already on the device: no reading,
scaling, blending or writing; on the CPU both one forward at a time on all of torch's threads and
several at once as predict runs them, the faster of the two being the baseline), and the
pipeline alone (predict with the generator replaced by a slice of its input: the windows per
second the pipeline could feed a fast accelerator). Per scene
it prints medians over ``--repeats`` runs: predict and bare seconds, the wall-time ratio (the
issue's goal: at most 1.10), the ratio of the process's CPU time (less sensitive to other
processes sharing the machine), the pipeline alone, the share of predict's CPU time spent outside
the generator's forwards (on the CPU, where the model threads run one forward each: what the
pipeline costs, whatever the machine's noise), and the peak RSS; then the peak RSS
of the largest scene over the smallest (goal: at most 1.25, and at most 1.5 GB at 20000 x 20000
on CPU). The machine (CPUs, torch threads, device, load average) is printed with the figures.

    # speed, paper's model (ngf 64, chip 256) and a tiny one (ngf 8, chip 64), CPU:
    python tools/bench_predict.py --scenes 1024 --chip-size 256 --ngf 64 --batch-size 4
    python tools/bench_predict.py --scenes 500,3000 --chip-size 64 --ngf 8 --repeats 5
    # memory: tiny model, one predict run per scene, no bare timing:
    python tools/bench_predict.py --scenes 2000,20000,40000x2000 --chip-size 64 --ngf 4 \\
        --overlap 0.25 --repeats 1 --no-bare
    # GPU, and with the windows weighted and summed on the host instead of the GPU:
    python tools/bench_predict.py --scenes 2000,20000 --device cuda --batch-size 32
    python tools/bench_predict.py --scenes 2000 --device cuda --batch-size 32 --host-blend
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GOAL_RATIO, GOAL_RSS_MB, GOAL_RSS_RATIO = 1.10, 1500, 1.25


def parse_scene(text: str) -> tuple[int, int]:
    """'3000' -> (3000, 3000); '40000x2000' -> (width 40000, height 2000)."""
    w, _, h = text.lower().partition("x")
    return int(w), int(h or w)


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
    from geopix2pix.models import (
        GeneratorSpec,
        ModelMetadata,
        SideMetadata,
        build_generator,
        init_weights,
        save_model,
    )

    spec = GeneratorSpec(name="unet", in_channels=3, out_channels=1, chip_size=chip, ngf=ngf)
    source = SideMetadata([1, 2, 3], "uint8", 0.0, ["r", "g", "b"],
                          Scaling("percentile", (0.0,) * 3, (255.0,) * 3))
    target = SideMetadata([1], "float32", -9999.0, ["value"], Scaling("minmax", (0.0,), (1000.0,)))
    meta = ModelMetadata(source, target, chip, "EPSG:32633", (10.0, 10.0), version="bench")
    save_model(path, init_weights(build_generator(spec)).eval(), spec, meta.to_dict())


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Unlike ru_maxrss, which Linux carries over from the parent
    at fork/exec, it counts only this process's own memory."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def bare_forward(generator, device, windows: int, batch: int, chip: int,
                 together: list[int] | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of the generator alone over `windows` windows at `batch` windows a
    forward, input pre-made on the device (inference mode; on CUDA channels_last and autocast to
    predict's precision: bf16, fp16 on GPUs without bf16).
    `together` (CPU): the torch threads of each of several threads running forwards at once, as
    predict runs them (`forward.cpu_workers`); None: one forward at a time on all of torch's
    threads."""
    import threading

    import torch

    from geopix2pix.runtime.device import cuda_autocast_dtype

    x = torch.rand(batch, 3, chip, chip, device=device) * 2 - 1
    cuda = device.type == "cuda"
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
        generator.to(memory_format=torch.channels_last)

    def step(n):
        if cuda:
            with torch.autocast("cuda", dtype=cuda_autocast_dtype()):
                return generator(x[:n]).float().cpu()
        return generator(x[:n])

    sizes = [min(batch, windows - i) for i in range(0, windows, batch)]
    threads = torch.get_num_threads()
    taking, errors = threading.Lock(), []

    def work(each: int) -> None:
        torch.get_num_threads()  # set the thread up first, or torch redoes it over our count
        torch.set_num_threads(each)
        with torch.inference_mode():
            while True:
                with taking:
                    if not sizes:
                        return
                    n = sizes.pop()
                step(n)

    with torch.inference_mode():
        step(batch)
    if cuda:
        torch.cuda.synchronize()
    start, cpu = time.perf_counter(), cpu_seconds()
    if together:
        def guarded(each: int) -> None:
            try:
                work(each)
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        pool = [threading.Thread(target=guarded, args=(each,)) for each in together]
        try:
            for thread in pool:
                thread.start()
        finally:
            for thread in pool:
                if thread.is_alive():
                    thread.join()
            torch.set_num_threads(threads)
        if errors:
            raise errors[0]
    else:
        work(threads)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start, cpu_seconds() - cpu


def pipeline_alone(model):
    """`model` with its generator replaced by a slice of the input: predicting with it times
    reading, scaling, blending and writing alone (how many windows per second the pipeline can
    feed an accelerator), whatever the device's speed."""
    import dataclasses

    import torch

    class Slice(torch.nn.Module):
        def __init__(self, channels: int, device):
            super().__init__()
            self.channels = channels
            self.anchor = torch.nn.Parameter(torch.zeros(1, device=device))  # sets the device

        def forward(self, x):
            return x[:, : self.channels]

    device = next(model.generator.parameters()).device
    return dataclasses.replace(model, generator=Slice(model.spec.out_channels, device))


class ModelThreadCPU:
    """The CPU seconds of predict's forwards on the CPU (each model thread's own clock around
    each forward), so that predict's CPU time splits into the forwards and everything else. Only
    where each model thread runs its forwards alone (one torch thread each): otherwise OpenMP's
    helper threads would be counted as everything else."""

    def __init__(self):
        import threading

        from geopix2pix.prediction.engine import forward

        self.seconds, self._lock = 0.0, threading.Lock()
        forward.cpu_forward = thread_timed(forward.cpu_forward, self._add)

    def _add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


def thread_timed(function, record):
    """`function`, passing the CPU seconds of the thread calling it to `record(seconds)`."""
    def timed(*args, **kwargs):
        start = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            record(time.thread_time() - start)

    return timed


def child(args) -> None:
    """Predict one scene `repeats` times, alternating with the bare forward; print JSON."""
    import torch

    from geopix2pix.models import load_model
    from geopix2pix.prediction import predict
    from geopix2pix.prediction.engine.forward import cpu_workers
    from geopix2pix.prediction.predictor import resolve_device

    device = resolve_device(args.device)
    if args.host_blend:
        from geopix2pix.prediction.engine import pipeline

        pipeline.FOLD_ON = frozenset()
    model = load_model(args.model, device=device)
    creation_options = dict(pair.split("=", 1) for pair in args.co)

    split = (ModelThreadCPU() if device.type == "cpu"
             and set(cpu_workers(torch.get_num_threads())) == {1} else None)

    def run_predict() -> dict:
        if split:
            split.seconds = 0.0
        start, cpu = time.perf_counter(), cpu_seconds()
        result = predict(args.scene, args.out, model=model, batch_size=args.batch_size,
                         overlap=args.overlap, device=args.device, overwrite=True,
                         progress=False, cog=args.cog, compress=args.compress,
                         creation_options=creation_options)[0]
        run = {"predict_s": time.perf_counter() - start, "predict_cpu": cpu_seconds() - cpu,
               "windows": result.windows}
        if split:
            run["outside_share"] = 1 - split.seconds / run["predict_cpu"]
        return run

    def run_pipeline() -> dict:
        start = time.perf_counter()
        predict(args.scene, args.out, model=pipeline_alone(model), batch_size=args.batch_size,
                overlap=args.overlap, device=args.device, overwrite=True, progress=False,
                cog=args.cog, compress=args.compress, creation_options=creation_options)
        return {"pipeline_s": time.perf_counter() - start}

    def run_bare(windows: int) -> dict:
        """The bare forward one batch at a time and, on the CPU, as predict runs it (several
        at once); the ratio is taken against the faster of the two."""
        wall, cpu = bare_forward(model.generator, device, windows, args.batch_size,
                                 args.chip_size)
        run = {"bare_one_s": wall, "bare_s": wall, "bare_cpu": cpu}
        together = cpu_workers(torch.get_num_threads()) if device.type == "cpu" else [1]
        if len(together) > 1:
            wall, cpu = bare_forward(model.generator, device, windows, args.batch_size,
                                     args.chip_size, together)
            run["bare_par_s"] = wall
            if wall < run["bare_s"]:
                run.update(bare_s=wall, bare_cpu=cpu)
        return run

    runs, windows, rss_first = [], 0, 0.0
    for i in range(args.repeats):  # alternate the order: P B, B P, P B, ...
        if args.bare and i % 2 == 1:
            run = run_bare(windows)
            run.update(run_predict())
        else:
            run = run_predict()
            if args.bare:
                run.update(run_bare(run["windows"]))
        if i == 0:  # the peak RSS reported: the first predict (and bare) run
            rss_first = peak_rss_mb()
        if args.bare:
            run.update(run_pipeline())
        windows = run["windows"]
        runs.append(run)
    print(json.dumps({"windows": windows, "runs": runs, "rss_mb": rss_first,
                      "rss_end_mb": peak_rss_mb(),
                      "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}))


def summarise(name: str, r: dict, bare: bool) -> dict:
    """One scene's line of figures (medians over the runs)."""
    med = {k: statistics.median(run[k] for run in r["runs"]) for k in r["runs"][0]}
    line = {"scene": name, "windows": r["windows"], "predict_s": med["predict_s"],
            "rss_mb": r["rss_mb"], "load": r["load"]}
    if bare:
        line.update(bare_s=med["bare_s"], bare_one_s=med["bare_one_s"],
                    bare_par_s=med.get("bare_par_s"),
                    ratio=statistics.median(x["predict_s"] / x["bare_s"] for x in r["runs"]),
                    best_ratio=min(x["predict_s"] for x in r["runs"])
                    / min(x["bare_s"] for x in r["runs"]),
                    cpu_ratio=statistics.median(x["predict_cpu"] / x["bare_cpu"]
                                                for x in r["runs"]),
                    pipeline_s=med["pipeline_s"], outside_share=med.get("outside_share"))
    return line


def print_line(s: dict) -> None:
    text = (f"{s['scene']:>12}: {s['windows']:7d} windows; predict {s['predict_s']:8.2f} s")
    if "ratio" in s:
        par = f", at once {s['bare_par_s']:.2f}" if s["bare_par_s"] else ""
        text += (f", bare {s['bare_s']:8.2f} s (one at a time {s['bare_one_s']:.2f}{par}), "
                 f"ratio {s['ratio']:.3f} (best/best "
                 f"{s['best_ratio']:.3f}, CPU time {s['cpu_ratio']:.3f}); pipeline alone "
                 f"{s['pipeline_s']:.2f} s = {s['windows'] / s['pipeline_s']:.0f} windows/s")
        if s["outside_share"] is not None:
            text += f"; CPU outside the forwards {100 * s['outside_share']:.1f}%"
    print(text + f"; peak RSS {s['rss_mb']:6.0f} MB; load {s['load']:.1f}", flush=True)


def machine(device: str) -> str:
    import rasterio
    import torch

    from geopix2pix.runtime.device import available_cpus

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    cpus = available_cpus()
    return (f"machine: {platform.processor() or platform.machine()}, {cpus} CPUs, "
            f"{torch.get_num_threads()} torch threads, device {device}, GPU {gpu}; "
            f"torch {torch.__version__}, GDAL {rasterio.__gdal_version__}, python "
            f"{platform.python_version()}; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", default="2000,20000",
                        help="scene sizes, comma-separated: 3000 or WIDTHxHEIGHT")
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="predict runs per scene")
    parser.add_argument("--compress", default="deflate",
                        choices=("deflate", "zstd", "lzw", "none"), help="predict's --compress")
    parser.add_argument("--co", action="append", default=[], metavar="NAME=VALUE",
                        help="a GDAL creation option of the output (predict's --co), repeatable")
    parser.add_argument("--cog", action="store_true",
                        help="write Cloud-Optimized GeoTIFFs (predict's --cog), overviews included")
    parser.add_argument("--host-blend", action="store_true",
                        help="on CUDA, weight and sum the windows in the blender thread, as on "
                             "the CPU, instead of on the GPU (pipeline.FOLD_ON): to compare")
    parser.add_argument("--no-bare", dest="bare", action="store_false",
                        help="skip the bare generator timing (memory runs)")
    parser.add_argument("--omp-wait-policy", choices=("default", "passive", "active"),
                        default="default", help="OMP_WAIT_POLICY of the measuring process (the "
                        "same for predict and bare); passive stops idle OpenMP threads spinning")
    parser.add_argument("--work-dir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the generated scenes")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene"), parser.add_argument("--out"), parser.add_argument("--model")
    args = parser.parse_args()
    if args.child:
        return child(args)
    from geopix2pix.prediction.predictor import resolve_device

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="bench_predict_"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / f"model_{args.chip_size}_{args.ngf}.safetensors"
    make_model(model, args.chip_size, args.ngf)
    print(machine(str(resolve_device(args.device))))
    print(f"model: U-Net chip {args.chip_size}, ngf {args.ngf}; batch {args.batch_size}, "
          f"overlap {args.overlap}, blend hann; {args.repeats} run(s) per scene, medians; "
          f"OMP_WAIT_POLICY {args.omp_wait_policy}; --compress {args.compress}"
          f"{'; --cog' if args.cog else ''}"
          f"{''.join(f'; --co {pair}' for pair in args.co)}"
          f"{'; --host-blend' if args.host_blend else ''}")
    lines = []
    for text in args.scenes.split(","):
        width, height = parse_scene(text)
        scene, name = work / f"scene_{width}x{height}.tif", f"{width}x{height}"
        if not scene.exists():
            make_scene(scene, width, height)
        cmd = [sys.executable, __file__, "--child", "--scene", str(scene), "--out",
               str(work / f"pred_{name}.tif"), "--model", str(model), "--device", args.device,
               "--batch-size", str(args.batch_size), "--overlap", str(args.overlap),
               "--chip-size", str(args.chip_size), "--repeats", str(max(1, args.repeats))]
        if not args.bare:
            cmd.append("--no-bare")
        if args.host_blend:
            cmd.append("--host-blend")
        cmd += ["--compress", args.compress]
        if args.cog:
            cmd.append("--cog")
        for pair in args.co:
            cmd += ["--co", pair]
        env = dict(os.environ)
        if args.omp_wait_policy != "default":
            env["OMP_WAIT_POLICY"] = args.omp_wait_policy.upper()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        lines.append(summarise(name, json.loads(out.strip().splitlines()[-1]), args.bare))
        print_line(lines[-1])
        (work / f"pred_{name}.tif").unlink(missing_ok=True)
        if not args.keep:
            scene.unlink()
    report(lines, args.bare)


def report(lines: list[dict], bare: bool) -> None:
    """The goals of the issue against the figures."""
    if bare:
        worst = max(lines, key=lambda s: s["ratio"])
        print(f"time ratio predict / bare generator: worst {worst['ratio']:.3f} "
              f"({worst['scene']}); goal <= {GOAL_RATIO}")
    by_pixels = sorted(lines, key=lambda s: s["windows"])
    small, large = by_pixels[0], by_pixels[-1]
    print(f"peak RSS: largest {large['rss_mb']:.0f} MB ({large['scene']}; goal <= "
          f"{GOAL_RSS_MB} MB at 20000x20000 on CPU); {large['scene']} / {small['scene']}: "
          f"{large['rss_mb'] / small['rss_mb']:.3f} (goal <= {GOAL_RSS_RATIO})")
    for s in lines:
        if s is not small and s is not large:
            print(f"  {s['scene']} / {small['scene']}: {s['rss_mb'] / small['rss_mb']:.3f}")

if __name__ == "__main__":
    main()
