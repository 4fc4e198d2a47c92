"""Output folders of export-chips, train and demo: --overwrite removes only what the command
writes, and a folder that holds anything else, or the command's own inputs, is refused with one
line and kept as it was. Also the one-line errors of bad band lists and export/demo options."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_raster

from geopix2pix.cli import main
from geopix2pix.errors import GeoPix2PixError
from geopix2pix.runtime.folders import Owned, check_output_dir

TRAIN = ["--recipe", "paper",
         "--ngf", "8", "--ndf", "8", "--batch-size", "4", "--workers", "0", "--max-steps", "2",
         "--device", "cpu", "-q"]


def one_line_error(capsys, args) -> str:
    """Run the CLI, expect exit 2 and exactly one line on stderr; return it."""
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def make_pair(folder, size: int = 128):
    folder.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(0).random((2, size, size), dtype=np.float32)
    return (write_raster(folder / "dem.tif", data), write_raster(folder / "hs.tif", data[:1]))


def export(source, target, out, *extra) -> list[str]:
    args = ["export-chips", source, target, "-o", out, "-q", "--chip-size", "64", *extra]
    return [str(a) for a in args]


def snapshot(folder) -> dict[str, bytes | None]:
    """Every entry under `folder` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes()
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def chips(tmp_path):
    source, target = make_pair(tmp_path / "rasters", 256)
    out = tmp_path / "chips"
    assert main(export(source, target, out, "--split-block", "64")) == 0
    return out


# --- export-chips ------------------------------------------------------------------------------

@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_export_refuses_a_folder_holding_its_inputs(tmp_path, capsys, overwrite):
    source, target = make_pair(tmp_path / "pairdir")
    before = snapshot(tmp_path / "pairdir")
    err = one_line_error(capsys, export(source, target, tmp_path / "pairdir", *overwrite))
    assert f"pairdir contains an input of export-chips ({source})" in err
    assert snapshot(tmp_path / "pairdir") == before


def test_export_refuses_a_folder_holding_its_pairs_csv(tmp_path, capsys):
    source, target = make_pair(tmp_path / "rasters")
    folder = tmp_path / "csvdir"
    folder.mkdir()
    (folder / "pairs.csv").write_text(f"source,target\n{source},{target}\n")
    err = one_line_error(capsys, ["export-chips", "--pairs", folder / "pairs.csv", "-o", folder,
                                  "-q", "--chip-size", "64", "--overwrite"])
    assert "pairs.csv" in err and "input of export-chips" in err
    assert [p.name for p in folder.iterdir()] == ["pairs.csv"]


def test_export_overwrite_keeps_foreign_files(tmp_path, capsys):
    source, target = make_pair(tmp_path / "rasters")
    out = tmp_path / "userdir"
    assert main(export(source, target, out)) == 0
    (out / "notes.txt").write_text("mine")
    write_raster(out / "my_scene.tif", np.ones((8, 8), np.uint8))
    (out / "sub").mkdir()
    (out / "sub" / "keep.txt").write_text("mine too")
    capsys.readouterr()
    before = snapshot(out)
    err = one_line_error(capsys, export(source, target, out, "--overwrite"))
    assert "userdir is not empty" in err
    assert "my_scene.tif, notes.txt, sub/" in err and "move them away" in err
    assert snapshot(out) == before


def test_export_overwrite_replaces_its_own_outputs_and_leftovers(tmp_path, capsys):
    source, target = make_pair(tmp_path / "rasters", 256)
    out = tmp_path / "chips"
    assert main(export(source, target, out, "--split-block", "64")) == 0
    first = json.loads((out / "dataset.json").read_text())["counts"]
    # temporaries a killed run leaves (see runtime.partials.partial_name)
    (out / ".chips.0123abcd.partial.gpkg").write_bytes(b"x")
    (out / ".chips.0123abcd.partial.gpkg-journal").write_bytes(b"x")
    (out / ".dataset.0123abcd.partial.json").write_text("{}")
    assert main(export(source, target, out, "--split-block", "64", "--stride", "32",
                       "--overwrite")) == 0
    assert sorted(p.name for p in out.iterdir()) == ["chips.gpkg", "dataset.json", "source",
                                                       "target"]
    counts = json.loads((out / "dataset.json").read_text())["counts"]
    assert counts["train"] + counts["val"] > first["train"] + first["val"]
    chip_files = len(list((out / "source").iterdir()))
    assert chip_files == counts["train"] + counts["val"]


def test_export_into_the_current_folder_keeps_its_files(tmp_path, capsys, monkeypatch):
    source, target = make_pair(tmp_path / "rasters")
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    err = one_line_error(capsys, export(source, target, ".", "--overwrite"))
    assert "notes.txt" in err
    assert [p.name for p in work.iterdir()] == ["notes.txt"]


# --- train -------------------------------------------------------------------------------------

def test_train_refuses_its_chips_folder_as_output(chips, capsys):
    before = snapshot(chips)
    for extra in ([], ["--overwrite"]):
        err = one_line_error(capsys, ["train", chips, "-o", chips, *TRAIN, *extra])
        assert f"the output folder {chips} is an input of train ({chips})" in err
    assert snapshot(chips) == before


def test_train_never_replaces_its_encoder_weights(chips, tmp_path, capsys):
    """Hugging Face names downloaded weights model.safetensors, as train names its model."""
    from safetensors.torch import save_file

    from geopix2pix.models import GeneratorSpec, build_generator

    run = tmp_path / "run"
    run.mkdir()
    encoder = build_generator(GeneratorSpec(name="smp:Unet:resnet18", in_channels=3,
                                            chip_size=64)).encoder
    save_file(encoder.state_dict(), str(run / "model.safetensors"))
    before = (run / "model.safetensors").read_bytes()
    err = one_line_error(capsys, ["train", chips, "-o", run, "--overwrite", *TRAIN,
                                  "--generator", "smp:Unet:resnet18", "--encoder-weights",
                                  run / "model.safetensors"])
    assert "is an input of train" in err or "contains an input of train" in err
    assert (run / "model.safetensors").read_bytes() == before


def test_litter_and_an_unfinished_run_do_not_block_a_rerun(chips, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "samples").mkdir(parents=True)
    for name in ("metrics.csv", ".DS_Store", "samples/Thumbs.db", "samples/epoch_001.png"):
        (run / name).write_text("x")
    err = one_line_error(capsys, ["train", chips, "-o", run, *TRAIN])
    assert "what an unfinished train left" in err  # no checkpoint: not "an earlier train"
    assert main([str(a) for a in ["train", chips, "-o", run, "--overwrite", *TRAIN]]) == 0
    assert not (run / ".DS_Store").exists() and (run / "model.safetensors").exists()
    # with a checkpoint (a finished or killed run): --resume is the way on, said first
    capsys.readouterr()
    err = one_line_error(capsys, ["train", chips, "-o", run, *TRAIN])
    assert err == f"Error: {run} is not empty (it holds the outputs of an earlier train); " \
        "pass --resume to continue it from checkpoint.pt, --overwrite to replace them, or " \
        "choose another output folder"


def test_train_refuses_a_run_folder_inside_its_chips(chips, capsys):
    before = snapshot(chips)
    err = one_line_error(capsys, ["train", chips, "-o", chips / "source" / "run", *TRAIN])
    assert "lies inside the chips folder" in err
    assert snapshot(chips) == before


def test_train_refuses_a_folder_holding_its_chips(chips, capsys):
    before = snapshot(chips)
    err = one_line_error(capsys, ["train", chips, "-o", chips.parent, "--overwrite", *TRAIN])
    assert f"{chips.parent} contains an input of train ({chips})" in err
    assert snapshot(chips) == before


def test_train_overwrite_replaces_a_run_but_keeps_foreign_files(chips, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(chips), "-o", str(run), *TRAIN]) == 0
    (run / ".model.safetensors.x1y2z3.tmp").write_bytes(b"x")  # save_model's temporary
    assert main(["train", str(chips), "-o", str(run), "--overwrite", *TRAIN]) == 0
    assert not (run / ".model.safetensors.x1y2z3.tmp").exists()
    assert (run / "checkpoint.pt").is_file() and (run / "model.safetensors").is_file()
    capsys.readouterr()
    (run / "notes.txt").write_text("mine")
    err = one_line_error(capsys, ["train", chips, "-o", run, "--overwrite", *TRAIN])
    assert "notes.txt" in err and "train did not write" in err
    assert (run / "notes.txt").read_text() == "mine" and (run / "checkpoint.pt").is_file()


# --- band lists and export options -------------------------------------------------------------

def test_reversed_band_range_is_one_line(tmp_path, capsys):
    source, target = make_pair(tmp_path / "rasters")
    err = one_line_error(capsys, export(source, target, tmp_path / "out",
                                        "--source-bands", "4-2"))
    assert "--source-bands 4-2: a range goes up, e.g. 2-4" in err
    err = one_line_error(capsys, export(source, target, tmp_path / "out",
                                        "--target-bands", "1,x"))
    assert "--target-bands 1,x: 'x' is not a band number" in err
    err = one_line_error(capsys, ["predict", source, tmp_path / "p.tif", "-m",
                                  tmp_path / "none.safetensors", "--bands", "4-2"])
    assert "--bands 4-2: a range goes up, e.g. 2-4" in err
    assert not (tmp_path / "out").exists()


def test_band_ranges_still_parse():
    from geopix2pix.raster.bands import parse_bands

    assert parse_bands("1-3") == [1, 2, 3] and parse_bands("2, 4-5") == [2, 4, 5]
    assert parse_bands("3-3") == [3] and parse_bands(None) is None
    with pytest.raises(ValueError, match="a range goes up"):
        parse_bands("4-2")


@pytest.mark.parametrize("option, value, needle", [
    ("--stride", "0", "--stride 0: use a positive number"),
    ("--workers", "-1", "--workers -1: use 0 or more"),
    ("--split-block", "0", "--split-block 0: use at least the chip size (64)"),
    ("--split-block", "1", "--split-block 1: use at least the chip size (64)"),
    ("--seed", "-1", "--seed -1: use 0 to 4294967295"),
])
def test_bad_export_options_are_one_line(tmp_path, capsys, option, value, needle):
    source, target = make_pair(tmp_path / "rasters")
    err = one_line_error(capsys, export(source, target, tmp_path / "out", option, value))
    assert needle in err
    assert not (tmp_path / "out").exists()


def test_export_warns_when_no_val_chip_is_kept(tmp_path, capsys):
    source, target = make_pair(tmp_path / "rasters")
    assert main(export(source, target, tmp_path / "a", "--split-block", "512")) == 0
    captured = capsys.readouterr()
    assert "4 train chips, 0 val chips" in captured.out
    warning = captured.err.strip()
    assert len(warning.splitlines()) == 1 and warning.startswith("warning: 0 val chips")
    assert "--split-block" in warning and "--val-fraction" in warning
    assert main(export(source, target, tmp_path / "b", "--split-block", "64",
                       "--val-fraction", "0.25")) == 0
    captured = capsys.readouterr()
    assert "3 train chips, 1 val chips" in captured.out and captured.err == ""
    # by default, blocks small enough for this small scene to give val a chip
    assert main(export(source, target, tmp_path / "d")) == 0
    captured = capsys.readouterr()
    assert "3 train chips, 1 val chips" in captured.out and captured.err == ""
    options = json.loads((tmp_path / "d" / "dataset.json").read_text())["options"]
    assert options["split_block"] == 64  # recorded: 8, 4 and 2 chip sizes gave val nothing
    assert main(export(source, target, tmp_path / "c", "--val-fraction", "0")) == 0
    assert capsys.readouterr().err == ""  # no val asked for: nothing to warn about


def test_export_api_reports_the_warning(tmp_path):
    from geopix2pix.chips.export import export_chips

    source, target = make_pair(tmp_path / "rasters")
    summary = export_chips(source, target, tmp_path / "a", chip_size=64, progress=False,
                           workers=1, split_block=256)
    assert summary.kept.get("val", 0) == 0 and summary.warnings[0].startswith("0 val chips")
    with pytest.raises(GeoPix2PixError, match="--stride 0"):
        export_chips(source, target, tmp_path / "b", chip_size=64, stride=0, progress=False)


def test_only_litter_files_are_litter_not_folders_named_like_them(tmp_path):
    """macOS's ._name files are litter; a folder named ._backup is the user's."""
    out = tmp_path / "chips"
    (out / "._backup").mkdir(parents=True)
    (out / "._backup" / "precious.tif").write_bytes(b"mine")
    (out / "._dataset.json").write_bytes(b"AppleDouble")
    with pytest.raises(GeoPix2PixError, match=r"holds \._backup/"):
        check_output_dir(out, True, "dataset.json", Owned(("dataset.json",)), (), "export", None)
    assert (out / "._backup" / "precious.tif").read_bytes() == b"mine"


def test_a_run_from_encoder_weights_resumes_from_elsewhere_without_them(chips, tmp_path,
                                                                       monkeypatch):
    """The weights file is recorded by its full path and only read when the run starts: the
    resumed run's weights come from its checkpoint."""
    from safetensors.torch import save_file

    from geopix2pix.models import GeneratorSpec, build_generator
    from geopix2pix.training import train

    encoder = build_generator(GeneratorSpec(name="smp:Unet:resnet18", in_channels=3,
                                            chip_size=64)).encoder
    (tmp_path / "weights").mkdir()
    save_file(encoder.state_dict(), str(tmp_path / "weights" / "resnet18.safetensors"))
    monkeypatch.chdir(tmp_path / "weights")
    options = dict(generator="smp:Unet:resnet18", ndf=8, batch_size=2, workers=0, quiet=True,
                   max_steps=4, epochs=1, decay_epochs=1, log=lambda message: None)
    with pytest.raises(KeyboardInterrupt):
        train(chips, tmp_path / "run", encoder_weights="resnet18.safetensors",
              callback=lambda info: info["step"] == 2, **options)
    recorded = json.loads((tmp_path / "run" / "train.json").read_text())["options"]
    assert recorded["encoder_weights"] == str(tmp_path / "weights" / "resnet18.safetensors")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights" / "resnet18.safetensors").unlink()
    result = train(chips, tmp_path / "run", resume=True, workers=0, quiet=True,
                   log=lambda message: None)
    assert result.steps == 4


def test_the_default_split_block_gives_val_a_share_near_the_one_asked(tmp_path, capsys):
    """192 x 128 px of 32-px chips: 128-px blocks give val one block of 8 of 24 chips (33%),
    64-px blocks one of 4 (17%, near 20%): the default takes those; a given 128 warns."""
    data = np.random.default_rng(0).random((1, 128, 192), dtype=np.float32)
    source = write_raster(tmp_path / "s.tif", data)
    target = write_raster(tmp_path / "t.tif", data)
    args = ["export-chips", str(source), str(target), "--chip-size", "32", "-q"]
    assert main([*args, "-o", str(tmp_path / "a")]) == 0
    assert "20 train chips, 4 val chips" in capsys.readouterr().out
    options = json.loads((tmp_path / "a" / "dataset.json").read_text())["options"]
    assert options["split_block"] == 64
    assert main([*args, "-o", str(tmp_path / "b"), "--split-block", "128"]) == 0
    captured = capsys.readouterr()
    assert "16 train chips, 8 val chips" in captured.out
    assert captured.err == ("warning: val holds 8 of 24 chips (33%, --val-fraction 0.2): "
                            "--split-block blocks of 128 px are too few to come nearer; use a "
                            "smaller --split-block (down to the chip size, 32) or more data\n")
    # three chips in a row: no default block comes near; the default already tried down to the
    # chip size, so the warning does not send the user there (the share only got worse)
    small = data[:, :32, :96]
    args = ["export-chips", str(write_raster(tmp_path / "s3.tif", small)),
            str(write_raster(tmp_path / "t3.tif", small)), "--chip-size", "32", "-q"]
    assert main([*args, "-o", str(tmp_path / "c")]) == 0
    assert capsys.readouterr().err == (
        "warning: val holds 1 of 3 chips (33%, --val-fraction 0.2): --split-block blocks of 64 "
        "px are too few to come nearer; use another --seed (another draw of the blocks) or more "
        "data\n")


def test_a_val_share_cut_by_straddling_chips_asks_for_larger_blocks(tmp_path, capsys):
    """Overlapping chips (--stride 8 of 32) around small blocks: most straddle a block's edge
    and are dropped, most from val, the smaller side. A reviewer's warning said the blocks were
    too few and asked for smaller ones, which only cut val further (10 % -> 3 %)."""
    data = np.random.default_rng(0).random((1, 256, 256), dtype=np.float32)
    source = write_raster(tmp_path / "s.tif", data)
    target = write_raster(tmp_path / "t.tif", data)
    args = ["export-chips", str(source), str(target), "--chip-size", "32", "--stride", "8",
            "-q", "--no-shift-check"]
    assert main([*args, "-o", str(tmp_path / "a"), "--split-block", "32"]) == 0
    captured = capsys.readouterr()
    assert "472 train chips, 24 val chips" in captured.out
    assert captured.err == (
        "warning: val holds 24 of 496 chips (5%, --val-fraction 0.2): the 345 chips straddling "
        "train and val blocks of 32 px were dropped, which takes most from the smaller side; "
        "use a larger --split-block (fewer chips straddle the blocks' edges) or a --stride "
        "nearer the chip size\n")
    assert main([*args, "-o", str(tmp_path / "b"), "--split-block", "128"]) == 0  # as advised
    captured = capsys.readouterr()
    assert "585 train chips, 169 val chips" in captured.out and captured.err == ""
