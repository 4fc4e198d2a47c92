"""The blend windows (``--blend``): how a window's output is weighted where windows overlap.

A window is one entry of `BLEND_WINDOWS`: its name (the ``--blend`` choice), its weights along
one axis and whether it keeps only its centre crop; `BLENDS`, the choices, are its names. The
weights of a window's output are the outer product of its axis weights
(`prediction.engine.blend.window_weights`), and the lattice of windows follows
`BlendWindow.centre_only` (`prediction.engine.windows.make_layout`). Numpy only and below
settings, so that --blend's choices are known without loading torch.

- ``hann``: ``sin^2(pi (i + 0.5) / size)``, floored at 1e-3 as MONAI does; summed over a lattice
  with stride size/2 it is constant, so blended outputs have no seams (Pielawski & Wahlby 2020
  found Hann the best window for stitching).
- ``none``: each window's centre ``stride x stride`` crop weighted 1, the rest 0: the crops tile
  the scene (the margin dropped at each window edge hides the zero padding of convolutions).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

WEIGHT_FLOOR = 1e-3


@dataclass(frozen=True)
class BlendWindow:
    """`weights(size, stride, margin)`: (size,) float64 weights along one axis of a window.
    `centre_only`: the window gives only its centre ``stride``-wide crop, and the lattice starts
    at ``-margin`` so that the crops tile the scene; otherwise the whole window counts, and the
    lattice reaches past the scene's edges so that every pixel is covered by as many windows as
    an interior one (and so gets the same total weight)."""

    weights: Callable[[int, int, int], np.ndarray]
    centre_only: bool


def hann(size: int, stride: int, margin: int) -> np.ndarray:
    """Hann weights, floored at `WEIGHT_FLOOR` (no pixel is left without weight)."""
    return np.maximum(np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2, WEIGHT_FLOOR)


def centre_crop(size: int, stride: int, margin: int) -> np.ndarray:
    """1 on the window's centre ``stride`` pixels, 0 on its `margin` and beyond."""
    weights = np.zeros(size, dtype=np.float64)
    weights[margin:margin + stride] = 1.0
    return weights


BLEND_WINDOWS = {
    "hann": BlendWindow(hann, centre_only=False),
    "none": BlendWindow(centre_crop, centre_only=True),
}
BLENDS = BLEND_WINDOWS.keys()  # (a live view: a window added to the registry is a choice)
