"""Outputs are written under a temporary name and renamed only when complete."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from geopix2pix.errors import GeoPix2PixError
from geopix2pix.raster.write import atomic_path
from geopix2pix.runtime.partials import WHERE, is_stale, partial_name


def test_output_is_renamed_only_when_complete(tmp_path):
    out = tmp_path / "sub" / "out.tif"
    with pytest.raises(RuntimeError), atomic_path(out) as temp:
        temp.write_text("half")
        raise RuntimeError("killed")
    assert not (tmp_path / "sub").exists()  # nor the folder made for it
    with atomic_path(out) as temp:
        assert temp.parent == out.parent and temp.name.startswith(".out.")
        temp.write_text("whole")
    assert out.read_text() == "whole" and list((tmp_path / "sub").iterdir()) == [out]


def test_an_output_that_appears_meanwhile_is_kept_without_overwrite(tmp_path):
    out = tmp_path / "out.tif"
    with pytest.raises(GeoPix2PixError, match="appeared while it was being written"), \
            atomic_path(out) as temp:
        temp.write_text("ours")
        out.write_text("another run's")  # e.g. a second process, or another case of the name
    assert out.read_text() == "another run's" and list(tmp_path.iterdir()) == [out]
    with atomic_path(out, overwrite=True) as temp:
        temp.write_text("ours")
    assert out.read_text() == "ours" and list(tmp_path.iterdir()) == [out]


def test_without_hard_links_an_output_that_appeared_is_still_kept(tmp_path, monkeypatch):
    def no_links(*args):
        raise PermissionError("links not supported here")  # e.g. some network filesystems

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "out.tif"
    with atomic_path(out) as temp:
        temp.write_text("first")
    assert out.read_text() == "first" and list(tmp_path.iterdir()) == [out]
    out.unlink()
    with pytest.raises(GeoPix2PixError, match="appeared while it was being written"), \
            atomic_path(out) as temp:
        temp.write_text("ours")
        out.write_text("another run's")
    assert out.read_text() == "another run's" and list(tmp_path.iterdir()) == [out]


def test_existing_output_is_refused_and_a_bad_folder_explained(tmp_path):
    (tmp_path / "out.tif").write_text("old")
    with pytest.raises(GeoPix2PixError, match="already exists; pass --overwrite"), \
            atomic_path(tmp_path / "out.tif"):
        pass
    (tmp_path / "link.tif").symlink_to(tmp_path / "gone.tif")  # a broken link is there too
    with pytest.raises(GeoPix2PixError, match="link.tif is a link"), \
            atomic_path(tmp_path / "link.tif"):
        pass
    (tmp_path / "file").write_text("")
    with pytest.raises(GeoPix2PixError, match="cannot make the folder"), \
            atomic_path(tmp_path / "file" / "out.tif"):
        pass


def test_a_failure_to_write_the_temporary_names_the_output(tmp_path):
    out = tmp_path / "report.json"
    with pytest.raises(GeoPix2PixError, match=r"cannot write .*report.json \(Permission denied"), \
            atomic_path(out) as temp:
        raise PermissionError(13, "Permission denied", str(temp))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(PermissionError), atomic_path(out):  # another file's error is not ours
        raise PermissionError(13, "Permission denied", str(tmp_path / "elsewhere"))


def _gone_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporaries_of_killed_runs_are_removed_before_the_output_is_written(tmp_path):
    """A run killed outright leaves its temporary (gigabytes for a large scene); the next write
    of that output removes it, and only what is surely stale: of this process-id space, of a
    process that is gone. A running process's, another host's or container's, or another
    output's are kept."""
    out = tmp_path / "out.tif"
    dead, alive = _gone_pid(), os.getpid()
    elsewhere = ("f" if WHERE[0] != "f" else "e") + WHERE[1:]
    stale = [f".out.{WHERE}-{dead}-0a1b2c.partial.tif",
             f".out.{WHERE}-{dead}-0a1b2c.partial.tif.aux.xml",  # GDAL's sidecar
             f"..out.{WHERE}-{dead}-0a1b2c.partial.{WHERE}-{dead}-3d4e5f.partial.tif"]  # COG's
    kept = [f".out.{WHERE}-{alive}-0a1b2c.partial.tif",  # a running write of it
            f".out.{elsewhere}-{dead}-0a1b2c.partial.tif",  # another host's or container's
            f".out.b.{WHERE}-{dead}-0a1b2c.partial.tif",  # out.b.tif's, not out.tif's
            f".out.{WHERE}-{dead}-0a1b2c.partial.png",  # out.png's
            f".out.{WHERE}-99999999999-0a1b2c.partial.tif",  # no such pid: not judged
            ".out.0123abcd.partial.tif",  # no process named: not ours to judge
            "out.2.tif", ".out.notes.partial.tif"]
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x")
    assert partial_name(out).name.startswith(f".out.{WHERE}-{alive}-")
    assert all(is_stale(name, out) for name in stale)
    with atomic_path(out) as temp:
        temp.write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["out.tif"])


def test_a_hidden_output_has_its_own_temporaries_removed(tmp_path):
    out = tmp_path / ".hidden.tif"
    dead = _gone_pid()
    (tmp_path / f"..hidden.{WHERE}-{dead}-0a1b2c.partial.tif").write_bytes(b"x")
    assert partial_name(out).name.startswith(f"..hidden.{WHERE}-")
    with atomic_path(out) as temp:
        temp.write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == [".hidden.tif"]


def test_temporaries_of_another_pid_namespace_are_not_this_ones(tmp_path):
    """Containers with host networking share the host name but number processes anew: a
    temporary written in another pid namespace names another process-id space."""
    if not os.path.exists("/proc/self/ns/pid"):
        pytest.skip("no pid namespaces here")
    code = "from geopix2pix.runtime.partials import WHERE; print(WHERE)"
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert here.stdout.strip() == WHERE  # the same space: the same name
    inside = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c",
                             code], capture_output=True, text=True)
    if inside.returncode != 0:
        pytest.skip(f"cannot make a pid namespace here: {inside.stderr.strip()[-200:]}")
    assert inside.stdout.strip() != WHERE


def test_libtiff_stays_quiet_until_the_last_overlapping_writer_ends():
    """Writers in several threads overlap: the first to end must not give libtiff its
    printing back while another still writes."""
    from geopix2pix.raster import gdal_log

    setter = gdal_log._libtiff()
    if setter is None:
        pytest.skip("libtiff not found in this process")
    original = setter(None)
    setter(original)
    first, second = gdal_log.libtiff_quiet(), gdal_log.libtiff_quiet()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert setter(None) is None  # still quiet (and the probe leaves it so)
    second.__exit__(None, None, None)
    assert setter(original) == original  # the last one restored libtiff's own handler


def test_an_output_that_is_a_link_or_a_device_is_never_renamed_over(tmp_path):
    """An output is renamed into place: over a link (to a file elsewhere) that replaced the link
    with a file, over /dev/null a device; both are refused, with --overwrite too."""
    real = tmp_path / "real.tif"
    real.write_text("kept")
    (tmp_path / "link.tif").symlink_to(real)
    with pytest.raises(GeoPix2PixError, match="link.tif is a link"), \
            atomic_path(tmp_path / "link.tif", overwrite=True) as temp:
        temp.write_text("new")
    assert (tmp_path / "link.tif").is_symlink() and real.read_text() == "kept"
    (tmp_path / "null.tif").symlink_to("/dev/null")
    for device in ("/dev/null", tmp_path / "null.tif"):
        with pytest.raises(GeoPix2PixError, match="is a device, pipe or socket"), \
                atomic_path(device, overwrite=True) as temp:
            temp.write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tif", "null.tif", "real.tif"]


def test_a_link_among_the_tools_own_files_is_replaced_and_its_target_kept(tmp_path):
    """A run folder copied with ``cp -rs`` (or a DVC cache's links): its train.json, history
    and checkpoint are rewritten as files, never through the link into the original."""
    real = tmp_path / "original.json"
    real.write_text("kept")
    (tmp_path / "train.json").symlink_to(real)
    with atomic_path(tmp_path / "train.json", overwrite=True, own=True) as temp:
        temp.write_text("new")
    assert not (tmp_path / "train.json").is_symlink()
    assert (tmp_path / "train.json").read_text() == "new" and real.read_text() == "kept"
