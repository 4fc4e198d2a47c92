"""Fault battery: a read-only output folder is refused before any work, in one line naming the
folder and what to do (exit 2), for export-chips (empty, new, or holding an earlier export to
overwrite, which stays as it was), train, predict (OUT and --out-dir) and evaluate --json.

Tests run as root, whom a folder's mode does not stop: the folder is made read-only for real by
a read-only bind mount in a user and mount namespace (`unshare -Urm`, no privileges needed),
and the test is skipped where user namespaces are unavailable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_raster
from predict_helpers import write_scene

from geopix2pix.cli import main
from tests.test_faults_overwrite import digest

UNSHARE = shutil.which("unshare")

# runs each command line of argv[1] (JSON) in this process: exit status and stderr of each
DRIVER = """
import contextlib, io, json, sys
from geopix2pix.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(args)
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def namespaces_work() -> bool:
    if UNSHARE is None or not sys.platform.startswith("linux"):
        return False
    probe = subprocess.run([UNSHARE, "-Urm", "true"], capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not namespaces_work(),
                                reason="needs unshare -Urm (user and mount namespaces)")


def run_read_only(folder: Path, commands: list[list[str]]) -> list[tuple[int, str]]:
    """Run `commands` (CLI arguments) in one process where `folder` is mounted read-only."""
    script = (f'mount --bind "{folder}" "{folder}" && '
              f'mount -o remount,bind,ro "{folder}" && exec "$0" -c "$1" "$2"')
    done = subprocess.run([UNSHARE, "-Urm", "sh", "-c", script, sys.executable, DRIVER,
                           json.dumps(commands)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    return [tuple(r) for r in json.loads(done.stdout)]


def test_a_read_only_output_folder_is_one_line_for_every_command(tmp_path, model_file):
    data = np.random.default_rng(0).random((3, 128, 128), dtype=np.float32)
    source = write_raster(tmp_path / "s.tif", data)
    target = write_raster(tmp_path / "t.tif", data[:1])
    chips = tmp_path / "chips"
    export = ["export-chips", str(source), str(target), "-q", "--chip-size", "32",
              "--workers", "0"]
    assert main([*export, "-o", str(chips)]) == 0
    scene = write_scene(tmp_path / "scene.tif", 64, 64)
    ro = tmp_path / "ro"
    (ro / "empty").mkdir(parents=True)
    shutil.copytree(chips, ro / "earlier")
    before = digest(ro / "earlier")
    train = ["train", str(chips), "--ngf", "8", "--ndf", "8", "--max-steps", "1", "--device",
             "cpu", "--workers", "0", "-q"]
    cases = {  # command line -> the folder its line names
        "export into an empty folder": ([*export, "-o", str(ro / "empty")], ro / "empty"),
        "export into a new folder": ([*export, "-o", str(ro / "new")], ro),
        "export --overwrite": ([*export, "-o", str(ro / "earlier"), "--overwrite"],
                               ro / "earlier"),
        "train": ([*train, "-o", str(ro / "empty")], ro / "empty"),
        "train into a new folder": ([*train, "-o", str(ro / "run")], ro),
        "predict OUT": (["predict", scene, str(ro / "p.tif"), "-m", model_file, "-q"], ro),
        "predict --out-dir": (["predict", scene, "--out-dir", str(ro / "preds"), "-m",
                               model_file, "-q"], ro),
        "evaluate --json": (["evaluate", str(target), str(target), "--json",
                             str(ro / "e.json")], ro),
    }
    results = run_read_only(ro, [args for args, _ in cases.values()])
    for (name, (_, folder)), (code, err) in zip(cases.items(), results):
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, (name, err)
        assert lines[0].startswith(f"Error: cannot write in the folder {folder}"), (name, err)
        assert lines[0].endswith(": read-only file system; make it writable or choose another "
                                 "output folder"), (name, err)
    assert digest(ro / "earlier") == before
    assert sorted(p.name for p in ro.iterdir()) == ["earlier", "empty"]
    assert list((ro / "empty").iterdir()) == []
