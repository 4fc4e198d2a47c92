"""export-chips --unpaired under faults: a full disk (inline and with worker processes) and a
Ctrl-C, each leaving nothing of the export, as the paired export's fault battery checks."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest

from geopix2pix.cli import main
from tests.conftest import write_raster


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
