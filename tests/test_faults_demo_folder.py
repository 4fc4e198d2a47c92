"""The demo's output folder: --overwrite removes only what a demo writes, never a user's chips and
run, and keeps an earlier demo whole (set aside, `runtime.aside`) until the new one is complete:
put back when it fails, is stopped, or (by the next run) was killed."""

from __future__ import annotations

import shutil

import pytest

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.aside import put_back_earlier, replaced_when_complete
from geopix2pix.runtime.folders import Owned, check_output_dir
from tests.test_output_folders import one_line_error, snapshot

OWNED = Owned(("done.json", "out.tif"), {"sub": Owned(("*.tif",))})


def _earlier(out) -> dict:
    """An earlier run's outputs in `out`; their snapshot."""
    (out / "sub").mkdir(parents=True, exist_ok=True)
    for name in ("done.json", "out.tif", "sub/a.tif"):
        (out / name).write_text("earlier")
    return snapshot(out)


def test_earlier_outputs_set_aside_are_put_back_on_a_stop_and_removed_on_success(tmp_path):
    """The demo's --overwrite: the earlier outputs stay whole (aside, inside the folder) while
    the new run writes in their place; a stop puts them back (the new outputs gone), a run that
    completes removes them. The folder itself never moves."""
    out = tmp_path / "demo"
    before = _earlier(out)
    inode = out.stat().st_ino
    with pytest.raises(KeyboardInterrupt), replaced_when_complete(
            out, True, owned=OWNED, marker="done.json", command="demo") as path:
        hidden, = out.iterdir()  # the earlier outputs, aside
        assert path == out and hidden.name.startswith(".geopix2pix-earlier.")
        assert hidden.name.endswith(".partial.kept")
        (out / "out.tif").write_text("new, unfinished")
        raise KeyboardInterrupt
    assert snapshot(out) == before and out.stat().st_ino == inode
    with replaced_when_complete(out, True, owned=OWNED, marker="done.json", command="demo"):
        (out / "out.tif").write_text("new")
        (out / "done.json").write_text("new")
    assert snapshot(out) == {"done.json": b"new", "out.tif": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_new_or_empty_folder_is_written_in_directly(tmp_path):
    for out in (tmp_path / "new" / "demo", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with replaced_when_complete(out, False, owned=OWNED, marker="done.json",
                                    command="demo") as path:
            assert path.is_dir() and list(path.iterdir()) == []
            (path / "done.json").write_text("new")
        assert snapshot(out) == {"done.json": b"new"}


@pytest.mark.parametrize("where", ["link", "current folder"])
def test_the_folder_may_be_a_link_or_the_current_folder(tmp_path, monkeypatch, where):
    """A reviewer's -o LINK and -o . over an earlier demo failed once the earlier folder itself
    was renamed aside (the link broken; the shell's folder moved with it)."""
    real = tmp_path / "real"
    before = _earlier(real)
    out = real
    if where == "link":
        out = tmp_path / "link"
        out.symlink_to(real, target_is_directory=True)
    else:
        monkeypatch.chdir(real)
        out = real.__class__(".")
    with pytest.raises(KeyboardInterrupt), replaced_when_complete(
            out, True, owned=OWNED, marker="done.json", command="demo"):
        (out / "out.tif").write_text("new")
        raise KeyboardInterrupt
    assert snapshot(real) == before
    with replaced_when_complete(out, True, owned=OWNED, marker="done.json", command="demo"):
        (out / "done.json").write_text("new")
    assert snapshot(real) == {"done.json": b"new"}


def _left_by_a_gone_process(out, state: str):
    """The hidden folder a killed run left in `out`, in `state` (moving, kept, done)."""
    import os
    import subprocess
    import sys

    from geopix2pix.runtime.aside import ASIDE
    from geopix2pix.runtime.partials import partial_folder_name

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    name = partial_folder_name(out / ASIDE).name.replace(f"-{os.getpid()}-", f"-{gone}-")
    aside = out / f"{name}.{state}"
    aside.mkdir()
    return aside


@pytest.mark.parametrize("state", ["moving", "kept", "kept, complete", "returning", "done"])
def test_what_a_killed_run_set_aside_is_put_back_by_the_next(tmp_path, state):
    """SIGKILL cannot put the earlier outputs back: the next run does, first, as far as the
    killed run got: halfway through setting them aside (the rest still in place), while it
    wrote its own (removed), halfway through moving them back (a reviewer's next run removed
    those already back, taking them for the killed run's), or once complete (the earlier ones
    removed)."""
    out = tmp_path / "demo"
    before = _earlier(out)
    aside = _left_by_a_gone_process(out, state.split(",")[0])
    if state == "kept, complete":  # killed after its marker, before the rename to done (a
        for name in ("done.json", "out.tif", "sub"):  # reviewer's: the complete run was
            shutil.move(out / name, aside / name)  # thrown away for the earlier one)
        (out / "out.tif").write_text("killed run's")
        (out / "done.json").write_text("killed run's, complete")
        before = {k: v for k, v in snapshot(out).items() if not k.startswith(".geopix2pix")}
    elif state in ("moving", "returning"):  # sub/ in the hidden folder, the rest not (yet, again)
        shutil.move(out / "sub", aside / "sub")
    elif state == "kept":
        for name in ("done.json", "out.tif", "sub"):
            shutil.move(out / name, aside / name)
        (out / "out.tif").write_text("killed run's")
    else:
        shutil.move(out / "sub", aside / "sub")
        (out / "done.json").write_text("killed run's, complete")
        before = {k: v for k, v in snapshot(out).items() if not k.startswith(".geopix2pix")}
    with pytest.raises(GeoPix2PixError, match="is not empty"), replaced_when_complete(
            out, False, owned=OWNED, marker="done.json", command="demo"):
        pass  # (the folder is checked after the put-back)
    assert snapshot(out) == before


def test_litter_in_the_way_of_the_earlier_outputs_goes_and_a_file_in_the_way_stops_it(tmp_path):
    """A desktop.ini Explorer wrote again while the run ran stopped a reviewer's move back
    halfway (what had moved then was lost by the next run): litter is removed, and anything
    else in the way is found before anything moves."""
    out = tmp_path / "demo"
    _earlier(out)
    (out / "desktop.ini").write_text("earlier litter")
    before = snapshot(out)
    with pytest.raises(KeyboardInterrupt), replaced_when_complete(
            out, True, owned=OWNED, marker="done.json", command="demo"):
        (out / "desktop.ini").write_text("written again")
        raise KeyboardInterrupt
    assert snapshot(out) == before
    # a file in the way of one set aside (put there between a kill and the next run): found
    # before anything moves, so a rerun after moving it away puts everything back
    aside = _left_by_a_gone_process(out, "returning")
    for name in ("done.json", "sub"):
        shutil.move(out / name, aside / name)
    (out / "done.json").write_text("someone's")
    with pytest.raises(GeoPix2PixError, match="done.json is in the way of the earlier output"):
        put_back_earlier(out, OWNED, "done.json")
    assert sorted(p.name for p in aside.iterdir()) == ["done.json", "sub"]
    (out / "done.json").unlink()
    put_back_earlier(out, OWNED, "done.json")
    assert snapshot(out) == before


def test_this_process_finishes_what_its_own_run_left_and_litter_is_no_output(tmp_path):
    """A second Ctrl-C halfway through a move back, in a notebook: the hidden folder is this
    process's, whose run is over, so the next run finishes it (a reviewer's was refused as
    another run's until the kernel restarted). A folder of litter alone is empty."""
    import os

    from geopix2pix.runtime.aside import ASIDE, unfinished
    from geopix2pix.runtime.partials import partial_folder_name

    out = tmp_path / "demo"
    before = _earlier(out)
    aside = out / (partial_folder_name(out / ASIDE).name + ".returning")  # this process's
    aside.mkdir()
    shutil.move(out / "sub", aside / "sub")
    assert unfinished(out) and os.getpid() > 0
    put_back_earlier(out, OWNED, "done.json")
    assert snapshot(out) == before and not unfinished(out)
    litter = tmp_path / "litter"
    litter.mkdir()
    (litter / ".DS_Store").write_bytes(b"finder")
    with replaced_when_complete(litter, False, owned=OWNED, marker="done.json",
                                command="demo") as path:
        (path / "done.json").write_text("new")
    assert sorted(p.name for p in litter.iterdir()) == [".DS_Store", "done.json"]


def test_a_run_in_another_thread_or_of_another_host_with_this_pid_is_another_run(tmp_path):
    """This process's own leftovers are finished, but not those of a replacement still running
    in another thread, nor another host's that happens to have this pid (a reviewer's thread B
    tore down thread A's run and mixed the two demos)."""
    import os
    import threading

    from geopix2pix.runtime.aside import ASIDE
    from geopix2pix.runtime.partials import partial_folder_name

    out = tmp_path / "demo"
    _earlier(out)
    inside, release = threading.Event(), threading.Event()

    def run_a():
        with replaced_when_complete(out, True, owned=OWNED, marker="done.json", command="demo"):
            (out / "done.json").write_text("A's")
            inside.set()
            release.wait(30)

    a = threading.Thread(target=run_a)
    a.start()
    assert inside.wait(30)
    with pytest.raises(GeoPix2PixError, match=f"by process {os.getpid()} "):
        put_back_earlier(out, OWNED, "done.json")  # thread B
    release.set()
    a.join(30)
    assert snapshot(out) == {"done.json": b"A's"}  # A completed, whole
    own = partial_folder_name(out / ASIDE).name + ".kept"
    elsewhere = out / own.replace(own[20:30], "0123456789")  # another host's, this pid
    elsewhere.mkdir()
    with pytest.raises(GeoPix2PixError, match="still running, or one of another machine"):
        put_back_earlier(out, OWNED, "done.json")


def test_a_stop_after_the_demo_finished_says_complete_whatever_is_left(tmp_path):
    """A second Ctrl-C while the earlier demo's leftovers were being removed said they were
    being put back (a reviewer's); the demo was complete, and the next run removes them."""
    from geopix2pix.demo.pipeline import SUMMARY, stop_reporter
    from geopix2pix.runtime.aside import ASIDE
    from geopix2pix.runtime.partials import partial_folder_name

    out = tmp_path / "demo"
    out.mkdir()
    (out / SUMMARY).write_text("earlier")
    report = stop_reporter(out)
    (out / SUMMARY).unlink()
    (out / SUMMARY).write_text("new")
    (out / (partial_folder_name(out / ASIDE).name + ".done")).mkdir()
    assert report(KeyboardInterrupt()).line == f"Stopped after the demo finished: {out} is complete"


def test_what_a_running_or_unknown_run_set_aside_is_never_touched(tmp_path):
    """Another run now, or one on another machine or before a restart (its process cannot be
    told): refused, naming the folder; never moved back under a running run, never hidden."""
    import os

    from geopix2pix.runtime.aside import ASIDE
    from geopix2pix.runtime.partials import partial_folder_name

    out = tmp_path / "demo"
    _earlier(out)
    running = out / (partial_folder_name(out / ASIDE).name.replace(
        f"-{os.getpid()}-", f"-{os.getppid()}-") + ".kept")  # a process that runs: the parent's
    running.mkdir()
    before = snapshot(out)
    for aside in (running, out / running.name.replace(running.name[20:30], "0123456789")):
        if aside != running:
            os.rename(running, aside)  # another host's, or before a restart
        with pytest.raises(GeoPix2PixError, match=f"by process {os.getppid()} \\(still running, "
                                                  f"or one of another machine.*{aside.name}"), \
                replaced_when_complete(out, True, owned=OWNED, marker="done.json",
                                       command="demo"):
            pass
        assert snapshot(out) == {k.replace(running.name, aside.name): v
                                 for k, v in before.items()}


# --- demo --------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [(["--steps", "0"], "--steps 0: use at least 1"),
                                          (["--seed", "-1"], "--seed -1: use 0 to 4294967295")])
def test_demo_checks_its_options_before_any_work(tmp_path, capsys, args, needle):
    out = tmp_path / "demo0"
    err = one_line_error(capsys, ["demo", "-o", out, "--quick", "-q", *args])
    assert needle in err and "--max-steps" not in err
    assert not out.exists()  # nothing built: a corrected retry needs no --overwrite


def test_demo_never_takes_a_users_chips_and_run_for_its_own(tmp_path, capsys):
    """export-chips and train outputs (the README's chips/ and run/, and scenes with a
    pairs.csv) look like the demo's: the demo replaces them only in a folder a demo started."""
    out = tmp_path / "work"
    for inner in ("chips/dataset.json", "chips/source/p0_r0_c0.tif", "run/model.safetensors"):
        (out / inner).parent.mkdir(parents=True, exist_ok=True)
        (out / inner).write_bytes(b"the user's")
    before = snapshot(out)
    err = one_line_error(capsys, ["demo", "-o", out, "--quick", "-q", "--overwrite"])
    assert "holds chips/, run/ that no demo made" in err
    (out / "scenes").mkdir()
    (out / "scenes" / "pairs.csv").write_text("source,target\n")
    (out / "scenes" / "mosaic.tif").write_bytes(b"the user's")
    before = snapshot(out)
    err = one_line_error(capsys, ["demo", "-o", out, "--quick", "-q", "--overwrite"])
    assert "holds scenes/, chips/, run/ that no demo made" in err
    assert snapshot(out) == before


def test_demo_overwrite_removes_only_demo_outputs(tmp_path, capsys):
    from geopix2pix.demo.pipeline import OUTPUTS, SUMMARY

    out = tmp_path / "demo"
    for inner in ("scenes/train_1_dem.tif", "scenes/pairs.csv", "chips/source/p0_r0_c0.tif",
                  "chips/chips.gpkg-wal",
                  "run/model.safetensors", "run/samples/epoch_001.png", "run/.DS_Store"):
        (out / inner).parent.mkdir(parents=True, exist_ok=True)
        (out / inner).write_bytes(b"x")
    for name in ("prediction.tif", ".prediction.0123abcd.partial.tif", "baseline.tif",
                 "evaluation.json", "quicklook.png", SUMMARY):
        (out / name).write_bytes(b"x")
    with replaced_when_complete(out, True, owned=OUTPUTS, marker=SUMMARY, command="demo"):
        assert [p.name[:20] for p in out.iterdir()] == [".geopix2pix-earlier."]  # aside
        (out / SUMMARY).write_text("new")  # complete
    assert [p.name for p in out.iterdir()] == [SUMMARY]
    # a user's own chips/ and run/ (the README's layout) are not the demo's: refused
    for inner in ("chips/source/p0_r0_c0.tif", "chips/my_notes.txt", "run/weights.pt"):
        (out / inner).parent.mkdir(parents=True, exist_ok=True)
        (out / inner).write_bytes(b"x")
    with pytest.raises(GeoPix2PixError, match=r"chips/my_notes.txt, run/weights.pt, which demo"):
        check_output_dir(out, True, SUMMARY, OUTPUTS, (), "demo", None)
    assert (out / "chips" / "source" / "p0_r0_c0.tif").exists()
    shutil.rmtree(out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "demo.json").write_text("{}")
    err = one_line_error(capsys, ["demo", "-o", out, "--quick", "-q", "--overwrite"])
    assert "notes.txt" in err and "demo did not write" in err
    assert sorted(p.name for p in out.iterdir()) == ["demo.json", "notes.txt"]
