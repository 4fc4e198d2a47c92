"""Fault battery: earlier work survives a failed run. An `export-chips --overwrite` (also with
--pairs) that fails (all-nodata source, damaged target, a file size limit) or is stopped
(SIGTERM) or killed (SIGKILL) leaves the earlier export byte-identical and complete, and a
rerun after a kill completes as an uninterrupted export; a failed export into a new folder
leaves nothing. Each case: exit status, one line without traceback, nothing earlier lost."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import limit_file_size, write_damaged, write_raster

from geopix2pix.cli import main

SIZE = 128
pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="signals need POSIX")


def digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (hidden ones too), by relative path."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    """Hidden staging folders (or anything hidden) left in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def fails(capsys, args) -> str:
    """Run the CLI in-process, expect exit 2; its one line."""
    assert main([str(a) for a in args]) == 2
    return one_line(capsys.readouterr().err)


def export_args(source, target, out, *extra) -> list[str]:
    return [str(a) for a in ["export-chips", source, target, "-o", out, "-q", "--chip-size",
                             "32", "--split-block", "32", "--workers", "0", *extra]]


def pairs_args(csv: Path, out, *extra) -> list[str]:
    return [str(a) for a in ["export-chips", "--pairs", csv, "-o", out, "-q", "--chip-size",
                             "32", "--split-block", "32", "--workers", "0", *extra]]


@pytest.fixture
def rasters(tmp_path) -> dict[str, Path]:
    """A good pair, and bad stand-ins for each side."""
    folder = tmp_path / "rasters"
    folder.mkdir()
    data = np.random.default_rng(0).integers(1, 250, (3, SIZE, SIZE), np.uint8)
    return {
        "source": write_raster(folder / "s.tif", data, nodata=0),
        "target": write_raster(folder / "t.tif", data[:1], nodata=0),
        "source2": write_raster(folder / "s2.tif", data[::-1], nodata=0),
        "target2": write_raster(folder / "t2.tif", data[1:2], nodata=0),
        "empty": write_raster(folder / "empty.tif", np.zeros_like(data), nodata=0),
        "damaged": write_damaged(folder / "damaged.tif", bands=1, size=SIZE),
    }


@pytest.fixture
def earlier(tmp_path, rasters) -> tuple[Path, dict[str, str]]:
    """A complete earlier export in tmp/chips and its digest."""
    out = tmp_path / "chips"
    assert main(export_args(rasters["source"], rasters["target"], out)) == 0
    before = digest(out)
    assert "dataset.json" in before and "chips.gpkg" in before and len(before) > 10
    return out, before


def write_pairs(path: Path, rows: list[tuple[Path, Path]]) -> Path:
    path.write_text("source,target\n" + "".join(f"{s},{t}\n" for s, t in rows))
    return path


@pytest.mark.parametrize("bad", ["empty", "damaged"])
def test_a_failed_overwrite_keeps_the_earlier_export(capsys, rasters, earlier, bad):
    out, before = earlier
    source, target = (rasters["empty"], rasters["target"]) if bad == "empty" else \
        (rasters["source"], rasters["damaged"])
    line = fails(capsys, export_args(source, target, out, "--overwrite"))
    assert line.startswith("Error: ")
    assert digest(out) == before
    assert leftovers(out.parent) == []


@pytest.mark.parametrize("bad", ["empty", "damaged"])
def test_a_failed_pairs_overwrite_keeps_the_earlier_export(tmp_path, capsys, rasters, bad):
    good = (rasters["source"], rasters["target"])
    out = tmp_path / "chips"
    other = (rasters["source2"], rasters["target2"])
    assert main(pairs_args(write_pairs(tmp_path / "a.csv", [good, other]), out)) == 0
    before = digest(out)
    empty = [(rasters["empty"], rasters["target"]), (rasters["empty"], rasters["target2"])]
    rows = empty if bad == "empty" else [good, (rasters["source"], rasters["damaged"])]
    fails(capsys, pairs_args(write_pairs(tmp_path / "b.csv", rows), out, "--overwrite"))
    assert digest(out) == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("pairs", [False, True])
def test_a_failed_export_into_a_new_folder_leaves_nothing(tmp_path, capsys, rasters, pairs):
    out = tmp_path / "new" / "deeper" / "chips"
    if pairs:
        args = pairs_args(write_pairs(tmp_path / "p.csv", [(rasters["empty"],
                                                            rasters["target"])]), out)
    else:
        args = export_args(rasters["empty"], rasters["target"], out)
    assert "no chip kept" in fails(capsys, args)
    assert not (tmp_path / "new").exists()


def test_a_failed_export_into_an_empty_folder_leaves_it_empty(tmp_path, capsys, rasters):
    out = tmp_path / "chips"
    out.mkdir()
    fails(capsys, export_args(rasters["source"], rasters["damaged"], out))
    assert list(out.iterdir()) == [] and leftovers(tmp_path) == []


def run_export(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "geopix2pix", *args[:]], capture_output=True,
                          text=True, timeout=300, **kwargs)


def test_a_file_size_limit_during_an_overwrite_keeps_the_earlier_export(tmp_path, rasters,
                                                                         earlier):
    """Chips past the limit fail to write (EFBIG, as on a full disk)."""
    out, before = earlier
    big = tmp_path / "rasters" / "big.tif"
    noise = np.random.default_rng(2).integers(1, 250, (3, SIZE, SIZE), np.uint8)
    write_raster(big, noise, nodata=0)
    run = run_export(export_args(big, rasters["target"], out, "--overwrite"),
                     preexec_fn=limit_file_size(1500))
    assert digest(out) == before
    assert leftovers(tmp_path) == []
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert "Traceback" not in run.stderr and len(lines) == 1, run.stderr
    assert lines[0].startswith("Error: cannot write ") and "file-size limit" in lines[0], lines


def start_export(args: list[str], staged: Path) -> subprocess.Popen:
    """Start an export in a subprocess; return once it has written chips in its staging
    folder beside `staged` (the final folder)."""
    run = subprocess.Popen([sys.executable, "-m", "geopix2pix", *args], stderr=subprocess.PIPE,
                           text=True)
    deadline = time.monotonic() + 120
    pattern = f".{staged.name}.*.partial/source/*.tif"
    while not any(staged.parent.glob(pattern)):
        assert run.poll() is None, run.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return run


@pytest.fixture
def large(tmp_path) -> tuple[Path, Path]:
    """A pair large enough that an export of small chips takes a while."""
    data = np.random.default_rng(3).integers(1, 250, (1, 512, 512), np.uint8)
    return (write_raster(tmp_path / "rasters" / "ls.tif", data, nodata=0),
            write_raster(tmp_path / "rasters" / "lt.tif", data, nodata=0))


def slow_args(large, out, *extra) -> list[str]:
    return export_args(*large, out, "--stride", "4", *extra)


@pytest.mark.parametrize("pairs", [False, True])
def test_sigterm_during_an_overwrite_keeps_the_earlier_export(tmp_path, earlier, large, pairs):
    out, before = earlier
    args = pairs_args(write_pairs(tmp_path / "p.csv", [large]), out, "--stride", "4",
                      "--overwrite") if pairs else \
        slow_args(large, out, "--overwrite")
    run = start_export(args, out)
    run.send_signal(signal.SIGTERM)
    assert run.wait(120) == 128 + signal.SIGTERM
    line = one_line(run.stderr.read())
    assert line == (f"Stopped before the new export was complete: the earlier export in {out} "
                    "is as it was (nothing of the new one is left)")
    assert digest(out) == before
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("pairs", [False, True])
def test_a_killed_overwrite_keeps_the_earlier_export_and_a_rerun_completes(tmp_path, earlier,
                                                                           large, pairs):
    """SIGKILL leaves a staging folder beside the earlier export, which is untouched; the
    rerun removes it and writes what an uninterrupted export writes."""
    out, before = earlier
    args = pairs_args(write_pairs(tmp_path / "p.csv", [large]), out, "--overwrite") \
        if pairs else export_args(*large, out, "--overwrite")
    run = start_export(args, out)
    run.kill()
    run.wait(60)
    run.stderr.close()
    assert len(leftovers(tmp_path)) == 1  # the killed run's staging folder
    assert digest(out) == before
    assert main(args) == 0
    assert leftovers(tmp_path) == []
    reference = tmp_path / "reference"
    assert main([reference if a == str(out) else a for a in args[:-1]]) == 0
    chips = {k: v for k, v in digest(out).items() if k.endswith(".tif")}
    assert chips == {k: v for k, v in digest(reference).items() if k.endswith(".tif")}
    assert len(chips) > 2 * len([k for k in before if k.endswith(".tif")])


def dead_pid() -> int:
    """The process id of a process that has ended."""
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)


def test_a_killed_runs_staging_folder_counts_as_the_commands_own(tmp_path):
    """A folder holding chips/ (the demo's) may hold what a killed export left beside it; not
    what a running one is building."""
    from geopix2pix.runtime.folders import Owned
    from geopix2pix.runtime.partials import WHERE

    owned = Owned(("demo.json",), {"chips": Owned()})
    stale = tmp_path / f".chips.{WHERE}-{dead_pid()}-abcdef.partial"
    running = tmp_path / f".chips.{WHERE}-{os.getpid()}-abcdef.partial"
    other = tmp_path / f".scenes.{WHERE}-{dead_pid()}-abcdef.partial"
    for folder in (stale, running, other):
        folder.mkdir()
    assert owned.foreign(tmp_path) == sorted([f"{running.name}/", f"{other.name}/"])
    assert owned.owns(stale) and not owned.owns(running)


def test_a_killed_swap_is_put_back_by_the_next_run(tmp_path, rasters, earlier):
    """A run killed between renaming the earlier export aside and the new one in (where the
    system has no atomic exchange) leaves it aside: the next run puts it back first."""
    from geopix2pix.runtime.partials import WHERE

    out, before = earlier
    dead = dead_pid()
    aside = tmp_path / f".chips.{WHERE}-{dead}-abcdef.partial.earlier"
    staging = tmp_path / f".chips.{WHERE}-{dead}-123456.partial"
    out.rename(aside)
    staging.mkdir()
    args = export_args(rasters["source"], rasters["target"], out)
    assert main(args) == 2  # the earlier export is back, so not empty without --overwrite
    assert digest(out) == before and leftovers(tmp_path) == []


def test_the_index_names_no_staging_folder(earlier):
    """chips.gpkg and dataset.json record the rasters' paths, never where the chips were
    built: the chips are found relative to the folder they are in."""
    out, _ = earlier
    for name in ("chips.gpkg", "dataset.json"):
        assert b".partial" not in (out / name).read_bytes()


def test_an_overwrite_of_the_current_folder_is_refused_and_kept(capsys, rasters, earlier,
                                                                monkeypatch):
    """Swapping the current folder away would leave the user's shell in the removed one."""
    out, before = earlier
    monkeypatch.chdir(out)
    line = fails(capsys, export_args(rasters["source"], rasters["target"], ".", "--overwrite"))
    assert line == ("Error: . is the current folder: --overwrite builds the new outputs beside "
                    "it and swaps them in, which would leave this shell in the removed one; run "
                    "from its parent folder (-o chips)")
    assert digest(out) == before and leftovers(out.parent) == []


def test_without_an_atomic_exchange_a_stop_mid_swap_puts_the_earlier_back(tmp_path,
                                                                          monkeypatch):
    """Where the system has no atomic exchange the earlier folder is renamed aside first: a
    stop before the new one is in puts it back, and a swap that completes leaves only the new."""
    from geopix2pix.runtime import staging

    final = tmp_path / "chips"
    final.mkdir()
    (final / "dataset.json").write_text("earlier")
    new = staging.make_staging(final)
    (new / "dataset.json").write_text("new")
    monkeypatch.setattr(staging, "_exchange", lambda first, second: False)
    rename = os.rename

    def stopped_putting_the_new_in(source, destination):
        if Path(source) == new:
            raise KeyboardInterrupt
        rename(source, destination)

    monkeypatch.setattr(os, "rename", stopped_putting_the_new_in)
    with pytest.raises(KeyboardInterrupt):
        staging.swap_in(new, final)
    assert (final / "dataset.json").read_text() == "earlier"
    assert leftovers(tmp_path) == [new.name]
    monkeypatch.setattr(os, "rename", rename)
    staging.swap_in(new, final)
    assert (final / "dataset.json").read_text() == "new" and leftovers(tmp_path) == []
