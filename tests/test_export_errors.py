"""Bad input to export-chips: one line naming the file and what to do, exit 2, no complete
folder left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from conftest import limit_file_size, write_damaged, write_raster

from geopix2pix.cli import main


@pytest.fixture
def pair(tmp_path):
    data = np.random.default_rng(0).random((2, 128, 128), dtype=np.float32)
    return (write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data[:1]))


def run_error(capsys, args) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def export_args(source, target, out, *extra):
    return ["export-chips", str(source), str(target), "-o", str(out), "-q", *map(str, extra)]


def test_raster_without_crs(tmp_path, pair, capsys):
    bare = write_raster(tmp_path / "bare.tif", np.zeros((1, 64, 64), np.uint8), crs=None)
    err = run_error(capsys, export_args(bare, pair[1], tmp_path / "chips"))
    assert "bare.tif has no CRS" in err and "gdal_edit" in err


def test_rasters_in_a_local_engineering_crs(tmp_path, capsys):
    """Both in one LOCAL_CS: every chip was cut, then chips.gpkg (EPSG:4326) failed in a PROJ
    traceback."""
    local = ('LOCAL_CS["arbitrary",UNIT["metre",1,AUTHORITY["EPSG","9001"]],'
             'AXIS["Easting",EAST],AXIS["Northing",NORTH]]')
    data = np.random.default_rng(0).random((1, 64, 64), dtype=np.float32)
    source, target = (write_raster(tmp_path / f"{name}.tif", data, crs=local)
                      for name in ("local_s", "local_t"))
    err = run_error(capsys, export_args(source, target, tmp_path / "chips", "--chip-size", 32))
    assert "local_s.tif is in a local engineering CRS" in err and "gdal_edit.py -a_srs" in err
    assert not (tmp_path / "chips").exists()


def test_pair_that_does_not_overlap_says_both_bounds(tmp_path, pair, capsys):
    far = write_raster(tmp_path / "far.tif", np.zeros((1, 128, 128), np.float32),
                       transform=Affine(10, 0, 700000, 0, -10, 5200000))
    err = run_error(capsys, export_args(pair[0], far, tmp_path / "chips"))
    assert "do not overlap" in err and "500000" in err and "700000" in err


def test_bounds_that_do_not_overlap_keep_their_metres(tmp_path, pair, capsys):
    """With 6 significant digits, 4833540.25 printed as 4.83354e+06: 40 m lost."""
    far = write_raster(tmp_path / "far.tif", np.zeros((1, 64, 64), np.float32),
                       transform=Affine(10, 0, 4700000.5, 0, -10, 4833540.25))
    err = run_error(capsys, export_args(pair[0], far, tmp_path / "chips"))
    assert ("source bounds (500000, 5198720, 501280, 5200000) in EPSG:32633 vs target bounds "
            "(4700000.5, 4832900.25, 4700640.5, 4833540.25) in EPSG:32633") in err


@pytest.mark.parametrize("size,needle", [(100, "power of two"), (16, "power of two"),
                                         (256, "larger than the overlap")])
def test_bad_chip_size(tmp_path, pair, capsys, size, needle):
    err = run_error(capsys, export_args(*pair, tmp_path / "chips", "--chip-size", size))
    assert needle in err


def test_band_out_of_range(tmp_path, pair, capsys):
    err = run_error(capsys, export_args(*pair, tmp_path / "chips", "--chip-size", 64,
                                        "--source-bands", "1,3"))
    assert "band 3 does not exist" in err and "s.tif" in err and "2 band(s)" in err


def test_aoi_without_crs_or_elsewhere(tmp_path, pair, capsys):
    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)]).to_file(tmp_path / "nocrs.gpkg")
    err = run_error(capsys, export_args(*pair, tmp_path / "chips", "--chip-size", 64,
                                        "--aoi", tmp_path / "nocrs.gpkg"))
    assert "nocrs.gpkg has no CRS" in err
    gpd.GeoDataFrame(geometry=[box(0, 0, 1, 1)], crs=4326).to_file(tmp_path / "away.gpkg")
    err = run_error(capsys, export_args(*pair, tmp_path / "chips", "--chip-size", 64,
                                        "--aoi", tmp_path / "away.gpkg"))
    assert "away.gpkg" in err and "no chip" in err


def test_non_empty_output_needs_overwrite(tmp_path, pair, capsys):
    out = tmp_path / "chips"
    assert main(export_args(*pair, out, "--chip-size", 64)) == 0
    capsys.readouterr()
    err = run_error(capsys, export_args(*pair, out, "--chip-size", 64))
    assert "not empty" in err and "--overwrite" in err
    assert main(export_args(*pair, out, "--chip-size", 64, "--overwrite")) == 0
    capsys.readouterr()
    (out / "keep.txt").write_text("mine")  # not export's: --overwrite never removes it
    err = run_error(capsys, export_args(*pair, out, "--chip-size", 64, "--overwrite"))
    assert "keep.txt" in err and (out / "keep.txt").read_text() == "mine"
    assert (out / "dataset.json").exists()


def test_no_chip_left_says_why_and_leaves_no_complete_folder(tmp_path, capsys):
    data = np.full((1, 128, 128), -9999, np.float32)
    data[0, :10, :10] = 1
    src = write_raster(tmp_path / "s.tif", data, nodata=-9999)
    tgt = write_raster(tmp_path / "t.tif", data, nodata=-9999)  # (one file as both: a warning)
    out = tmp_path / "chips"
    err = run_error(capsys, export_args(src, tgt, out, "--chip-size", 64))
    assert "no chip kept from 4 candidate(s)" in err and "4 too many invalid pixels" in err
    assert not out.exists()  # nothing left: a corrected rerun needs no --overwrite
    assert not list(tmp_path.glob(".chips.*"))


def test_incomplete_folder_is_refused_by_the_dataset(tmp_path, pair):
    from geopix2pix.chips.dataset import ChipDataset
    from geopix2pix.errors import GeoPix2PixError

    out = tmp_path / "chips"
    assert main(export_args(*pair, out, "--chip-size", 64)) == 0
    (out / "dataset.json").unlink()
    with pytest.raises(GeoPix2PixError, match="incomplete chips folder"):
        ChipDataset(out)


def test_a_folder_of_rasters_is_told_it_is_no_chips_folder(tmp_path, pair, capsys):
    """A user's data folder passed to train: not an 'incomplete chips folder' to re-export
    with --overwrite (export-chips would refuse a folder of other files), but no chips folder
    at all, and how to make one."""
    assert main(["train", str(pair[0].parent), "-o", str(tmp_path / "run"), "--max-steps", "1",
                 "--device", "cpu", "--workers", "0", "-q"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"Error: {pair[0].parent} is not a chips folder (no dataset.json); run geopix2pix "
        "export-chips SOURCE TARGET -o CHIPS_DIR first, and pass CHIPS_DIR")
    # a data folder arranged as source/ and target/ is one too (export wrote no chips.gpkg)
    data = tmp_path / "data"
    for side, raster in zip(("source", "target"), pair):
        (data / side).mkdir(parents=True)
        (data / side / raster.name).write_bytes(raster.read_bytes())
    assert main(["train", str(data), "-o", str(tmp_path / "run"), "--max-steps", "1", "-q"]) == 2
    assert "is not a chips folder" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 2])
def test_a_damaged_raster_is_one_clear_line(tmp_path, capsys, workers):
    """Tiles that do not decode: GDAL's own words, also from a worker process (whose error
    would otherwise arrive as rasterio's bare "Read failed. See previous exception")."""
    broken = write_damaged(tmp_path / "broken.tif", bands=1)
    target = write_raster(tmp_path / "t.tif", np.ones((1, 256, 256), np.uint8))
    err = run_error(capsys, export_args(broken, target, tmp_path / "chips", "--chip-size", 32,
                                        "--workers", workers))
    assert "broken.tif" in err and "IReadBlock failed" in err and "gdalinfo -checksum" in err
    assert "See previous" not in err
    assert not (tmp_path / "chips").exists()  # the chips written before are removed
    assert not list(tmp_path.glob(".chips.*"))


def test_a_source_listed_twice_in_pairs_is_refused(tmp_path, pair, capsys):
    """Its chips would be exported twice, and a copy could land in train and another in val."""
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"source,target\n{pair[0].name},{pair[1].name}\n./{pair[0].name},"
                   f"{pair[1].name}\n")
    err = run_error(capsys, ["export-chips", "--pairs", str(csv), "-o", str(tmp_path / "c"),
                             "-q"])
    assert "pairs 1 and 2 are the same" in err
    assert not (tmp_path / "c").exists()


def test_pairs_whose_values_mean_different_things_are_refused(tmp_path, pair, capsys):
    """A date of L2A reflectance (scale 1e-4) beside one of raw DNs: the same numbers would be
    different quantities in one dataset."""
    import rasterio

    other = write_raster(tmp_path / "s2.tif", np.ones((2, 128, 128), np.float32))
    with rasterio.open(other, "r+") as ds:
        ds.scales = (1e-4, 1e-4)
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"source,target\n{pair[0].name},{pair[1].name}\ns2.tif,{pair[1].name}\n")
    err = run_error(capsys, ["export-chips", "--pairs", str(csv), "-o", str(tmp_path / "c"),
                             "-q", "--chip-size", "64"])
    assert err == (f"Error: {other}: band 1 scale 0.0001 (the first source: 1); band 2 scale "
                   "0.0001 (the first source: 1); all pairs need values in the same units "
                   "(convert them, or set the metadata right with gdal_edit.py)")


def test_pairs_whose_bands_are_the_same_in_another_order_are_refused(tmp_path, pair, capsys):
    """A tester's second date stored B12..B01 (by the bands' descriptions) was exported beside
    one stored B01..B12: the bands mixed in training. Other names say nothing of the order."""
    import rasterio

    def described(name, texts):
        path = write_raster(tmp_path / name, np.ones((2, 128, 128), np.float32))
        with rasterio.open(path, "r+") as ds:
            for band, text in enumerate(texts, 1):
                ds.set_band_description(band, text)
        return path

    described("a.tif", ("VV", "VH"))
    swapped = described("b.tif", ("VH", "VV"))
    csv = tmp_path / "pairs.csv"
    csv.write_text(f"source,target\na.tif,{pair[1].name}\nb.tif,{pair[1].name}\n")
    args = ["export-chips", "--pairs", str(csv), "-q", "--chip-size", "64"]
    err = run_error(capsys, [*args, "-o", str(tmp_path / "c")])
    assert err == (f"Error: {swapped}: its bands are described VH, VV where the first source's "
                   "are VV, VH: the same bands in another order; all pairs need their bands in "
                   "one order (reorder them with gdal_translate -b)")
    described("b.tif", ("Sigma0_VV", "Sigma0_VH"))
    assert main([*args, "-o", str(tmp_path / "d")]) == 0


def test_the_aoi_is_recorded_by_its_full_path(tmp_path, pair, monkeypatch):
    import json

    import geopandas as gpd
    from shapely.geometry import box

    gpd.GeoDataFrame(geometry=[box(500000, 5198720, 501280, 5200000)],
                     crs="EPSG:32633").to_file(tmp_path / "aoi.gpkg")
    monkeypatch.chdir(tmp_path)
    assert main(export_args(pair[0], pair[1], tmp_path / "c", "--aoi", "aoi.gpkg",
                            "--chip-size", "64")) == 0
    options = json.loads((tmp_path / "c" / "dataset.json").read_text())["options"]
    assert options["aoi"] == str(tmp_path / "aoi.gpkg")  # as the pairs are, not as typed


def test_sigterm_during_export_leaves_nothing(tmp_path):
    """A stopped export (kill, timeout, a scheduler) removes the chips it wrote: there is no
    resuming an export, and a rerun then needs no --overwrite."""
    data = np.random.default_rng(0).random((1, 1024, 1024), dtype=np.float32)
    source, target = write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data)
    out = tmp_path / "chips"
    run = subprocess.Popen([sys.executable, "-m", "geopix2pix", *map(str, export_args(
        source, target, out, "--chip-size", 32, "--stride", 8, "--workers", 0))],
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".chips.*.partial/source/*.tif")) and \
            time.monotonic() < deadline:  # built beside chips/, swapped in once complete
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    assert run.wait(60) == 143
    assert run.stderr.read() == (f"Stopped: no chips were exported to {out} (none cut before "
                                 "the stop is left)\n")  # one line: no "Terminated." either
    assert not out.exists() and not list(tmp_path.glob(".chips.*"))


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads Linux's /proc")
def test_export_workers_end_with_a_killed_export(tmp_path):
    """kill -9 of an export: its workers, which it can no longer end, end themselves (a
    tester's waited for work for 11 minutes, holding the killed command's output pipes open,
    so a pipeline reading them hung)."""
    data = np.random.default_rng(0).random((1, 1024, 1024), dtype=np.float32)
    source, target = write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data)
    run = subprocess.Popen([sys.executable, "-m", "geopix2pix", *map(str, export_args(
        source, target, tmp_path / "chips", "--chip-size", 32, "--stride", 8, "--workers", 2))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not any(tmp_path.glob(".chips.*.partial/source/*.tif")):  # the workers are cutting
        assert run.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    children = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True,
                              text=True).stdout.split()
    assert children
    run.kill()
    run.wait()
    run.communicate(timeout=30)  # EOF: no worker holds the pipes any longer
    deadline = time.monotonic() + 30  # (and multiprocessing's resource tracker ends after them)
    while not all(_ended(int(pid)) for pid in children):
        assert time.monotonic() < deadline, children
        time.sleep(0.1)


def _ended(pid: int) -> bool:
    """Whether a process is gone, or a zombie (ended, waiting for its new parent to reap it:
    a container's first process may never do)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a file-size limit needs POSIX")
@pytest.mark.parametrize("workers", [0, 2])
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, workers):
    """A chip that cannot be written (a file-size limit stands in for a full disk): one line,
    not also libtiff's own line per block, from the main process or from a worker."""
    noise = np.random.default_rng(0).integers(0, 10_000, (3, 512, 512)).astype("uint16")
    source = write_raster(tmp_path / "s.tif", noise)
    target = write_raster(tmp_path / "t.tif", noise[:1])
    out = tmp_path / "chips"
    done = subprocess.run(
        [sys.executable, "-m", "geopix2pix", *export_args(source, target, out, "--chip-size",
                                                          256, "--workers", workers)],
        preexec_fn=limit_file_size(150_000), capture_output=True,
        text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"Error: cannot write {out / 'source'}/p000_") \
        and "Write error" in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not out.exists() and not list(tmp_path.glob(".chips.*"))


UNGUARDED = """
import geopix2pix as g
g.export_chips({source!r}, {target!r}, {out!r}, chip_size=32, workers=2, progress=False)
"""


def test_a_script_without_a_main_guard_is_told_what_to_do(tmp_path):
    """export's workers are spawned processes, which import the calling script again: without
    an `if __name__ == "__main__":` guard each would start the export once more."""
    data = np.random.default_rng(0).random((1, 256, 256), dtype=np.float32)
    source, target = write_raster(tmp_path / "s.tif", data), write_raster(tmp_path / "t.tif", data)
    script = tmp_path / "script.py"
    script.write_text(UNGUARDED.format(source=str(source), target=str(target),
                                       out=str(tmp_path / "chips")))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode != 0
    assert "export_chips was called while a worker process imported your script; put the " \
        'call under `if __name__ == "__main__":`' in done.stderr
    assert done.stderr.rstrip().endswith("since each worker imports the script)")


@pytest.mark.parametrize("content, message", [
    (b"source,target\n/a.tif\n", "--pairs {csv}, line 2: a source and a target path are "
                                 "needed; fill them in or remove the line"),
    (b"source,target\ns.tif,\n", "--pairs {csv}, line 2: a source and a target path are "
                                 "needed; fill them in or remove the line"),
    ("source,target\n".encode("utf-16"), "--pairs {csv} is not a UTF-8 text file (a raster, "
                                         "or a spreadsheet saved as UTF-16?); save it as CSV "
                                         "UTF-8 with source,target columns"),
    (b"II*\x00\xda\xff", "--pairs {csv} is not a UTF-8 text file (a raster, or a spreadsheet "
                         "saved as UTF-16?); save it as CSV UTF-8 with source,target columns"),
    (b"source,target\n", "--pairs {csv} needs a header with 'source' and 'target' columns and "
                         "at least one row"),
])
def test_a_pairs_csv_that_cannot_be_read_is_one_line(tmp_path, capsys, content, message):
    csv = tmp_path / "pairs.csv"
    csv.write_bytes(content)
    err = run_error(capsys, ["export-chips", "--pairs", str(csv), "-o", str(tmp_path / "c")])
    assert err == "Error: " + message.format(csv=csv)


def test_a_pairs_csv_from_excel_with_a_byte_order_mark_is_read(tmp_path, pair):
    from geopix2pix.chips.pairs import read_pairs_csv

    csv = tmp_path / "pairs.csv"
    csv.write_bytes(f"\ufeffsource, target\r\n{pair[0].name},{pair[1].name}\r\n".encode())
    assert read_pairs_csv(csv) == [pair]
