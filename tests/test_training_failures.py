"""What goes wrong in `geopix2pix train`, on real chips: a PatchGAN too deep for the chips, a full
disk, SIGTERM and Ctrl-C (with DataLoader workers), a damaged chip, a bad encoder weights file.
Each gets one line (and no traceback); a stop says whether and where it can be resumed."""

from __future__ import annotations

import errno
import functools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from test_training import make_chips

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.models import build_discriminator
from geopix2pix.models.patchgan import max_layers, min_input_size, patch_map_size
from geopix2pix.runtime.stopping import ignore_stop_signals
from geopix2pix.training import TrainingStopped, train
from geopix2pix.training.checkpoint import load_checkpoint
from geopix2pix.training.outputs import writing

TINY = ["--recipe", "paper",
        "--ngf", "8", "--ndf", "8", "--batch-size", "4", "-q", "--device", "cpu"]
ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    return make_chips(tmp_path_factory.mktemp("failures"))


def _args(chips: Path, run: Path, *more: str) -> list[str]:
    return ["train", str(chips), "-o", str(run), *TINY, *more]


def _one_line_error(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("Error:"), err
    return err


# --- PatchGAN depth and chip size -------------------------------------------------------------

def test_patch_map_size_is_what_the_patchgan_returns():
    for size in (32, 48, 64, 128):
        for n_layers in range(1, 7):
            disc = build_discriminator(2, ndf=2, n_layers=n_layers).eval()
            expected = patch_map_size(size, n_layers)
            if expected < 1:
                with pytest.raises(ValueError, match=f"at least {min_input_size(n_layers)} px"):
                    disc(torch.zeros(1, 2, size, size))
                assert n_layers > max_layers(size)
            else:
                assert disc(torch.zeros(1, 2, size, size)).shape[-1] == expected
                assert n_layers <= max_layers(size)
    assert (max_layers(64), min_input_size(5), min_input_size(3)) == (4, 128, 32)


def test_n_layers_too_deep_for_the_chips_is_refused_before_any_file(chips, tmp_path, capsys):
    run = tmp_path / "run"
    err = _one_line_error(capsys, _args(chips, run, "--n-layers", "5", "--workers", "0"))
    assert "--n-layers 5 needs chips of at least 128 px" in err
    assert "--n-layers 4 or less" in err
    assert not run.exists()
    assert main(_args(chips, run, "--n-layers", "4", "--workers", "0", "--max-steps", "1")) == 0


# --- a full disk ------------------------------------------------------------------------------

def test_a_full_disk_while_saving_the_model_names_the_file(chips, tmp_path, capsys, monkeypatch):
    """The model file's data reaches the disk at fsync, which reports a full disk there
    (delayed allocation, network filesystems)."""
    fsync = os.fsync

    def full(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".partial.safetensors"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell the model file's descriptor")
    monkeypatch.setattr(os, "fsync", full)
    run = tmp_path / "run"
    err = _one_line_error(capsys, _args(chips, run, "--workers", "0", "--max-steps", "1"))
    assert err.startswith(f"Error: cannot write {run / 'model.safetensors'} (No space left on "
                          "device): "), err
    assert err.endswith(f" free on the filesystem of {run}/; free some space or choose another "
                        "output folder"), err
    assert not list(run.glob(".*"))  # no temporary file left behind


def test_a_full_disk_while_saving_the_checkpoint_names_it(chips, tmp_path, capsys, monkeypatch):
    """torch.save fails with a RuntimeError whose context is the OS's error."""
    save = torch.save

    class FullDisk:
        def __init__(self, handle) -> None:
            self.handle, self.written = handle, 0

        def write(self, data) -> int:
            self.written += len(data)
            if self.written > 4096:
                raise ENOSPC
            return self.handle.write(data)

        def flush(self) -> None:
            self.handle.flush()

    def save_to_full_disk(obj, f, **kwargs) -> None:
        if isinstance(f, (str, os.PathLike)):
            with open(f, "wb") as handle:
                return save(obj, FullDisk(handle), **kwargs)
        return save(obj, FullDisk(f), **kwargs)

    monkeypatch.setattr(torch, "save", save_to_full_disk)
    run = tmp_path / "run"
    err = _one_line_error(capsys, _args(chips, run, "--workers", "0", "--max-steps", "1"))
    assert err.startswith(f"Error: cannot write {run / 'checkpoint.pt'} (No space left on "
                          "device): "), err
    assert err.endswith(f" free on the filesystem of {run}/; free some space or choose another "
                        "output folder"), err
    assert not (run / "checkpoint.pt").exists() and not list(run.glob(".*"))


def test_writing_turns_write_failures_into_one_line_and_lets_bugs_through(tmp_path):
    target = tmp_path / "metrics.csv"
    denied = r"cannot write .*metrics.csv \(Permission denied\); choose a folder you can write to$"
    with pytest.raises(GeoPix2PixError, match=denied), writing(target):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
    with pytest.raises(RuntimeError, match="a bug"), writing(target):
        raise RuntimeError("a bug")


# --- stops: SIGTERM, Ctrl-C -------------------------------------------------------------------

def test_sigterm_to_the_process_group_with_workers_stops_cleanly(chips, tmp_path):
    """As `timeout -s TERM` does: the main process and its DataLoader workers get SIGTERM."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "geopix2pix", *_args(chips, run, "--workers", "1",
                                                          "--max-steps", "100000")]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env,
                          start_new_session=True) as process:
        try:
            while "training on" not in (line := process.stderr.readline()):
                assert line, "the run ended before training"
            time.sleep(1.0)  # into the steps
            os.killpg(process.pid, signal.SIGTERM)
            _, err = process.communicate(timeout=120)  # until the workers are gone too
            assert process.returncode == 128 + signal.SIGTERM, err
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
    assert "Traceback" not in err and "killed by signal" not in err, err
    assert err.strip() == f"Stopped: continue from {run / 'checkpoint.pt'} with --resume"
    assert load_checkpoint(run)["step"] >= 1
    with pytest.raises(ProcessLookupError):  # the workers are gone too
        os.killpg(process.pid, 0)


def test_a_stop_before_the_first_checkpoint_says_nothing_was_saved(chips, tmp_path, capsys,
                                                                   monkeypatch):
    import geopix2pix.training.trainer as trainer

    def interrupted(*_args, **_kwargs):  # Ctrl-C while the loaders start, after train.json
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer, "make_loader", interrupted)
    run = tmp_path / "run"
    assert main(_args(chips, run, "--workers", "0")) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip()
    assert err == ("Stopped before the first checkpoint: nothing was saved to continue from; "
                   "run the command again")
    assert not run.exists()  # nothing to keep: what the run made is removed
    monkeypatch.undo()
    assert main(_args(chips, run, "--workers", "0", "--max-steps", "1")) == 0


def test_a_stop_during_the_start_validation_takes_no_step(chips, tmp_path, capsys,
                                                        monkeypatch):
    """Ctrl-C while a residual run validates its start: the run stops there (it took a step
    first), saying that nothing was saved."""
    from geopix2pix.training.loop import EpochRunner

    scored = EpochRunner._score_start

    def interrupted_while_scoring(self):
        scored(self)
        os.kill(os.getpid(), signal.SIGINT)  # the run's handler turns it into a stop request

    monkeypatch.setattr(EpochRunner, "_score_start", interrupted_while_scoring)
    run = tmp_path / "run"
    assert main(_args(chips, run, "--workers", "0", "--residual", "linear")) == \
        128 + signal.SIGINT
    said = capsys.readouterr().err.strip().splitlines()
    assert said[0].startswith("training on ") and said[1:] == [
        "Stopped before the first checkpoint: nothing was saved to continue from; run the "
        "command again"]
    assert not run.exists()


def test_a_stop_after_the_last_step_points_at_the_checkpoint(chips, tmp_path, capsys,
                                                            monkeypatch):
    """A signal while the finished run closes (outside the steps) must not say that nothing
    was saved and to start again with --overwrite: the checkpoint is there."""
    from geopix2pix.training.run_folder import RunFolder

    def stopped(self, family):
        raise KeyboardInterrupt

    monkeypatch.setattr(RunFolder, "check_replicas", stopped)
    run = tmp_path / "run"
    assert main(_args(chips, run, "--workers", "0", "--max-steps", "2")) == 128 + signal.SIGINT
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"Stopped: continue from {run / 'checkpoint.pt'} with --resume"


def test_a_stopped_run_says_which_checkpoint_to_resume(chips, tmp_path):
    with pytest.raises(TrainingStopped) as stopped:
        train(chips, tmp_path / "run", callback=lambda info: info["step"] == 2, max_steps=50,
              ngf=8, ndf=8, batch_size=4, workers=0, quiet=True, device="cpu")
    assert stopped.value.checkpoint == tmp_path / "run" / "checkpoint.pt"
    assert load_checkpoint(tmp_path / "run")["step"] == 2


# --- a damaged chip ---------------------------------------------------------------------------

def _damage(path: Path) -> None:
    """Rewrite a chip as small deflate tiles and overwrite its middle bytes."""
    with rasterio.open(path) as src:
        profile, data = src.profile, src.read()
    profile.update(tiled=True, blockxsize=16, blockysize=16, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    raw = bytearray(path.read_bytes())
    middle, quarter = len(raw) // 2, len(raw) // 4
    raw[middle:middle + quarter] = b"\x55" * quarter
    path.write_bytes(bytes(raw))


@pytest.fixture(scope="module")
def damaged_chips(chips, tmp_path_factory) -> Path:
    """A copy of `chips` whose train source chips do not decode (the val chips are intact)."""
    import shutil

    import geopix2pix.chips.dataset as dataset

    copy = tmp_path_factory.mktemp("damaged") / "chips"
    shutil.copytree(chips, copy)
    for chip_id in dataset.chip_ids(copy, "train"):
        _damage(copy / "source" / f"{chip_id}.tif")
    return copy


@pytest.mark.parametrize("workers", ["0", "1"])
def test_a_damaged_chip_is_named_with_and_without_workers(damaged_chips, tmp_path, capsys,
                                                          workers):
    err = _one_line_error(capsys, _args(damaged_chips, tmp_path / "run", "--workers", workers,
                                        "--max-steps", "2"))
    source = re.escape(str(damaged_chips / "source"))
    assert re.match(rf"Error: chip {source}/p\d+_r\d+_c\d+\.tif is damaged \(.*IReadBlock failed"
                    r".*\); rerun the export", err), err
    assert "DataLoader" not in err and "Traceback" not in err


def test_the_chip_dataset_of_the_python_api_names_a_damaged_chip(damaged_chips):
    """Also outside `train`: a user's own DataLoader over ChipDataset, with a worker."""
    from geopix2pix.chips.dataset import ChipDataset, ChipReadError

    loader = torch.utils.data.DataLoader(ChipDataset(damaged_chips, "train"), batch_size=2,
                                         num_workers=1)
    with pytest.raises(ChipReadError) as caught:
        next(iter(loader))
    assert re.match(rf"chip {re.escape(str(damaged_chips))}/source/p\d+_r\d+_c\d+"
                    r"\.tif is damaged \(.*IReadBlock failed", str(caught.value)), str(caught.value)
    assert ChipDataset(damaged_chips, "val")[0]["source"].shape[0] > 0  # intact chips read


@pytest.mark.parametrize("bands, size", [(4, None), (None, 16)])
def test_a_chip_of_other_bands_or_size_than_dataset_json_says_is_damaged(chips, tmp_path,
                                                                         capsys, bands, size):
    """A chip copied in from another folder (4 bands, or 16 px) was torch's "stack expects
    each tensor to be equal size" traceback, or numpy's broadcast error."""
    import shutil

    import geopix2pix.chips.dataset as dataset

    copy = tmp_path / "chips"
    shutil.copytree(chips, copy)
    chip = copy / "source" / f"{dataset.chip_ids(copy, 'train')[0]}.tif"
    with rasterio.open(chip) as src:
        profile, data = src.profile, src.read()
    n = bands or profile["count"]
    data = np.resize(data, (n, size or data.shape[1], size or data.shape[2]))
    profile.update(count=n, height=data.shape[1], width=data.shape[2], blockxsize=16,
                   blockysize=16, tiled=True)
    with rasterio.open(chip, "w", **profile) as dst:
        dst.write(data)
    err = _one_line_error(capsys, _args(copy, tmp_path / "run", "--workers", "0",
                                        "--max-steps", "2"))
    found = f"{data.shape[0]} band(s) of {data.shape[2]} x {data.shape[1]} px"
    assert err.startswith(f"Error: chip {chip} is damaged ({found}; {copy / 'dataset.json'} "
                          "says"), err
    assert err.endswith("rerun the export that made it (geopix2pix export-chips with --overwrite)")


# --- encoder weights ----------------------------------------------------------------------------

def test_an_encoder_weights_file_that_is_not_a_state_dict_says_what_it_should_be(chips, tmp_path,
                                                                                 capsys):
    text = tmp_path / "text.tif"
    text.write_text("not weights at all\n")
    err = _one_line_error(capsys, _args(chips, tmp_path / "run", "--workers", "0",
                                        "--generator", "smp:Unet:resnet18",
                                        "--encoder-weights", str(text)))
    assert f"cannot read encoder weights file {text}" in err
    assert "not a file written by torch.save but a text file" in err
    assert ".pt/.pth" in err and ".safetensors" in err and "101" not in err
    weights = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), weights)  # a whole model, not a state dict
    err = _one_line_error(capsys, _args(chips, tmp_path / "run", "--workers", "0",
                                        "--generator", "smp:Unet:resnet18",
                                        "--encoder-weights", str(weights)))
    assert "pickled Python objects" in err and "state_dict()" in err
    assert not (tmp_path / "run").exists()



class _WorkerPids(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 10_000

    def __getitem__(self, index: int) -> int:
        time.sleep(0.01)
        return os.getpid()


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo") or not Path("/proc/self").exists(),
                    reason="SIGTERM keeps its default action here")
def test_a_loader_worker_stops_only_when_its_main_process_says_so():
    """A terminal's Ctrl-C and `timeout` signal the whole process group: a DataLoader worker
    ignores them (the main process checkpoints, then ends its workers) and ends at once on a
    SIGTERM from its main process, as DataLoader sends to a worker that does not finish."""
    loader = torch.utils.data.DataLoader(
        _WorkerPids(), batch_size=None, num_workers=1,
        worker_init_fn=functools.partial(ignore_stop_signals, main=os.getpid()))
    batches = iter(loader)
    worker = next(batches)
    os.kill(worker, signal.SIGINT)
    subprocess.run(["kill", "-TERM", str(worker)], check=True)  # not from the main process
    time.sleep(0.5)
    assert _running(worker) and next(batches) == worker
    os.kill(worker, signal.SIGTERM)  # from the main process: this test
    deadline = time.monotonic() + 10
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(worker)
    del batches


ORPHANED = """
import functools, os, time, torch
from geopix2pix.runtime.stopping import ignore_stop_signals
class Pids(torch.utils.data.IterableDataset):
    def __iter__(self):
        while True:
            yield os.getpid()
loader = torch.utils.data.DataLoader(Pids(), batch_size=None, num_workers=1,
    worker_init_fn=functools.partial(ignore_stop_signals, main=os.getpid()))
batches = iter(loader)  # (kept: a dropped iterator ends its workers)
print(next(batches), flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_loader_worker_ends_with_its_killed_main_process():
    """A worker ignores the terminal's signals: when the OOM killer (or kill -9) ended its main
    process, a reviewer's worker lived on for minutes, holding the caller's pipe open."""
    main = subprocess.Popen([sys.executable, "-c", ORPHANED], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(main.stdout.readline())
        assert _running(worker)
    finally:
        main.kill()
        main.wait()
    deadline = time.monotonic() + 2  # (torch's own check of its parent waits 5 s, when idle)
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(worker)


WORKER = """
import os, time
import torch  # starts a thread, as in a spawned DataLoader worker
from geopix2pix.runtime.stopping import ignore_stop_signals
assert len(os.listdir("/proc/self/task")) > 1
ignore_stop_signals()
print("ready", flush=True)
time.sleep(120)
"""


@pytest.mark.skipif(not hasattr(signal, "sigwaitinfo") or not Path("/proc/self").exists(),
                    reason="SIGTERM keeps its default action here")
def test_a_spawned_worker_with_an_earlier_thread_ignores_a_group_sigterm():
    """Under spawn or forkserver a worker imports torch, which starts a thread, before
    ``ignore_stop_signals``: that thread does not block SIGTERM, and a SIGTERM it got took the
    default action, killing the worker."""
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout.readline().strip() == "ready"
        worker.send_signal(signal.SIGINT)
        for _ in range(5):
            subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)
        time.sleep(0.5)
        assert worker.poll() is None
    finally:
        worker.kill()
        worker.wait()
