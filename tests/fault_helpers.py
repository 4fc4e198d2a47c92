"""Helpers of the fault battery (tests/test_faults_*.py): a tiny real run to tamper with, a
pickle that proves whether it ran, and the one-line check of a refusal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import write_raster

from geopix2pix.chips.export import export_chips
from geopix2pix.training import train


class Marker:
    """Unpickling this creates the marker file: proof that pickle code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def trained_run(folder: Path) -> tuple[Path, Path]:
    """64-px chips of a small DEM and its shading, and a run trained on them for 2 steps
    (model.safetensors, checkpoint.pt...): (chips folder, run folder)."""
    y, x = np.mgrid[0:128, 0:128]
    dem = (100 + 30 * np.sin(x / 9.0) + 20 * np.cos(y / 7.0)).astype("float32")
    shade = np.clip(128 + 40 * np.gradient(dem)[1], 0, 255).astype("uint8")
    source = write_raster(folder / "dem.tif", dem)
    target = write_raster(folder / "shade.tif", shade)
    export_chips(source, target, folder / "chips", chip_size=64, stride=32, split_block=64,
                 workers=1, progress=False)
    train(folder / "chips", folder / "run", ngf=4, ndf=4, batch_size=2, workers=0, quiet=True,
          device="cpu", max_steps=2, epochs=1, decay_epochs=0, recipe="paper")
    return folder / "chips", folder / "run"


def one_error_line(capsys, code: int) -> str:
    """The single stderr line of a command that exited 2 (no traceback, nothing else)."""
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1 and lines[0].startswith("Error: "), captured.err
    assert "Traceback" not in captured.err and len(lines[0]) < 600, captured.err
    return lines[0]
