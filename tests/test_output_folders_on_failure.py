"""A failed or stopped predict or evaluate leaves the output's folder as it was: the folders it
made for its output are removed again while empty, and never one that was there before."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import write_damaged, write_raster
from predict_helpers import write_scene

from geopix2pix.cli import main
from geopix2pix.raster.write import atomic_path, output_folder


def test_a_failed_predict_or_evaluate_removes_the_folders_it_made(tmp_path, model_file, capsys):
    """A tester's truncated scene failed mid-write and left the empty folders made for the
    output (and --json's) behind; train and export-chips already left none."""
    from conftest import write_damaged

    def fails(args) -> str:  # exit 2 with one error line (the scene's pixel size is warned of)
        assert main([str(a) for a in args]) == 2
        errors = [x for x in capsys.readouterr().err.splitlines() if x.startswith("Error:")]
        assert len(errors) == 1
        return errors[0]

    damaged = write_damaged(tmp_path / "damaged.tif")
    assert "damaged.tif" in fails(["predict", damaged, tmp_path / "new" / "a" / "p.tif", "-m",
                                   model_file, "-q"])
    good = write_raster(tmp_path / "good.tif", np.ones((3, 32, 32), np.uint8))
    fails(["evaluate", damaged, good, "--json", tmp_path / "n2" / "x" / "m.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.tif", "good.tif"]
    (tmp_path / "kept").mkdir()  # a folder that was there stays
    fails(["predict", damaged, tmp_path / "kept" / "b" / "p.tif", "-m", model_file, "-q"])
    assert list((tmp_path / "kept").iterdir()) == []
    assert main(["predict", str(good), str(tmp_path / "ok" / "c" / "p.tif"), "-m", model_file,
                 "-q"]) == 0  # and one that succeeds keeps what it made
    assert (tmp_path / "ok" / "c" / "p.tif").is_file()


def test_only_the_folders_made_for_the_output_are_removed(tmp_path, monkeypatch):
    (tmp_path / "b").mkdir()  # there before, and empty
    monkeypatch.chdir(tmp_path)
    for out in ("new/deep/x.tif", "b/new/x.tif", "a/../b/x.tif"):
        with pytest.raises(RuntimeError), atomic_path(out) as temp:
            temp.write_text("half")
            raise RuntimeError("failed")
    assert (tmp_path / "b").is_dir() and list((tmp_path / "b").iterdir()) == []
    assert not (tmp_path / "new").exists()  # a path through ".." removes nothing it made
    with output_folder("c/d/x.tif", overwrite=False) as final:  # success: all kept
        final.write_text("whole")
    assert (tmp_path / "c" / "d" / "x.tif").read_text() == "whole"


def test_folders_made_before_a_deeper_one_fails_are_removed(tmp_path):
    """The deepest folder cannot be made (a name too long for the file system): the two made
    above it on the way go again, and the error is one line."""
    from geopix2pix.errors import GeoPix2PixError

    out = tmp_path / "new" / "a" / ("x" * 300) / "p.tif"
    with pytest.raises(GeoPix2PixError, match="cannot make the folder"), \
            output_folder(out, overwrite=False):
        pass
    assert list(tmp_path.iterdir()) == []


def test_scenes_predicted_together_keep_the_folder_when_one_fails(tmp_path, model_file, capsys):
    """Small scenes are predicted in one group; a damaged one fails the group, whose folders
    are removed, and each scene is predicted again alone: the good ones end up in the folder."""
    good = [write_scene(tmp_path / f"g{i}.tif", 40, 40) for i in range(2)]
    damaged = write_damaged(tmp_path / "damaged.tif", size=64)
    out = tmp_path / "new" / "out"
    assert main(["predict", *map(str, [good[0], damaged, good[1]]), "--out-dir", str(out),
                 "--model", model_file, "-q"]) == 2
    assert "1 of 3 scene(s) failed" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["g0.tif", "g1.tif"]
