"""export-chips --pairs: a CSV row that is not one source and one target path, or that names a
raster that is not there, is one line naming the CSV and the line; and the chips.gpkg index
records each pair by its full paths, as dataset.json does."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from conftest import write_raster

from geopix2pix.cli import main
from tests.test_export_errors import run_error


@pytest.fixture
def pair(tmp_path):
    data = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32)
    return (write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data[:1]))


def export_pairs(csv, out, *extra) -> list[str]:
    return ["export-chips", "--pairs", str(csv), "-o", str(out), "-q", "--chip-size", "32",
            "--workers", "0", *map(str, extra)]


def test_a_row_with_an_extra_cell_names_the_csv_and_line(tmp_path, pair, capsys):
    csv = tmp_path / "pairs.csv"
    csv.write_text("source,target\ns.tif,t.tif\ns.tif,t.tif,c.tif\n")
    err = run_error(capsys, export_pairs(csv, tmp_path / "c"))
    assert err == (f"Error: --pairs {csv}, line 3: more cells than the header's 2 column(s) "
                   "(extra: c.tif); a line holds one source and one target path: remove the "
                   "extra cells, or quote a path that holds a comma")
    assert not (tmp_path / "c").exists()


def test_a_header_with_more_named_columns_and_empty_trailing_cells_are_read(tmp_path, pair):
    """The header names the columns (a 'date' column beside them is fine), and a spreadsheet's
    empty trailing cells are no extra path."""
    csv = tmp_path / "pairs.csv"
    csv.write_text("date,source,target\n2024-05-01,s.tif,t.tif,,\n")
    assert main(export_pairs(csv, tmp_path / "c", "--val-fraction", 0)) == 0
    assert (tmp_path / "c" / "dataset.json").is_file()


@pytest.mark.parametrize("typed, meant", [("Target_Mask", "target_mask"),
                                          ("target masks", "target_mask"),
                                          ("Source", "source"), ("source-mask", "source_mask"),
                                          ("TargetMask", "target_mask")])
def test_a_column_spelt_nearly_as_one_read_is_refused(tmp_path, pair, capsys, typed, meant):
    """A reviewer's Target_Mask column was ignored without a word: the cloud mask was never
    applied and the chips kept the cloudy target pixels."""
    csv = tmp_path / "pairs.csv"
    other = "target" if meant == "source" else "source,target"
    csv.write_text(f"{other},{typed}\n" + ("t.tif,s.tif\n" if meant == "source" else
                                            "s.tif,t.tif,t.tif\n"))
    err = run_error(capsys, export_pairs(csv, tmp_path / "c"))
    assert err == (f"Error: --pairs {csv}: column {typed!r} is not one export-chips reads; name "
                   f"it {meant!r} (the columns it reads: source, target, source_mask, "
                   "target_mask; others are ignored)")
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("row, side, missing", [("nope.tif,t.tif", "source", "nope.tif"),
                                                ("s.tif,sub/nope.tif", "target", "sub/nope.tif")])
def test_a_missing_raster_names_the_csv_line_and_side(tmp_path, pair, capsys, row, side,
                                                      missing):
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"source,target\ns.tif,t.tif\n{row}\n")
    err = run_error(capsys, export_pairs(csv, tmp_path / "c"))
    assert err == (f"Error: --pairs {csv}, line 3: {side} {missing} does not exist (looked for "
                   f"{tmp_path / missing}: paths are relative to the CSV's folder); check the "
                   "path")


def test_a_missing_raster_of_a_csv_in_the_working_folder_is_said_as_typed(tmp_path, pair,
                                                                          capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.csv").write_text("source,target\ns.tif,nope.tif\n")
    err = run_error(capsys, export_pairs("pairs.csv", "c"))
    assert err == "Error: --pairs pairs.csv, line 2: target nope.tif does not exist; check the path"


def test_the_index_records_full_paths_as_dataset_json_does(tmp_path, pair, monkeypatch):
    """A CSV's paths are relative to it, and the CSV relative to the working folder: chips.gpkg
    must record paths that hold wherever the chips are used from."""
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "pairs.csv").write_text("source,target\n../s.tif,../t.tif\n")
    monkeypatch.chdir(tmp_path / "lists")
    assert main(export_pairs("pairs.csv", "../c", "--val-fraction", 0)) == 0
    with sqlite3.connect(tmp_path / "c" / "chips.gpkg") as db:
        recorded = set(db.execute("SELECT DISTINCT source, target FROM chips"))
    assert recorded == {(str(pair[0].resolve()), str(pair[1].resolve()))}
    info = json.loads((tmp_path / "c" / "dataset.json").read_text())
    assert [(p["source"], p["target"]) for p in info["pairs"]] == list(recorded)


def test_gdal_names_in_the_csv_are_taken_as_typed(tmp_path, pair):
    """A /vsizip/ path is GDAL's to open: not joined to the CSV's folder, not refused as a
    missing file, and recorded as given (a reviewer found it refused as 'does not exist')."""
    import zipfile

    archive = tmp_path / "scenes.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(pair[1], "t.tif")
    target = f"/vsizip/{archive}/t.tif"
    (tmp_path / "sub").mkdir()
    csv = tmp_path / "sub" / "pairs.csv"
    csv.write_text(f"source,target\n../s.tif,{target}\n")
    out = tmp_path / "c"
    assert main(export_pairs(csv, out)) == 0
    recorded = json.loads((out / "dataset.json").read_text())["pairs"][0]
    assert (recorded["source"], recorded["target"]) == (str(pair[0].resolve()), target)
    with sqlite3.connect(out / "chips.gpkg") as db:
        assert {row for row in db.execute("SELECT source, target FROM chips")} == {
            (str(pair[0].resolve()), target)}


def test_a_gdal_names_own_file_is_relative_to_the_csv_folder(tmp_path, pair, monkeypatch):
    """/vsizip/scenes.zip/t.tif in sub/pairs.csv reads sub/scenes.zip wherever the export runs
    from, as the plain paths beside it do, and is recorded in full."""
    import zipfile

    (tmp_path / "sub").mkdir()
    with zipfile.ZipFile(tmp_path / "sub" / "scenes.zip", "w") as zipped:
        zipped.write(pair[1], "t.tif")
    csv = tmp_path / "sub" / "pairs.csv"
    csv.write_text("source,target\n../s.tif,/vsizip/scenes.zip/t.tif\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    out = tmp_path / "c"
    assert main(export_pairs(csv, out)) == 0
    recorded = json.loads((out / "dataset.json").read_text())["pairs"][0]["target"]
    assert recorded == f"/vsizip//{str((tmp_path / 'sub' / 'scenes.zip').resolve()).lstrip('/')}" \
                      "/t.tif"
