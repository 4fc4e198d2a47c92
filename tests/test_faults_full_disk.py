"""Faults: a full disk, for real. Each command runs (`python3 -m geopix2pix`, this checkout) with
its output on a small tmpfs mounted in a user and mount namespace of its own (`unshare -Urm`,
no privileges), filled to leave a chosen room, so the failure lands in the write under test.

The promise: exit status 2; one line (no traceback, no GDAL or libtiff line beside it) naming
the file that could not be written, the folder and the room left there; nothing of the failed
step left behind (no chip, no index, no partial model file or output, no temporary).

The cases: export-chips failing at a chip (with and without worker processes), at chips.gpkg
and at dataset.json, and on a disk out of inodes; train at its samples, its model file and its
checkpoint; predict at its GeoTIFF, a COG's tiled temporary and --resample-to-model's
temporary; evaluate --json; the demo's generated scenes; and the message for ENOSPC, EDQUOT
and EFBIG.
"""

from __future__ import annotations

import errno
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from conftest import write_raster

from geopix2pix.cli import main
from geopix2pix.raster.write import cannot_write

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096  # tmpfs counts pages
FILLER = 4 * PAGE  # what fills the tmpfs beyond the room left (its size cannot be 0)
TRAIN = ("--recipe", "paper",
         "--ngf", "8", "--ndf", "8", "--max-steps", "2", "--workers", "0", "--batch-size", "4",
         "--device", "cpu")
# in the namespace: mount the tmpfs ($1, options $2), fill it but for the room asked ($3 bytes
# of filler), run the command, list the files left in the tmpfs into $4 (outside it)
SCRIPT = """
disk=$1 options=$2 fill=$3 listing=$4
shift 4
mount -t tmpfs -o "$options" tmpfs "$disk" || exit 99
head -c "$fill" /dev/zero > "$disk/.filler" || exit 98
"$@"
status=$?
(cd "$disk" && find . -type f ! -name .filler | sed 's|^\\./||' | sort) > "$listing"
exit $status
"""


@functools.cache
def _no_namespaces() -> str | None:
    """Why a tmpfs cannot be mounted in a user namespace here, or None when it can."""
    if not sys.platform.startswith("linux"):
        return "user and mount namespaces are Linux's"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "no unshare binary (util-linux)"
    with tempfile.TemporaryDirectory() as probe:
        done = subprocess.run([unshare, "-Urm", "sh", "-c",
                               'mount -t tmpfs -o size=4k tmpfs "$0"', probe],
                              capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return f"cannot mount a tmpfs in a user namespace: {done.stderr.strip()}"
    return None


@pytest.fixture
def namespaces() -> None:
    reason = _no_namespaces()
    if reason:
        pytest.skip(reason)


@dataclass
class Outcome:
    returncode: int
    stderr: str
    left: list[str]  # the files in the tmpfs afterwards, relative to it

    def error(self) -> str:
        """The one error line (every line of stderr checked: no traceback, no GDAL line)."""
        lines = self.stderr.splitlines()
        assert self.returncode == 2, self.stderr
        assert lines and lines[-1].startswith("Error: "), self.stderr
        others = lines[:-1]  # train's "training on ..." line, nothing else
        assert all(line.startswith("training on ") for line in others), self.stderr
        return lines[-1]


def on_full_disk(tmp_path: Path, room: int, *args: str | Path, files: int = 0) -> Outcome:
    """Run `geopix2pix ARGS` with `tmp_path`/disk a fresh tmpfs with `room` bytes (a multiple of
    the page size) free, and with `files` room for that many files and folders only."""
    disk, listing = tmp_path / "disk", tmp_path / "left.txt"
    disk.mkdir(exist_ok=True)
    options = f"size={room + FILLER}" + (f",nr_inodes={files + 2}" if files else "")
    command = ["unshare", "-Urm", "sh", "-c", SCRIPT, "sh", str(disk), options,
               str(FILLER), str(listing), sys.executable, "-m", "geopix2pix",
               *[str(arg) for arg in args]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode not in (98, 99), done.stderr  # the tmpfs itself failed
    return Outcome(done.returncode, done.stderr, listing.read_text().split())


def pages(*paths: Path) -> int:
    """The bytes a tmpfs needs for the files `paths`."""
    return sum(-(-path.stat().st_size // PAGE) * PAGE for path in paths)


def assert_no_room(line: str, file: Path) -> None:
    """The error says which file, why, and the room left on the filesystem of its folder."""
    head = f"Error: cannot write {file} (No space left on device): "
    tail = (f" free on the filesystem of {file.parent}{os.sep}; free some space or choose "
            "another output folder")
    assert line.startswith(head) and line.endswith(tail), line
    room = line[len(head):-len(tail)]
    assert room == "0 bytes" or room.endswith(("KiB", "MiB")), line


# --- the inputs, made once: a pair, its chips and a tiny run ------------------------------------

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """s.tif (3 bands) and t.tif (1 band), 128 px of uint16 noise (chips that compress little),
    their 32 px chips and a 2-step run on them (written on a roomy disk: the sizes to fill)."""
    folder = tmp_path_factory.mktemp("full_disk")
    noise = np.random.default_rng(0).integers(0, 10_000, (4, 128, 128)).astype("uint16")
    source = write_raster(folder / "s.tif", noise[:3])
    target = write_raster(folder / "t.tif", noise[3:])
    chips, run = folder / "chips", folder / "run"
    assert main(["export-chips", str(source), str(target), "-o", str(chips), "--chip-size", "32",
                 "--workers", "0", "-q"]) == 0
    assert main(["train", str(chips), "-o", str(run), *TRAIN, "-q"]) == 0
    return dict(source=source, target=target, chips=chips, run=run)


def export_args(data: dict[str, Path], out: Path, workers: int = 0) -> list:
    return ["export-chips", data["source"], data["target"], "-o", out, "--chip-size", "32",
            "--workers", workers, "-q"]


def chip_files(chips: Path) -> list[Path]:
    return sorted(chips.glob("source/*.tif")) + sorted(chips.glob("target/*.tif"))


# --- export-chips -----------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [0, 2])
def test_export_stops_at_the_first_chip_it_cannot_write(namespaces, tmp_path, data, workers):
    """A chip write GDAL only logs as failed is noticed, in a worker process too: the export
    stops there with one line (not 133 more failures and a traceback from the index)."""
    room = pages(*chip_files(data["chips"])) // 2 // PAGE * PAGE
    out = tmp_path / "disk" / "chips"
    outcome = on_full_disk(tmp_path, room, *export_args(data, out, workers))
    line = outcome.error()
    file = Path(line.split()[3])
    assert file.parent in (out / "source", out / "target") and file.suffix == ".tif", line
    assert_no_room(line, file)
    assert outcome.left == []  # no chip of the failed export


def test_export_on_a_disk_out_of_inodes_says_so(namespaces, tmp_path, data):
    """Room for bytes but not for files (a file system out of inodes): the export makes its
    folder, and no more (here its source/ folder)."""
    out = tmp_path / "disk" / "chips"
    outcome = on_full_disk(tmp_path, 64 * PAGE, *export_args(data, out), files=1)
    line = outcome.error()
    assert line.startswith(f"Error: cannot write {out / 'source'} (No space left on device): "
                           f"no more files fit on the filesystem of {out}/ (its inodes are used "
                           "up; "), line
    assert line.endswith(" free); free some space or choose another output folder"), line
    assert outcome.left == []


def test_export_whose_index_does_not_fit_says_so_in_one_line(namespaces, tmp_path, data):
    """Every chip fits, chips.gpkg does not: pyogrio's error (an SQL dump of several KB) is one
    line naming the index, and the chips written are removed."""
    room = pages(*chip_files(data["chips"])) + PAGE
    out = tmp_path / "disk" / "chips"
    outcome = on_full_disk(tmp_path, room, *export_args(data, out))
    line = outcome.error()
    assert_no_room(line, out / "chips.gpkg")
    assert "CREATE TABLE" not in line and len(line) < 300
    assert outcome.left == []


def test_export_whose_dataset_json_does_not_fit_leaves_nothing(namespaces, tmp_path, data):
    """The chips and the index fit exactly (the index needs no room for a journal), the last
    file, dataset.json, does not."""
    room = pages(*chip_files(data["chips"]), data["chips"] / "chips.gpkg")
    out = tmp_path / "disk" / "chips"
    outcome = on_full_disk(tmp_path, room, *export_args(data, out))
    assert_no_room(outcome.error(), out / "dataset.json")
    assert outcome.left == []


# --- train ------------------------------------------------------------------------------------

# train's writes in order: train.json and baselines.json first, then at the end of the epoch
# the samples, metrics.csv, the model files and checkpoint.pt (each: what is written before it)
WRITTEN_BEFORE = {
    "samples/epoch_001.png": ["baselines.json", "train.json"],
    "model.safetensors": ["baselines.json", "train.json", "samples/epoch_001.png", "metrics.csv"],
    "checkpoint.pt": ["baselines.json", "train.json", "samples/epoch_001.png", "metrics.csv",
                      "model.safetensors", "model-best.safetensors"],
}


@pytest.mark.parametrize("fails", list(WRITTEN_BEFORE))
def test_train_that_cannot_write_a_file_leaves_no_part_of_it(namespaces, tmp_path, data, fails):
    """A disk with room for the files written before `fails` (and a quarter of it): one line
    naming it, and nothing left: a new run that fails before its first checkpoint (there is
    nothing to resume) removes the folder it made."""
    before = [data["run"] / name for name in WRITTEN_BEFORE[fails]]
    room = pages(*before) + pages(data["run"] / fails) // 4 // PAGE * PAGE
    run = tmp_path / "disk" / "run"
    outcome = on_full_disk(tmp_path, room, "train", data["chips"], "-o", run, *TRAIN, "-q")
    assert_no_room(outcome.error(), run / fails)
    assert outcome.left == []


# --- predict and evaluate ---------------------------------------------------------------------

@pytest.mark.parametrize("options", [[], ["--cog"], ["--resample-to-model"]])
def test_predict_on_a_full_disk_leaves_no_output_and_no_temporary(namespaces, tmp_path, data,
                                                                 options):
    """The GeoTIFF, the tiled temporary a COG is made from, and the temporary at the model's
    pixel size (--resample-to-model, here a scene of 20 m pixels for a 10 m model)."""
    scene = data["source"]
    if "--resample-to-model" in options:
        coarse = np.random.default_rng(1).integers(0, 10_000, (3, 96, 96)).astype("uint16")
        scene = write_raster(tmp_path / "coarse.tif", coarse,
                             transform=Affine(20.0, 0.0, 500000.0, 0.0, -20.0, 5200000.0))
    out = tmp_path / "disk" / "out.tif"
    outcome = on_full_disk(tmp_path, PAGE, "predict", scene, out, "--model",
                           data["run"] / "model.safetensors", "-q", *options)
    assert_no_room(outcome.error(), out)
    assert outcome.left == []


def test_evaluate_json_on_a_full_disk_leaves_no_file(namespaces, tmp_path, data):
    report = tmp_path / "disk" / "report.json"
    outcome = on_full_disk(tmp_path, 0, "evaluate", data["target"], data["target"], "--json",
                           report)
    assert_no_room(outcome.error(), report)
    assert outcome.left == []


def test_demo_that_cannot_write_a_scene_says_which_in_one_line(namespaces, tmp_path):
    """The demo's generated rasters are checked like every GeoTIFF written: not libtiff's line
    and GDAL's "Write error at scanline 0" without a file name."""
    demo = tmp_path / "disk" / "demo"
    outcome = on_full_disk(tmp_path, 16 * PAGE, "demo", "-o", demo, "--quick", "-q")
    line = outcome.error()
    assert_no_room(line, Path(line.split()[3]))
    assert Path(line.split()[3]).parent == demo / "scenes", line
    assert not any(name.endswith(".tif") for name in outcome.left), outcome.left


# --- the message itself -----------------------------------------------------------------------

@pytest.mark.parametrize("code, words", [
    (errno.ENOSPC, "free some space or choose another output folder"),
    (errno.EDQUOT, "your disk quota there is used up"),
    (errno.EFBIG, "larger than this file system (or `ulimit -f`) allows"),
])
def test_each_no_room_error_names_the_folder_and_the_room_left(tmp_path, code, words):
    line = str(cannot_write(tmp_path / "chips" / "dataset.json", "ignored", code))
    assert line.startswith(f"cannot write {tmp_path / 'chips' / 'dataset.json'} "
                           f"({os.strerror(code)}): ")
    assert f" free on the filesystem of {tmp_path / 'chips'}{os.sep}" in line  # (to be made)
    assert words in line and "\n" not in line
    room = re.search(r"([0-9.]+) (bytes|KiB|MiB|GiB|TiB) free on", line)
    scale = {"bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
    free = shutil.disk_usage(tmp_path).free  # of the parent: the folder does not exist
    assert room and abs(float(room[1]) * scale[room[2]] - free) < max(free / 10, 64 << 20), line
