"""RUN_DIR/samples/epoch_NNN.png: a row per chip (input | prediction | target, or an unpaired
model's cycle), rendered by `raster.render`: a class map (``--categorical``) in its classes'
colours, the prediction being each pixel's highest-scoring class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from geopix2pix.raster.render import GAP, class_row, sample_row
from geopix2pix.raster.write import atomic_path

from .outputs import writing


def write_samples(path: Path, source: torch.Tensor, pred: torch.Tensor, target: torch.Tensor,
                  source_valid: torch.Tensor, target_valid: torch.Tensor,
                  colours: np.ndarray | None = None) -> None:
    """Write one PNG with a row per chip of the (N, C, H, W) batches (each side's validity:
    (N, 1, H, W)); with ``colours`` (`class_colours`), ``pred`` holds class scores and
    ``target`` class indices."""
    rows = []
    for chip in zip(source, pred, target, source_valid, target_valid):
        s, p, t = (x.float().cpu().numpy() for x in chip[:3])
        masks = (chip[3][0].cpu().numpy(), chip[4][0].cpu().numpy())
        rows.append(sample_row(s, p, t, *masks) if colours is None
                    else class_row(s, p, t, *masks, colours))
    write_rows(path, rows)


def write_rows(path: Path, rows: list[np.ndarray]) -> None:
    """One PNG of ``rows`` (each (H, W, 3) uint8, all as wide) one under another."""
    from PIL import Image

    spaced = []
    for row in rows:
        spaced += [row, np.full((GAP, row.shape[1], 3), 255, np.uint8)]
    image = np.concatenate(spaced[:-1], axis=0)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, overwrite=True, own=True) as temp:
            Image.fromarray(image).save(temp, format="PNG")
