"""A script that trains and predicts several times in one torchrun launch: the processes join
the process group once and keep it (torch does not reliably join a second one after leaving the
first: the second rendezvous sometimes waited forever), and leaving it at the end stops its gloo
threads (left running into the interpreter's shutdown, they now and then aborted a finished run)."""

from __future__ import annotations

import os
import sys
import textwrap

import numpy as np
import rasterio
from conftest import run_whole, write_raster

from geopix2pix.chips.export import export_chips

SCRIPT = textwrap.dedent("""
    import os
    import sys
    from pathlib import Path
    from geopix2pix.prediction.distributed import predict_sharded
    from geopix2pix.training import train
    from geopix2pix.runtime import distributed

    if __name__ == "__main__":
        chips, out, scene = sys.argv[1:]
        for run in ("a", "b"):
            result = train(chips, f"{out}/{run}", max_steps=2, ngf=8, ndf=8, batch_size=2,
                           workers=0, quiet=True, log=lambda message: None)
            for name in ("p1", "p2"):
                predict_sharded([scene], out_dir=f"{out}/{run}-{name}", model=result.model_path,
                                progress=False)
        rank, world = distributed.rank(), distributed.world_size()
        distributed.cleanup()  # what the process does at exit: the group's threads must stop
        tasks = "/proc/self/task"  # this process's threads (Linux)
        names = [Path(tasks, t, "comm").read_text().strip()
                 for t in (os.listdir(tasks) if os.path.isdir(tasks) else [])]
        left = sorted(name for name in names if "gloo" in name)
        with open(f"{out}/rank{rank}.txt", "w") as done:
            done.write(f"{rank} of {world} done; gloo threads left: {left}")
""")


def test_a_torchrun_script_trains_and_predicts_several_times(tmp_path):
    y, x = np.mgrid[0:96, 0:96]
    dem = (100 + 30 * np.sin(x / 11.0) + 25 * np.cos(y / 13.0)).astype("float32")
    scene = write_raster(tmp_path / "dem.tif", dem)
    target = write_raster(tmp_path / "shade.tif", (dem * 2).astype("float32"))
    export_chips(scene, target, tmp_path / "chips", chip_size=32, val_fraction=0.25,
                 progress=False, workers=1)
    (tmp_path / "script.py").write_text(SCRIPT)
    # the stacks of every thread if a rank aborts (a rare SIGABRT at exit, under load: where?)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1",
           "TORCH_SHOW_CPP_STACKTRACES": "1"}
    done = run_whole([sys.executable, "-m", "torch.distributed.run", "--standalone",
                      "--nproc-per-node", "2", str(tmp_path / "script.py"),
                      str(tmp_path / "chips"), str(tmp_path / "out"), str(scene)],
                     timeout=240, env=env)
    # (which ranks got to the end tells an abort at exit from one in the work)
    finished = sorted(p.name for p in (tmp_path / "out").glob("rank*.txt"))
    fatal = done.stderr.find("Fatal Python error")  # faulthandler's stacks, if a rank aborted
    assert done.returncode == 0, (f"ranks finished: {finished}\n"
                                  f"{done.stderr[max(fatal, 0):][:8000]}\n...\n"
                                  f"{done.stderr[-1500:]}")
    assert [(tmp_path / "out" / f"rank{r}.txt").read_text() for r in (0, 1)] == [
        "0 of 2 done; gloo threads left: []", "1 of 2 done; gloo threads left: []"]
    for run in ("a", "b"):
        for name in ("p1", "p2"):
            with rasterio.open(tmp_path / "out" / f"{run}-{name}" / "dem.tif") as out:
                assert out.shape == (96, 96)
