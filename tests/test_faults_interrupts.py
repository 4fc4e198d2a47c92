"""The fault battery, interruptions: kill -9, SIGTERM and Ctrl-C at several points of
export-chips, train and predict, each followed by what the stop line (or, after kill -9, the
user) says to do: a rerun, or `train --resume`. The promise: a stop exits with 128 + the signal
and one "Stopped" line; whatever the stop, the rerun completes and gives the same result as an
uninterrupted run (byte for byte where the computation is deterministic: chips, dataset.json,
predictions, and on the CPU the trained weights), and leaves no stale temporary behind.
Each point is chosen by waiting for a file or a progress line to appear, not by a sleep."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster
from predict_helpers import unet_file, write_scene

from geopix2pix.cli import main
from geopix2pix.runtime.partials import WHERE

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="signals to a child need POSIX")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every run


# --- running and stopping a command ----------------------------------------------------------

class Command:
    """`geopix2pix ARGS` in a subprocess whose stderr is collected by a thread (so a test can
    wait for a progress line), stopped by `signum` once `ready()` is true."""

    def __init__(self, args: list) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "geopix2pix", *map(str, args)], stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL, text=True, env=ENV,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.err = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := self.process.stderr.read(1):
            self.err += chunk

    def stop_when(self, ready: Callable[[], bool], signum: int) -> tuple[int, str]:
        """Send `signum` once `ready()`; the exit status and stderr."""
        try:
            deadline = time.monotonic() + 180
            while not ready():
                assert self.process.poll() is None, f"ended before the point: {self.err}"
                assert time.monotonic() < deadline, f"the point never came: {self.err}"
                time.sleep(0.01)
            self.process.send_signal(signum)
            code = self.process.wait(180)
        finally:
            self.process.kill()
            self.process.wait()
        self.reader.join(10)
        return code, self.err


def run(args: list) -> None:
    """Run `geopix2pix ARGS` to its end in a subprocess (as the interrupted run was, with the
    same torch threads: the same arithmetic); it must succeed."""
    done = subprocess.run([sys.executable, "-m", "geopix2pix", *map(str, args)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


def run_here(args: list) -> None:
    """Run `geopix2pix ARGS` in this process (export: no torch arithmetic); it must succeed."""
    assert main([str(a) for a in args]) == 0


def stopped_line(code: int, err: str, signum: int) -> str:
    """After SIGINT/SIGTERM: exit 128 + signum and exactly one line, a "Stopped" one."""
    assert code == 128 + signum, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Stopped"), err
    return lines[0]


def files(folder: Path) -> dict[str, bytes | None]:
    """Every entry under `folder` (hidden ones too) with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


def count(folder: Path, pattern: str) -> int:
    """Files matching `pattern` anywhere under `folder`, hidden folders too (where an export
    may build its chips before putting them in place), listed again when a folder is moved
    while it is listed (the staged folder swapped in place)."""
    for _ in range(100):
        try:
            return len(list(folder.glob(f"**/{pattern}")))
        except FileNotFoundError:
            continue
    return 0


# --- export-chips ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rasters(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("rasters")
    data = np.random.default_rng(0).random((2, 192, 192), dtype=np.float32)
    write_raster(folder / "s.tif", data)
    write_raster(folder / "t.tif", data[:1])
    return folder


def export_args(rasters: Path, out: Path, *extra: str) -> list:
    return ["export-chips", rasters / "s.tif", rasters / "t.tif", "-o", out, "-q",
            "--chip-size", "32", "--stride", "32", "--workers", "0", *extra]  # 36 chips


@pytest.fixture(scope="module")
def uninterrupted_export(rasters, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("export") / "chips"
    run_here(export_args(rasters, out))
    return exported(out)


def exported(out: Path) -> dict:
    """An export's files, chips.gpkg by its rows (GeoPackage stores the time it was written)."""
    import geopandas as gpd

    content = files(out)
    del content["chips.gpkg"]
    return {**content, "chips.gpkg": gpd.read_file(out / "chips.gpkg").to_json()}


EXPORT_POINTS = {  # when the stop comes: `folder` holds the export's output folder
    "first-chip": lambda folder: count(folder, "source/*.tif") >= 1,
    "half-the-chips": lambda folder: count(folder, "target/*.tif") >= 18,
    "the-index": lambda folder: count(folder, "chips.gpkg") >= 1,
}


@pytest.mark.parametrize("signum, point", [(signal.SIGTERM, "first-chip"),
                                           (signal.SIGINT, "half-the-chips")],
                         ids=["SIGTERM-first-chip", "SIGINT-half-the-chips"])
def test_a_stopped_export_leaves_nothing_and_a_rerun_is_uninterrupted(
        rasters, tmp_path, uninterrupted_export, signum, point):
    out = tmp_path / "chips"
    code, err = Command(export_args(rasters, out)).stop_when(
        lambda: EXPORT_POINTS[point](tmp_path), signum)
    assert stopped_line(code, err, signum) == (f"Stopped: no chips were exported to {out} "
                                               "(none cut before the stop is left)")
    assert [p for p in tmp_path.rglob("*") if p != out] == []  # a rerun needs no --overwrite
    run_here(export_args(rasters, out))
    assert exported(out) == uninterrupted_export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips"]


@pytest.mark.parametrize("point", list(EXPORT_POINTS))
def test_a_killed_export_is_redone_by_a_rerun(rasters, tmp_path, uninterrupted_export, point):
    """kill -9 leaves no chance to clean up: the folder is incomplete (no dataset.json, so no
    train takes it), and the rerun the refusal asks for (--overwrite) replaces it whole."""
    out = tmp_path / "chips"
    code, _ = Command(export_args(rasters, out)).stop_when(
        lambda: EXPORT_POINTS[point](tmp_path), signal.SIGKILL)
    assert code == -signal.SIGKILL
    # the kill lands a moment after the point: by then a small export may have been swapped in
    # whole (dataset.json is written last); never a folder that only looks complete
    assert not (out / "dataset.json").exists() or exported(out) == uninterrupted_export
    run_here(export_args(rasters, out, "--overwrite"))
    assert exported(out) == uninterrupted_export
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chips"]  # nothing stale beside it


# --- train -----------------------------------------------------------------------------------

TRAIN = ["--recipe", "paper",
         "--ngf", "8", "--ndf", "8", "--batch-size", "4", "--workers", "0", "--device", "cpu",
         "--max-steps", "21", "--seed", "5"]  # 28 train chips: 7 steps an epoch


@pytest.fixture(scope="module")
def chips(rasters, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train") / "chips"
    run_here(export_args(rasters, out, "--split-block", "64"))
    return out


@pytest.fixture(scope="module")
def uninterrupted_run(chips) -> Path:
    run_dir = chips.parent / "full"
    run(["train", chips, "-o", run_dir, "-q", *TRAIN])
    return run_dir


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path)


def metrics(run_dir: Path) -> list[list[str]]:
    """metrics.csv's rows without their timings (images_per_second, epoch_seconds)."""
    return [row.split(",")[:-2] for row in (run_dir / "metrics.csv").read_text().splitlines()]


def assert_same_run(run_dir: Path, full: Path) -> None:
    """The same weights, bit for bit, in both model files, and the same losses and scores in
    metrics.csv; no temporary left (hidden files are temporaries)."""
    import torch

    for name in ("model.safetensors", "model-best.safetensors"):
        a, b = tensors(run_dir / name), tensors(full / name)
        assert a.keys() == b.keys()
        differ = [key for key in a if not torch.equal(a[key], b[key])]
        assert not differ, f"{name}: {len(differ)} tensors differ, e.g. {differ[:3]}"
    assert metrics(run_dir) == metrics(full)
    assert not [p.name for p in run_dir.rglob(".*")]


def step_shown(command: Command, step: int) -> Callable[[], bool]:
    """True once the progress bar shows `step` or more steps done."""
    def ready() -> bool:
        done = re.findall(r"\| *(\d+)/21 ", command.err)
        return bool(done) and int(done[-1]) >= step

    return ready


TRAIN_POINTS = {
    "mid-first-epoch": lambda command, run_dir: step_shown(command, 3),
    "first-checkpoint": lambda command, run_dir: (run_dir / "checkpoint.pt").exists,
    "mid-second-epoch": lambda command, run_dir: step_shown(command, 10),
}


@pytest.mark.parametrize("signum, point", [(signal.SIGINT, "first-checkpoint"),
                                           (signal.SIGTERM, "mid-second-epoch")],
                         ids=["SIGINT-first-checkpoint", "SIGTERM-mid-second-epoch"])
def test_a_stopped_train_resumes_to_the_uninterrupted_weights(chips, uninterrupted_run,
                                                              tmp_path, signum, point):
    run_dir = tmp_path / "run"
    command = Command(["train", chips, "-o", run_dir, *TRAIN])
    code, err = command.stop_when(TRAIN_POINTS[point](command, run_dir), signum)
    last = err.strip().splitlines()[-1]  # after the progress bar
    assert code == 128 + signum and "Traceback" not in err, err
    assert last == f"Stopped: continue from {run_dir / 'checkpoint.pt'} with --resume"
    run(["train", chips, "-o", run_dir, "--resume", "-q", "--workers", "0", "--device", "cpu"])
    assert_same_run(run_dir, uninterrupted_run)


def test_a_stop_as_training_starts_says_what_to_run_and_that_gives_the_same_weights(
        chips, uninterrupted_run, tmp_path):
    """SIGTERM as soon as train says it starts: whether the stop came before the first step (no
    checkpoint: start again with --overwrite) or after one (--resume), doing what the line says
    gives the uninterrupted run's weights."""
    run_dir = tmp_path / "run"
    command = Command(["train", chips, "-o", run_dir, "-q", *TRAIN])
    code, err = command.stop_when(lambda: "training on" in command.err, signal.SIGTERM)
    started, line = err.split("\n", 1)
    assert started.startswith("training on cpu")
    line = stopped_line(code, line, signal.SIGTERM)
    if line == f"Stopped: continue from {run_dir / 'checkpoint.pt'} with --resume":
        run(["train", chips, "-o", run_dir, "--resume", "-q", "--workers", "0", "--device",
             "cpu"])
    else:
        assert line == ("Stopped before the first checkpoint: nothing was saved to continue "
                        "from; run the command again with --overwrite")
        run(["train", chips, "-o", run_dir, "-q", *TRAIN, "--overwrite"])
    assert_same_run(run_dir, uninterrupted_run)


@pytest.mark.parametrize("point", ["mid-first-epoch", "mid-second-epoch"])
def test_a_killed_train_resumes_or_restarts_to_the_uninterrupted_weights(
        chips, uninterrupted_run, tmp_path, point):
    """kill -9: resumed from the last epoch's checkpoint (or, before there is one, started
    again with --overwrite). A kill while a model file or the checkpoint is being saved leaves
    its temporary (named after the killed process): the rerun removes those."""
    run_dir = tmp_path / "run"
    command = Command(["train", chips, "-o", run_dir, *TRAIN])
    code, _ = command.stop_when(TRAIN_POINTS[point](command, run_dir), signal.SIGKILL)
    assert code == -signal.SIGKILL
    for name in ("checkpoint.pt", "model.safetensors", "model-best.safetensors"):
        stem, suffix = name.rsplit(".", 1)
        (run_dir / f".{stem}.{WHERE}-{command.process.pid}-0a1b2c.partial.{suffix}").write_bytes(
            b"cut short by the kill")
    resumable = point != "mid-first-epoch"  # the first epoch's end wrote the checkpoint
    assert (run_dir / "checkpoint.pt").exists() == resumable
    if resumable:
        run(["train", chips, "-o", run_dir, "--resume", "-q", "--workers", "0", "--device",
             "cpu"])
    else:
        run(["train", chips, "-o", run_dir, "-q", *TRAIN, "--overwrite"])
    assert_same_run(run_dir, uninterrupted_run)  # and no temporary left


# --- predict ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scenes")
    write_scene(folder / "a.tif", 200, 200, seed=1)
    write_scene(folder / "b.tif", 1200, 1200, seed=2)
    unet_file(folder / "model.safetensors", descriptions=["elevation"])
    return folder


def predict_args(scenes: Path, *where: object) -> list:
    return ["predict", *where, "-m", scenes / "model.safetensors", "-q", "--device", "cpu",
            "--batch-size", "2"]


@pytest.fixture(scope="module")
def uninterrupted_predictions(scenes) -> dict:
    out = scenes / "full"
    run(predict_args(scenes, scenes / "a.tif", scenes / "b.tif", "--out-dir", out))
    return files(out)


def writing(folder: Path, name: str) -> Callable[[], bool]:
    """True once the hidden temporary of output `name` is in `folder`."""
    return lambda: folder.is_dir() and any(p.name.startswith(f".{Path(name).stem}.")
                                           for p in folder.iterdir())


def test_a_stopped_predict_leaves_nothing_and_a_rerun_is_uninterrupted(
        scenes, uninterrupted_predictions, tmp_path):
    signum = signal.SIGTERM
    out = tmp_path / "b.tif"
    code, err = Command(predict_args(scenes, scenes / "b.tif", out)).stop_when(
        writing(tmp_path, "b.tif"), signum)
    assert stopped_line(code, err, signum) == (f"Stopped: {out} was not written (no partial "
                                               "output is left)")
    assert list(tmp_path.iterdir()) == []
    run(predict_args(scenes, scenes / "b.tif", out))
    assert files(tmp_path) == {"b.tif": uninterrupted_predictions["b.tif"]}


def test_a_stopped_predict_of_scenes_keeps_those_done_and_a_rerun_completes(
        scenes, uninterrupted_predictions, tmp_path):
    out = tmp_path / "out"
    code, err = Command(predict_args(scenes, scenes / "a.tif", scenes / "b.tif", "--out-dir",
                                     out)).stop_when(
        lambda: (out / "a.tif").exists() and writing(out, "b.tif")(), signal.SIGINT)
    assert stopped_line(code, err, signal.SIGINT) == (
        f"Stopped after 1 of 2 scenes: their outputs are complete ({out / 'a.tif'}); those being "
        "written were removed")
    assert files(out) == {"a.tif": uninterrupted_predictions["a.tif"]}
    run(predict_args(scenes, scenes / "b.tif", "--out-dir", out))  # the scene not done
    assert files(out) == uninterrupted_predictions


@pytest.mark.parametrize("overwrite", [False, True], ids=["new-output", "overwrite"])
def test_a_killed_predict_is_redone_by_a_rerun_that_removes_its_temporary(
        scenes, uninterrupted_predictions, tmp_path, overwrite):
    """kill -9 leaves the hidden temporary: never under the output's name; with --overwrite the
    earlier output is kept whole until replaced. The rerun removes the temporary."""
    out = tmp_path / "b.tif"
    if overwrite:
        out.write_bytes(b"an earlier output")
    command = predict_args(scenes, scenes / "b.tif", out, *["--overwrite"] * overwrite)
    code, _ = Command(command).stop_when(writing(tmp_path, "b.tif"), signal.SIGKILL)
    assert code == -signal.SIGKILL
    left = {p.name for p in tmp_path.iterdir()} - {"b.tif"}
    assert len(left) == 1 and all(n.startswith(".b.") and ".partial" in n for n in left)
    assert (tmp_path / "b.tif").exists() == overwrite
    assert not overwrite or out.read_bytes() == b"an earlier output"
    run(command)
    assert files(tmp_path) == {"b.tif": uninterrupted_predictions["b.tif"]}
