"""Fault battery: `train --overwrite` keeps the earlier run (model files, checkpoint, metrics,
samples, train.json) byte-identical until the new run has written its own at its first epoch
end: a damaged chip, a stop, or a kill before then leave it as it was, and nothing of the new
run. A run that fails in a new folder leaves no folder."""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from tests.test_faults_overwrite import dead_pid, digest, leftovers, one_line

TRAIN = ["--recipe", "paper",
         "--ngf", "8", "--ndf", "8", "--batch-size", "4", "--workers", "0", "--max-steps", "2",
         "--device", "cpu", "-q"]
RUN_FILES = {"model.safetensors", "model-best.safetensors", "checkpoint.pt", "metrics.csv",
             "train.json"}


@pytest.fixture(scope="module")
def chips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("chips")
    data = np.random.default_rng(0).random((2, 256, 256), dtype=np.float32)
    source = write_raster(folder / "dem.tif", data)
    target = write_raster(folder / "hs.tif", data[:1])
    out = folder / "chips"
    assert main([str(a) for a in ["export-chips", source, target, "-o", out, "-q",
                                  "--chip-size", "64", "--split-block", "64"]]) == 0
    return out


@pytest.fixture(scope="module")
def damaged_chips(chips, tmp_path_factory) -> Path:
    """A copy of `chips` whose source chips open but do not decode."""
    copy = tmp_path_factory.mktemp("damaged") / "chips"
    shutil.copytree(chips, copy)
    for chip in (copy / "source").glob("*.tif"):
        raw = bytearray(chip.read_bytes())
        raw[len(raw) // 2:] = b"\x55" * (len(raw) - len(raw) // 2)
        chip.write_bytes(bytes(raw))
    return copy


@pytest.fixture
def earlier(chips, tmp_path) -> tuple[Path, dict[str, str]]:
    """A complete earlier run in tmp/work/run and its digest."""
    run = tmp_path / "work" / "run"
    assert main([str(a) for a in ["train", chips, "-o", run, *TRAIN]]) == 0
    before = digest(run)
    assert set(before) >= RUN_FILES and any(k.startswith("samples/") for k in before)
    return run, before


def test_a_damaged_chip_keeps_the_earlier_run(chips, damaged_chips, earlier, capsys,
                                              monkeypatch):
    from geopix2pix.runtime import folders

    run, before = earlier
    made, make_staging = [], folders.make_staging
    monkeypatch.setattr(folders, "make_staging",
                        lambda final: made.append(make_staging(final)) or made[-1])
    assert main([str(a) for a in ["train", damaged_chips, "-o", run, "--overwrite",
                                  *TRAIN]]) == 2
    error = one_line(capsys.readouterr().err)
    assert error.startswith("Error: chip ") and "is damaged" in error, error
    assert len(made) == 1 and not made[0].exists()  # it failed while building the new run
    assert digest(run) == before  # train.json too: a --resume of the earlier run stays right
    assert leftovers(run.parent) == []
    capsys.readouterr()
    assert main([str(a) for a in ["train", chips, "-o", run, "--resume"]]) == 0
    assert f"{run} is complete (2 steps)" in capsys.readouterr().err  # its own train.json


def test_a_damaged_chip_in_a_new_folder_leaves_no_folder(damaged_chips, tmp_path, capsys):
    run = tmp_path / "new" / "run"
    assert main([str(a) for a in ["train", damaged_chips, "-o", run, *TRAIN]]) == 2
    one_line(capsys.readouterr().err)
    assert not (tmp_path / "new").exists()


def test_a_stop_before_the_first_epoch_end_keeps_the_earlier_run(chips, earlier):
    """The stop's checkpoint would be of a run that never replaced the earlier one: both it
    and the new run's folder are dropped, and the stop line says the earlier run is kept."""
    from geopix2pix import train
    from geopix2pix.training import TrainingStopped

    run, before = earlier
    with pytest.raises(TrainingStopped) as stopped:
        train(chips, run, overwrite=True, ngf=8, ndf=8, batch_size=4, workers=0, max_steps=50,
              device="cpu", quiet=True, callback=lambda info: True, log=lambda line: None)
    assert stopped.value.kept == run and stopped.value.checkpoint is None
    assert str(stopped.value) == (f"stopped before the new run replaced the earlier one in "
                                  f"{run}, which is as it was")
    assert digest(run) == before and leftovers(run.parent) == []
    assert stopped.value.report.line == (  # train attaches what the stop left
        f"Stopped before the new run's first validation: the earlier run in {run} is as it "
        "was (nothing of the new one is left)")


@pytest.mark.parametrize("stop_epoch", [2, 3])
def test_a_stop_at_an_epoch_end_before_the_first_validation_keeps_the_earlier_run(
        chips, earlier, stop_epoch):
    """With validations (and so model files) only at the end (--val-every past the run), a
    stop at a later epoch end writes a checkpoint but the new run has no model file yet: it
    does not replace the earlier run, whose files all stay."""
    from geopix2pix import train
    from geopix2pix.chips.manifest import DatasetInfo
    from geopix2pix.training import TrainingStopped

    run, before = earlier
    per_epoch = math.ceil(DatasetInfo.load(chips).counts["train"] / 4)
    with pytest.raises(TrainingStopped) as stopped:  # at the last step of epoch `stop_epoch`
        train(chips, run, overwrite=True, ngf=8, ndf=8, batch_size=4, workers=0, max_steps=50,
              val_every=1000, device="cpu", quiet=True, log=lambda line: None,
              callback=lambda info: info["step"] == stop_epoch * per_epoch)
    assert stopped.value.kept == run
    assert digest(run) == before and leftovers(run.parent) == []


def test_an_overwrite_replaces_the_earlier_run_at_its_first_epoch_end(chips, earlier):
    """A stop after the first epoch end that wrote the run's files (every one, with
    --val-every 1): the new run is in place, resumable."""
    from geopix2pix import train
    from geopix2pix.training import TrainingStopped

    run, before = earlier
    steps = []
    with pytest.raises(TrainingStopped) as stopped:
        train(chips, run, overwrite=True, ngf=8, ndf=8, batch_size=4, workers=0, max_steps=50,
              val_every=1, device="cpu", quiet=True, seed=7, log=lambda line: None,
              callback=lambda info: steps.append(info["step"]) or info["epoch"] == 2)
    assert stopped.value.checkpoint == run / "checkpoint.pt"
    after = digest(run)
    assert set(after) >= RUN_FILES and leftovers(run.parent) == []
    assert all(after[name] != before[name] for name in RUN_FILES)
    for name in RUN_FILES:  # nothing names the folder the run was built in
        assert b".partial" not in (run / name).read_bytes(), name


def test_an_overwrite_failing_after_it_replaced_the_earlier_run_says_so(chips, earlier):
    """A reviewer's --overwrite run failed (its chips damaged) after its first validation had
    replaced the earlier run: the error said nothing of the earlier run being gone."""
    from geopix2pix import train

    run, _ = earlier

    def fail_in_epoch_2(info):
        if info["epoch"] == 2:
            raise GeoPix2PixError("chip x.tif is damaged")

    with pytest.raises(GeoPix2PixError) as failed:
        train(chips, run, overwrite=True, ngf=8, ndf=8, batch_size=4, workers=0, max_steps=50,
              val_every=1, device="cpu", quiet=True, log=lambda line: None,
              callback=fail_in_epoch_2)
    assert str(failed.value) == (f"chip x.tif is damaged ({run} holds this run, which replaced "
                                 "the earlier one at its first validation; continue it with "
                                 "--resume once that is fixed)")
    assert (run / "checkpoint.pt").is_file() and leftovers(run.parent) == []
    # an error that says how to continue already (a lost torchrun process's) is left whole
    from geopix2pix.training.outputs import SaysHowToContinue

    said = f"lost contact with another torchrun process: continue from {run} with --resume"

    def lost_in_epoch_2(info):
        if info["epoch"] == 2:
            raise SaysHowToContinue(said)

    with pytest.raises(SaysHowToContinue) as lost:
        train(chips, run, overwrite=True, ngf=8, ndf=8, batch_size=4, workers=0, max_steps=50,
              val_every=1, device="cpu", quiet=True, log=lambda line: None,
              callback=lost_in_epoch_2)
    assert str(lost.value) == said


def test_a_killed_overwrite_keeps_the_earlier_run_and_a_rerun_cleans_up(chips, earlier,
                                                                        capsys):
    run, before = earlier
    command = [sys.executable, "-m", "geopix2pix", "train", str(chips), "-o", str(run),
               "--overwrite", *TRAIN, "--max-steps", "1000000"]  # the last one counts
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not list(run.parent.glob(".run.*.partial/train.json")):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(60)
    process.stderr.close()
    assert digest(run) == before and len(leftovers(run.parent)) == 1
    stale = leftovers(run.parent)
    assert main([str(a) for a in ["train", chips, "-o", run, "--resume", "-q"]]) == 0
    assert leftovers(run.parent) == []  # a resume of the earlier run cleans up too
    for name in stale:  # (another kill, for the rerun below)
        (run.parent / name).mkdir()
    before = digest(run)
    assert main([str(a) for a in ["train", chips, "-o", run, "--overwrite", *TRAIN]]) == 0
    assert leftovers(run.parent) == [] and digest(run) != before


def test_a_resume_puts_a_killed_swap_s_run_back_before_reading_its_options(chips, tmp_path):
    """A run folder a killed swap left aside (a system without an atomic exchange) is put back
    before --resume reads its options: the resume takes them from its train.json (batch 3
    here, not the default), not only from those typed."""
    from geopix2pix.runtime.partials import WHERE
    from geopix2pix.training import TrainingStopped, train

    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(chips, run, recipe="paper", ngf=8, ndf=8, batch_size=3, workers=0, device="cpu",
              quiet=True, max_steps=6, callback=lambda info: info["step"] == 2)
    run.rename(tmp_path / f".run.{WHERE}-{dead_pid()}-abcdef.partial.earlier")
    assert main(["train", str(chips), "-o", str(run), "--resume", "-q"]) == 0
    assert leftovers(tmp_path) == []
    assert '"batch_size": 3' in (run / "train.json").read_text()


def _left_aside(tmp_path: Path) -> Path:
    """A run folder holding a train.json, left aside by a killed swap (a dead process's)."""
    from geopix2pix.runtime.partials import WHERE

    aside = tmp_path / f".run.{WHERE}-{dead_pid()}-abcdef.partial.earlier"
    aside.mkdir()
    (aside / "train.json").write_text("{}")
    return aside


def test_other_ranks_wait_for_rank_0_to_put_a_killed_swap_s_folder_back(tmp_path):
    """Under torchrun only rank 0 puts back a run folder a killed swap left aside; the other
    ranks wait for it before they read its options, and say so in one line when nothing puts
    it back in time."""
    import threading

    from geopix2pix.runtime.staging import remove_stale_folders, wait_for_put_back

    run, aside = tmp_path / "run", _left_aside(tmp_path)
    with pytest.raises(GeoPix2PixError, match=f"left it aside as {aside.name}.*rename it"):
        wait_for_put_back(run, seconds=0.3)  # nobody puts it back
    rank_0 = threading.Timer(0.5, remove_stale_folders, [run])
    start = time.monotonic()
    rank_0.start()
    wait_for_put_back(run)
    waited = time.monotonic() - start
    done = rank_0.finished.is_set() and run.exists()  # (before the join: the wait's doing)
    rank_0.join()
    assert done and 0.45 <= waited < 30 and (run / "train.json").exists()
    start = time.monotonic()
    wait_for_put_back(tmp_path / "missing")  # nothing aside: no wait
    assert time.monotonic() - start < 5


def test_a_resume_on_rank_1_reads_the_options_rank_0_puts_back(chips, tmp_path, monkeypatch):
    """`train --resume` as torchrun's rank 1 waits for rank 0 to put the run folder back, then
    takes the run's options from its train.json (batch 3, not the default)."""
    import threading

    from geopix2pix.runtime.partials import WHERE
    from geopix2pix.runtime.staging import remove_stale_folders
    from geopix2pix.training import TrainingStopped, train

    run = tmp_path / "run"
    with pytest.raises(TrainingStopped):
        train(chips, run, recipe="paper", ngf=8, ndf=8, batch_size=3, workers=0, device="cpu",
              quiet=True, max_steps=6, callback=lambda info: info["step"] == 2)
    run.rename(tmp_path / f".run.{WHERE}-{dead_pid()}-abcdef.partial.earlier")
    monkeypatch.setenv("RANK", "1")  # (a world of one: only the rank's own part changes)
    rank_0 = threading.Timer(0.5, remove_stale_folders, [run.resolve()])
    rank_0.start()
    try:
        assert main(["train", str(chips), "-o", str(run), "--resume", "-q"]) == 0
    finally:
        rank_0.join()
    assert '"batch_size": 3' in (run / "train.json").read_text()
