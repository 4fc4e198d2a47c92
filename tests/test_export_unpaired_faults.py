"""export-chips --unpaired under faults: a full disk (inline and with worker processes) and a
Ctrl-C, each leaving nothing of the export, as the paired export's fault battery checks."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from conftest import write_raster

from geopix2pix.cli import main


def noise_collections(folder):
    """A 3-band uint16 source and a 1-band uint8 target of noise (chips that compress little),
    in other CRSs."""
    noise = np.random.default_rng(0).integers(1, 10_000, (4, 128, 128)).astype("uint16")
    return (write_raster(folder / "a.tif", noise[:3]),
            write_raster(folder / "b.tif", (noise[3:] % 250 + 1).astype("uint8"),
                         crs="EPSG:32631"))


def unpaired_args(source, target, out, workers=0) -> list:
    return ["export-chips", "--unpaired", "--source", source, "--target", target, "-o", out,
            "--chip-size", "32", "--workers", workers, "-q"]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_unpaired_export_on_a_full_disk_stops_in_one_line_and_leaves_nothing(tmp_path,
                                                                                 workers):
    from tests.test_faults_full_disk import (
        PAGE,
        _no_namespaces,
        assert_no_room,
        on_full_disk,
        pages,
    )

    if _no_namespaces():
        pytest.skip(_no_namespaces())
    source, target = noise_collections(tmp_path)
    assert main([str(a) for a in unpaired_args(source, target, tmp_path / "roomy")]) == 0
    room = pages(*(tmp_path / "roomy").rglob("*.tif")) // 2 // PAGE * PAGE
    out = tmp_path / "disk" / "chips"
    outcome = on_full_disk(tmp_path, room, *unpaired_args(source, target, out, workers))
    line = outcome.error()
    file = Path(line.split()[3])
    assert file.parent in (out / "source", out / "target") and file.suffix == ".tif", line
    assert_no_room(line, file)
    assert outcome.left == []


def test_a_stopped_unpaired_export_leaves_nothing(tmp_path):
    from tests.test_faults_interrupts import Command, count, stopped_line

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source, target = noise_collections(inputs)
    out = tmp_path / "work" / "chips"
    out.parent.mkdir()
    code, err = Command(unpaired_args(source, target, out)).stop_when(
        lambda: count(out.parent, "target/*.tif") >= 4, signal.SIGINT)
    assert stopped_line(code, err, signal.SIGINT) == (
        f"Stopped: no chips were exported to {out} (none cut before the stop is left)")
    assert list(out.parent.iterdir()) == []


def test_a_pixel_size_far_finer_than_a_raster_is_refused_in_one_line(tmp_path, rng, capsys):
    """A tester's 300 m raster at --pixel-size 10 began cutting 500,116 chips of interpolated
    pixels: 8x finer per side (64 times the pixels) is the limit, as for predict
    --resample-to-model."""
    source = write_raster(tmp_path / "s.tif", rng.random((1, 160, 160), dtype=np.float32))
    coarse = Affine(300.0, 0.0, 600000.0, 0.0, -300.0, 5100000.0)
    target = write_raster(tmp_path / "t.tif", rng.random((1, 40, 40), dtype=np.float32),
                          transform=coarse)
    args = ["export-chips", "--unpaired", "--source", str(source), "--target", str(target),
            "--chip-size", "32", "--workers", "0", "-q", "-o"]
    assert main([*args, str(tmp_path / "a"), "--pixel-size", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("Error: --pixel-size 10: the target "
                                                         f"raster {target} has 300x300 m pixels")
    assert "(900 times its pixels" in err and not (tmp_path / "a").exists()
    assert main([*args, str(tmp_path / "b"), "--pixel-size", "37.5"]) == 0  # 8x per side: 64
