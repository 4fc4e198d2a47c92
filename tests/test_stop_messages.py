"""Ctrl-C or SIGTERM during export-chips or predict: one line saying what the stop left of the
outputs (as train says where to resume), exit 128 + the signal, and no partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster
from predict_helpers import write_scene

from geopix2pix.cli import main

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="signals to a child need POSIX")


def _catch_ctrl_c() -> None:
    """A child's Ctrl-C handling as in a terminal, also when this test runs where SIGINT is
    ignored (a background job), which the child would inherit."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt(command: list, ready) -> tuple[int, str]:
    """Run `command`, send it SIGINT once `ready()` is true; its exit status and stderr."""
    run = subprocess.Popen([sys.executable, "-m", "geopix2pix", *map(str, command)],
                           stderr=subprocess.PIPE, text=True, preexec_fn=_catch_ctrl_c)
    try:
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline:
            assert run.poll() is None, run.stderr.read()
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        code = run.wait(120)
    finally:
        run.kill()
    return code, run.stderr.read()


def only_line(err: str) -> str:
    """The one line on stderr (not also "Aborted." or a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_ctrl_c_during_export_says_no_chips_were_exported(tmp_path):
    data = np.random.default_rng(0).random((1, 1024, 1024), dtype=np.float32)
    source, target = write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data)
    out = tmp_path / "chips"
    code, err = interrupt(["export-chips", source, target, "-o", out, "-q", "--chip-size", 32,
                           "--stride", 8, "--workers", 0],
                          lambda: any(tmp_path.glob(".chips.*.partial/source/*.tif")))
    assert code == 130
    assert only_line(err) == f"Stopped: no chips were exported to {out} (none cut before the " \
                             "stop is left)"
    assert sorted(tmp_path.iterdir()) == sorted([source, target])  # no folder, no staging


def test_ctrl_c_during_predict_says_the_output_was_not_written(tmp_path, model_file):
    scene = write_scene(tmp_path / "s.tif", 3000, 3000)
    out = tmp_path / "out" / "pred.tif"
    code, err = interrupt(["predict", scene, out, "--model", model_file, "-q", "--batch-size",
                           2], lambda: out.parent.is_dir() and any(out.parent.iterdir()))
    assert code == 130
    assert only_line(err) == f"Stopped: {out} was not written (no partial output is left)"
    assert not out.parent.exists()  # nor the folder made for it


def test_ctrl_c_during_predict_of_scenes_counts_those_complete(tmp_path, model_file):
    """The first scene's output is complete and kept; the second's temporary is removed."""
    first = write_scene(tmp_path / "a.tif", 200, 200)
    second = write_scene(tmp_path / "b.tif", 3000, 3000)
    out = tmp_path / "out"
    code, err = interrupt(["predict", first, second, "--out-dir", out, "--model", model_file,
                           "-q", "--batch-size", 2],
                          lambda: (out / "a.tif").exists() and len(list(out.iterdir())) > 1)
    assert code == 130
    assert only_line(err) == ("Stopped after 1 of 2 scenes: their outputs are complete "
                              f"({out / 'a.tif'}); those being written were removed")
    assert [p.name for p in out.iterdir()] == ["a.tif"]


def _stop_after(written: list[Path], signum=signal.SIGINT):
    """A stand-in for the command's work: writes `written` whole, then is stopped (the stop
    saying what was written, as predict's does)."""

    def work(*args, **kwargs):
        for path in written:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".new").write_text("complete")
            path.with_suffix(".new").replace(path)  # put in place whole, as outputs are
        from geopix2pix.runtime.stopping import Terminated

        stop = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        stop.written = list(written)
        raise stop

    return work


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_the_command_loads_is_a_stopped_line(tmp_path, capsys, monkeypatch,
                                                          signum):
    """A tester's Ctrl-C in train's first second (while it loaded torch) printed click's
    "Aborted." instead of a Stopped line."""
    import geopix2pix.training.outputs as outputs
    from geopix2pix.runtime.stopping import Terminated

    def loading(*_args, **_kwargs):
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    monkeypatch.setattr(outputs, "stop_reporter", loading)
    assert main(["train", str(tmp_path / "chips"), "-o", str(tmp_path / "run")]) == \
        128 + signum
    assert capsys.readouterr().err == ("Stopped while the command was loading: nothing was "
                                       "written\n")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_once_the_export_finished_says_it_is_complete(tmp_path, capsys, monkeypatch,
                                                             signum):
    import geopix2pix.chips.export as export

    out = tmp_path / "chips"
    monkeypatch.setattr(export, "export_chips", _stop_after([out / "dataset.json"], signum))
    assert main(["export-chips", "s.tif", "t.tif", "-o", str(out)]) == 128 + signum
    assert capsys.readouterr().err == f"Stopped after the export finished: {out} is complete\n"


def test_a_stop_of_an_overwrite_says_the_earlier_export_is_as_it_was(
        tmp_path, capsys, monkeypatch):
    import geopix2pix.chips.export as export

    out = tmp_path / "chips"
    out.mkdir()
    (out / "dataset.json").write_text("{}")
    monkeypatch.setattr(export, "export_chips", _stop_after([]))
    assert main(["export-chips", "s.tif", "t.tif", "-o", str(out), "--overwrite"]) == 130
    assert capsys.readouterr().err == ("Stopped before the new export was complete: the "
                                       f"earlier export in {out} is as it was (nothing of the "
                                       "new one is left)\n")


@pytest.mark.parametrize("done, message", [
    (0, "Stopped: nothing was written (no partial outputs are left); the earlier {c} is as it "
        "was"),
    (2, "Stopped after 2 of 3 scenes: their outputs are complete ({a}, {b}); those being "
        "written were removed; the earlier {c} is as it was"),
])
def test_a_stop_of_predict_counts_the_outputs_put_in_place(tmp_path, capsys, monkeypatch, done,
                                                           message):
    """Outputs there before the run (--overwrite) count only once replaced."""
    import geopix2pix.prediction.distributed as distributed

    out = tmp_path / "out"
    out.mkdir()
    (out / "c.tif").write_text("earlier")
    written = [out / "a.tif", out / "b.tif"][:done]
    monkeypatch.setattr(distributed, "predict_sharded", _stop_after(written))
    assert main(["predict", "a.tif", "b.tif", "c.tif", "--out-dir", str(out), "-m", "m",
                 "--overwrite"]) == 130
    assert capsys.readouterr().err == message.format(
        a=out / "a.tif", b=out / "b.tif", c=out / "c.tif") + "\n"


@pytest.mark.parametrize("earlier, message", [(False, "not written"), (True, "not replaced")])
def test_a_stop_of_predict_says_whether_out_was_replaced(tmp_path, capsys, monkeypatch, earlier,
                                                         message):
    import geopix2pix.prediction.distributed as distributed

    out = tmp_path / "o.tif"
    if earlier:
        out.write_text("earlier")
    monkeypatch.setattr(distributed, "predict_sharded", _stop_after([]))
    assert main(["predict", "s.tif", str(out), "-m", "m", "--overwrite"]) == 130
    assert capsys.readouterr().err == f"Stopped: {out} was {message} (no partial output is left)\n"
    monkeypatch.setattr(distributed, "predict_sharded", _stop_after([out]))
    assert main(["predict", "s.tif", str(out), "-m", "m", "--overwrite"]) == 130
    assert capsys.readouterr().err == f"Stopped after {out} was written: it is complete\n"


def test_a_stop_of_predict_speaks_only_of_what_it_wrote(tmp_path, capsys, monkeypatch):
    """Another process writing at OUT meanwhile is not this run's output (a tester's SIGTERM'd
    predict said "was written: it is complete" of it)."""
    import geopix2pix.prediction.distributed as distributed

    out = tmp_path / "o.tif"

    def another_process_writes_then_stop(*args, **kwargs):
        out.write_text("someone else's")
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "predict_sharded", another_process_writes_then_stop)
    assert main(["predict", "s.tif", str(out), "-m", "m", "--overwrite"]) == 130
    assert capsys.readouterr().err == \
        f"Stopped: {out} was not written (no partial output is left)\n"


def test_a_stop_under_torchrun_reports_every_rank_s_outputs(tmp_path, monkeypatch):
    """Rank 0 of a stopped `torchrun ... predict --out-dir` said 'nothing was written' while
    rank 1's finished outputs stayed in the folder: under torchrun the report counts what is
    on disk, not rank 0's own list."""
    from geopix2pix.prediction.outputs import stop_reporter

    scenes = [write_scene(tmp_path / f"s{i}.tif", 8, 8) for i in range(3)]
    report = stop_reporter(scenes, None, tmp_path / "out")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "s1.tif").write_bytes(b"rank 1's whole output")
    monkeypatch.setenv("WORLD_SIZE", "2")
    said = report(KeyboardInterrupt())
    assert said.line.startswith("Stopped after 1 of 3 scenes: their outputs are complete")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: its own list, as before
    assert report(KeyboardInterrupt()).line.startswith("Stopped: nothing was written")


def test_a_stop_of_predict_never_calls_a_scene_an_earlier_output(tmp_path):
    """--out-dir the scenes' own folder: a scene is its own output's name (refused, never
    replaced); a reviewer's stop called it 'the earlier x.tif', as if it were an output."""
    from geopix2pix.prediction.outputs import stop_reporter

    scenes = [write_scene(tmp_path / f"{name}.tif", 8, 8) for name in ("x", "y")]
    report = stop_reporter(scenes, None, tmp_path)
    assert report(KeyboardInterrupt()).line == ("Stopped: nothing was written (no partial "
                                                "outputs are left)")
