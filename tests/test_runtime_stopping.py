"""runtime.stopping: the library attaches what a stop left (a StopReport) to the interrupt it
raises, and Ctrl-C or SIGTERM within a StopRequest is a flag, not an interrupt."""

from __future__ import annotations

import os
import signal
import time

import pytest

from geopix2pix.runtime.stopping import (
    StopReport,
    StopRequest,
    Terminated,
    attaches_stop_report,
    deferred_stop_signals,
)


def test_a_stop_carries_the_report_of_the_call_s_arguments(tmp_path):
    seen = []

    def reporter_for(call: dict):
        seen.append(dict(call))
        return lambda stop: StopReport("demo", stop.signum, f"Stopped: {call['out']}")

    @attaches_stop_report(reporter_for)
    def work(out, *, size=2):
        raise Terminated

    with pytest.raises(Terminated) as stopped:
        work(tmp_path / "o.tif")
    assert seen == [{"out": tmp_path / "o.tif", "size": 2}]  # defaults included
    report = stopped.value.report
    assert (report.command, report.signum, str(report)) == \
        ("demo", signal.SIGTERM, f"Stopped: {tmp_path / 'o.tif'}")


def test_a_call_with_arguments_it_refuses_carries_no_report():
    @attaches_stop_report(lambda call: pytest.fail("asked of a call that does not fit"))
    def work(out):
        raise KeyboardInterrupt

    with pytest.raises(TypeError):
        work(1, 2)


def test_predict_attaches_what_the_stop_left(tmp_path, monkeypatch):
    """predict_sharded (the commands' predict) says of OUT that it was not written."""
    import geopix2pix.prediction.distributed as distributed

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distributed, "predict", stopped)
    out = tmp_path / "o.tif"
    with pytest.raises(KeyboardInterrupt) as stop:
        distributed.predict_sharded("s.tif", out, model="m.safetensors")
    assert stop.value.report == StopReport(
        "predict", signal.SIGINT, f"Stopped: {out} was not written (no partial output is left)")


def test_the_python_predict_attaches_what_the_stop_left_too(tmp_path, model_file, monkeypatch):
    """`geopix2pix.predict` (the API, not only the command) says of each output what the stop
    left: an earlier OUT not replaced, or the scenes completed."""
    import geopix2pix.prediction.predictor as predictor

    def stopped(pairs, *args, **kwargs):
        stop = KeyboardInterrupt()
        stop.written = [out for _, out in pairs][:1] if len(pairs) > 1 else []
        raise stop

    monkeypatch.setattr(predictor, "predict_scenes", stopped)
    out = tmp_path / "o.tif"
    out.write_text("earlier")
    with pytest.raises(KeyboardInterrupt) as stop:
        predictor.predict("s.tif", out, model=model_file)
    assert stop.value.report == StopReport(
        "predict", signal.SIGINT, f"Stopped: {out} was not replaced (no partial output is "
        "left)", kept=out)
    with pytest.raises(KeyboardInterrupt) as stop:
        predictor.predict(["a.tif", "b.tif"], out_dir=tmp_path, model=model_file)
    assert stop.value.report.line == ("Stopped after 1 of 2 scenes: their outputs are complete "
                                      f"({tmp_path / 'a.tif'}); those being written were "
                                      "removed")
    assert stop.value.report.completed == (tmp_path / "a.tif",)


def test_predict_takes_scenes_from_an_iterator(tmp_path, model_file, monkeypatch):
    """Working out what a stop would leave must not use up an iterator of scenes (a glob):
    predict writes them all; a stop counts what was written."""
    from predict_helpers import write_scene

    import geopix2pix.prediction.predictor as predictor

    for name in ("a", "b"):
        write_scene(tmp_path / f"{name}.tif", 40, 30)
    results = predictor.predict(tmp_path.glob("*.tif"), out_dir=tmp_path / "out",
                                model=model_file, progress=False)
    assert sorted(r.out.name for r in results if r.written) == ["a.tif", "b.tif"]

    def stopped(pairs, *args, **kwargs):
        stop = KeyboardInterrupt()
        stop.written = [pairs[0][1]]
        raise stop

    monkeypatch.setattr(predictor, "predict_scenes", stopped)
    with pytest.raises(KeyboardInterrupt) as stop:
        predictor.predict(iter([tmp_path / "a.tif", tmp_path / "b.tif"]), out_dir=tmp_path / "o",
                          model=model_file)
    assert stop.value.report.line == ("Stopped after 1 of 2 scenes: their outputs are complete "
                                      f"({tmp_path / 'o' / 'a.tif'}); those being written were "
                                      "removed")


def test_a_signal_within_a_stop_request_sets_its_flag():
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert (stop.requested, stop.signum) == (True, signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == before  # restored


def test_a_deferred_stop_is_raised_when_its_block_ends():
    calls = []
    with pytest.raises(KeyboardInterrupt), deferred_stop_signals(lambda: calls.append("stop")):
        os.kill(os.getpid(), signal.SIGINT)
        calls.append("block ended")  # not raised inside the block
    assert calls == ["stop", "block ended"]


def test_rank_zero_alone_says_how_the_program_stopped(monkeypatch, capsys):
    """`runtime.ranks`: under torchrun rank 0 speaks for all; a RANK that is not a number
    speaks too (its error must be seen); the exit status is the shell's 128 + the signal."""
    from geopix2pix.runtime import ranks

    for rank, speaks in (("0", True), ("1", False), ("x", True)):
        monkeypatch.setenv("RANK", rank)
        assert ranks.speaks() is speaks, rank
    monkeypatch.delenv("RANK")
    assert ranks.speaks()
    monkeypatch.setenv("RANK", "1")
    assert ranks.stop_status(terminated=True) == 143
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert ranks.stop_status(terminated=False) == 130
    assert capsys.readouterr().err == "Aborted.\n"


def test_an_error_is_deduplicated_only_among_the_ranks_of_one_torchrun(monkeypatch, tmp_path):
    """A reviewer's second launch, or a second command in a shell with TORCHELASTIC_RUN_ID
    exported, found the first one's marker and said nothing at all (exit 2): only a process
    whose parent is the torchrun that started it with other local ranks defers to them."""
    from geopix2pix.runtime import ranks

    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job42")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(ranks.tempfile, "gettempdir", lambda: str(tmp_path))
    line = f"Error: a test line {os.getpid()} {time.time()}"
    # this process's parent is pytest's shell, not a torchrun: always said
    assert ranks._torchrun_parent() is None
    assert ranks.first_to_say(line) and ranks.first_to_say(line)
    monkeypatch.setattr(ranks, "_torchrun_parent", lambda: f"{os.getppid()} 12345")
    assert ranks.first_to_say(line) and not ranks.first_to_say(line)  # one launch: once
    monkeypatch.setattr(ranks, "_torchrun_parent", lambda: f"{os.getppid()} 12346")
    assert ranks.first_to_say(line)  # another launch (another start time): said again
    assert len(list(tmp_path.glob(ranks.MARKER + "*"))) == 2
