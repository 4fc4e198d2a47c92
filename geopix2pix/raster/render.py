"""Rendering raster arrays as RGB images to look at: chips, predictions and class maps.

Each panel is rendered to RGB from its first three bands (or one band as grey) with a 2-98
percentile stretch; a prediction and its target share the target's stretch so they compare
directly. A class map is drawn in its classes' colours: the target's colour table where it has
one, else a fixed qualitative palette. Each panel is black where its own raster is invalid.
Numpy only: used by the training samples, the plotting helpers and the demo's quicklook.
"""

from __future__ import annotations

import numpy as np

GAP = 4  # pixels of white between panels and rows
# a qualitative palette (Tableau 10) for classes without a colour table
PALETTE = np.array([(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
                    (148, 103, 189), (140, 86, 75), (227, 119, 194), (127, 127, 127),
                    (188, 189, 34), (23, 190, 207)], np.uint8)


def class_colours(codes: list[int], colormap=None) -> np.ndarray:
    """(K, 3) uint8 RGB of each class: its entry in the target's colour table (indexed by code)
    where there is one, else the palette's colour of its index."""
    colours = PALETTE[np.arange(len(codes)) % len(PALETTE)].copy()
    for index, code in enumerate(codes):
        if colormap is not None and 0 <= code < len(colormap):
            colours[index] = colormap[code][:3]
    return colours


def render_classes(index: np.ndarray, valid: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 image in the classes' colours."""
    image = colours[np.clip(index.astype(np.int64), 0, len(colours) - 1)]
    image[~valid] = 0
    return image


def _rgb_bands(chip: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (3, H, W): the first three bands, or the first band repeated."""
    return chip[:3] if chip.shape[0] >= 3 else np.repeat(chip[:1], 3, axis=0)


def stretch_limits(chip: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-band 2nd and 98th percentiles of the valid (and finite) pixels of an RGB (3, H, W)
    chip."""
    valid = valid & np.isfinite(chip).all(axis=0)
    values = chip[:, valid] if valid.any() else np.zeros((3, 1))
    low, high = np.percentile(values, [2, 98], axis=1)
    return low[:, None, None], np.maximum(high, low + 1e-6)[:, None, None]


def render(chip: np.ndarray, valid: np.ndarray, limits=None) -> np.ndarray:
    """(C, H, W) float chip -> (H, W, 3) uint8 image with a percentile stretch; NaN or infinite
    values drawn as invalid (a float raster without a nodata tag)."""
    rgb = _rgb_bands(chip.astype(np.float64))
    valid = valid & np.isfinite(rgb).all(axis=0)
    low, high = limits if limits is not None else stretch_limits(rgb, valid)
    image = np.clip((rgb - low) / (high - low), 0, 1)
    image[:, ~valid] = 0
    return (image.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def sample_row(source: np.ndarray, pred: np.ndarray, target: np.ndarray,
               source_valid: np.ndarray, target_valid: np.ndarray,
               pred_valid: np.ndarray | None = None) -> np.ndarray:
    """input | prediction | target side by side, (H, 3W + 2 GAP, 3) uint8; each panel is black
    where its own raster is invalid: the prediction where the input is (a model predicts every
    valid input pixel), unless ``pred_valid`` says otherwise."""
    limits = stretch_limits(_rgb_bands(target.astype(np.float64)), target_valid)
    panels = [render(source, source_valid),
              render(pred, source_valid if pred_valid is None else pred_valid, limits),
              render(target, target_valid, limits)]
    return side_by_side(panels)


def class_row(source: np.ndarray, scores: np.ndarray, target: np.ndarray,
              source_valid: np.ndarray, target_valid: np.ndarray,
              colours: np.ndarray) -> np.ndarray:
    """input | predicted classes | target classes for a class map: ``scores`` (K, H, W), the
    ``target``'s first band the class indices."""
    return class_index_row(source, scores.argmax(0), target[0], source_valid, target_valid,
                           colours)


def class_index_row(source: np.ndarray, predicted: np.ndarray, target: np.ndarray,
                    source_valid: np.ndarray, target_valid: np.ndarray,
                    colours: np.ndarray) -> np.ndarray:
    """input | predicted classes | target classes, both (H, W) class indices; black where each
    panel's own raster is invalid (the prediction where the input is)."""
    panels = [render(source, source_valid), render_classes(predicted, source_valid, colours),
              render_classes(target, target_valid, colours)]
    return side_by_side(panels)


def cycle_row(real: np.ndarray, fake: np.ndarray, back: np.ndarray, valid: np.ndarray
              ) -> np.ndarray:
    """input | translated | translated back (an unpaired model's cycle), (H, 3W + 2 GAP, 3)
    uint8: the translation in its own stretch, the way back in the input's."""
    limits = stretch_limits(_rgb_bands(real.astype(np.float64)), valid)
    panels = [render(real, valid, limits), render(fake, valid), render(back, valid, limits)]
    return side_by_side(panels)


def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """(H, W, 3) panels in a row, GAP white pixels apart."""
    gap = np.full((panels[0].shape[0], GAP, 3), 255, np.uint8)
    return np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1)
