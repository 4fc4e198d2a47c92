"""The demo's output folder: --overwrite removes only what a demo writes, never a user's chips and
run, and keeps an earlier demo whole (set aside, `runtime.aside`) until the new one is complete:
put back when it fails, is stopped, or (by the next run) was killed."""

from __future__ import annotations

import shutil

import pytest

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.aside import replaced_when_complete
from geopix2pix.runtime.folders import Owned, check_output_dir
from tests.test_output_folders import one_line_error, snapshot


def test_an_earlier_folder_set_aside_is_put_back_on_a_stop_and_removed_on_success(tmp_path):
    """The demo's --overwrite: the earlier folder stays whole (aside) while the new run writes in
    its place; a stop puts it back (the new outputs gone), a run that completes removes it."""
    owned = Owned(("done.json", "out.tif"), {"sub": Owned(("*.tif",))})
    out = tmp_path / "demo"
    (out / "sub").mkdir(parents=True)
    for name in ("done.json", "out.tif", "sub/a.tif"):
        (out / name).write_text("earlier")
    before = snapshot(out)
    with pytest.raises(KeyboardInterrupt), \
            replaced_when_complete(out, True, "done.json", owned=owned, command="demo") as path:
        assert path == out and list(out.iterdir()) == []  # the earlier folder is aside
        (out / "out.tif").write_text("new, unfinished")
        raise KeyboardInterrupt
    assert snapshot(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["demo"]
    with replaced_when_complete(out, True, "done.json", owned=owned, command="demo"):
        (out / "out.tif").write_text("new")
        (out / "done.json").write_text("new")
    assert snapshot(out) == {"done.json": b"new", "out.tif": b"new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_an_earlier_folder_a_killed_run_left_aside_is_put_back_by_the_next(tmp_path):
    """SIGKILL (or a power cut) cannot put the earlier folder back: the next run does, first,
    removing the killed run's unfinished outputs; after a killed run that had completed, the
    earlier folder is removed instead."""
    import subprocess
    import sys

    from geopix2pix.runtime.partials import partial_folder_name

    owned = Owned(("done.json", "out.tif"))
    out = tmp_path / "demo"
    for completed in (False, True):
        shutil.rmtree(out, ignore_errors=True)
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout.strip()
        aside = tmp_path / partial_folder_name(out, earlier=True).name.replace(
            f"-{__import__('os').getpid()}-", f"-{gone}-")  # a process that is gone left it
        aside.mkdir()
        (aside / "done.json").write_text("earlier")
        out.mkdir()
        (out / "out.tif").write_text("killed run's")
        if completed:
            (out / "done.json").write_text("killed run's, complete")
        with pytest.raises(GeoPix2PixError, match="is not empty"), \
                replaced_when_complete(out, False, "done.json", owned=owned, command="demo"):
            pass  # (the folder is checked after the put-back)
        assert not aside.exists()
        assert snapshot(out) == ({"done.json": b"killed run's, complete", "out.tif":
                                  b"killed run's"} if completed else {"done.json": b"earlier"})


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
    with replaced_when_complete(out, True, SUMMARY, owned=OUTPUTS, command="demo"):
        assert list(out.iterdir()) == []
    assert list(out.iterdir()) == []
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
