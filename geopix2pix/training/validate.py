"""Validation of the generator (in eval mode) on the val split.

Scores, over the valid pixels of all val chips, averaged over bands:
- ``val_l1``: mean |error| on the [-1, 1] training scale (what picks the best model);
- ``val_mae`` / ``val_rmse``: in the target's units (the scaling inverted);
- ``val_psnr``: from the MSE with the target scaled to [0, 1] (its scaling range), i.e.
  10*log10(1 / MSE), not from the MAE;
- ``val_ssim``: SSIM on the same [0, 1] scale, over valid pixels only.

For a class map (``--categorical``, `evaluate_classes`): ``val_ce`` (mean cross-entropy, not
weighted), ``val_accuracy`` (pixel accuracy) and ``val_miou`` (mean IoU over the classes present
in the truth or the prediction, what picks the best model), from a confusion matrix of the valid
pixels.

A generator whose output is NaN or infinite at a valid pixel (training diverged) scores NaN (SSIM
aside), which is never better than any score: model-best keeps the last finite one.

Every score is a sum over valid pixels divided by their count, so under DDP each rank validates
its shard of the val chips and the sums and counts are added across ranks (``reduce``) before
dividing: the result is the one-process result, up to float rounding.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch import nn

from geopix2pix.chips.scaling import Scaling
from geopix2pix.metrics import (
    confusion_matrix,
    masked_mae,
    masked_mse,
    masked_ssim,
    per_class_iou,
    pixel_accuracy,
    psnr,
)

from .device import DeviceSetup
from .losses import masked_cross_entropy


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """The modules in eval mode for the block, each back in its own mode after it (also when
    it fails)."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


SUMS = ("l1", "mae", "mse", "mse01", "ssim")


def to_units(scaled: torch.Tensor, scaling: Scaling) -> torch.Tensor:
    """(N, C, H, W) values on the [-1, 1] scale -> float64 values in data units."""
    n, c, h, w = scaled.shape
    flat = scaled.detach().double().cpu().numpy().transpose(1, 0, 2, 3).reshape(c, n * h, w)
    units = scaling.inverse(flat).reshape(c, n, h, w).transpose(1, 0, 2, 3)
    return torch.from_numpy(np.ascontiguousarray(units))


class _Totals:
    """Valid-pixel-weighted sums of per-band scores across batches."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0.0

    def add(self, scores: dict[str, torch.Tensor], count: float) -> None:
        for key, value in scores.items():
            value = value.double().cpu() * count  # NaN stays NaN: a diverged generator
            self.sums[key] = self.sums.get(key, 0) + value
        self.count += count

    def mean(self, key: str) -> torch.Tensor:
        return self.sums[key] / max(self.count, 1.0)

    def reduce(self, reduce: Callable[[torch.Tensor], torch.Tensor], channels: int) -> None:
        """Replace the sums and count by ``reduce`` of them (e.g. summed over the ranks); a rank
        without chips contributes zeros."""
        zeros = torch.zeros(channels, dtype=torch.float64)
        packed = torch.cat([torch.as_tensor(self.sums.get(k, zeros), dtype=torch.float64)
                            .reshape(channels) for k in SUMS]
                           + [torch.tensor([self.count], dtype=torch.float64)])
        packed = reduce(packed)
        self.sums = {k: packed[i * channels:(i + 1) * channels] for i, k in enumerate(SUMS)}
        self.count = float(packed[-1])


@torch.no_grad()
def evaluate(generator: nn.Module, loader, setup: DeviceSetup, target_scaling: Scaling,
             reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
             channels: int = 1) -> dict[str, float]:
    """Scores of ``generator`` on every chip of ``loader``; empty dict when it has no chips.

    ``reduce`` (with the number of target ``channels``) combines the per-band sums and the
    valid-pixel count of all ranks, each of which evaluated its own shard of the chips.
    ``generator`` must be the plain module, not its DDP wrapper (ranks may have different
    numbers of batches).
    """
    totals = _Totals()
    with evaluating(generator):
        for batch in loader:
            source = setup.to_device(batch["source"])
            with setup.autocast():
                pred = generator(source)
            pred = pred.float().cpu()
            target, valid = batch["target"].float(), batch["valid"]
            count = float(valid.sum())
            if count == 0:
                continue
            pred01, target01 = (pred + 1) / 2, (target + 1) / 2
            totals.add({
                "l1": masked_mae(pred, target, valid),
                "mae": masked_mae(to_units(pred, target_scaling),
                                  to_units(target, target_scaling), valid),
                "mse": masked_mse(to_units(pred, target_scaling),
                                  to_units(target, target_scaling), valid),
                "mse01": masked_mse(pred01, target01, valid),
                "ssim": masked_ssim(pred01, target01, valid, 1.0),
            }, count)
    if reduce is not None:
        totals.reduce(reduce, channels)
    if totals.count == 0:
        return {}
    mse01 = float(totals.mean("mse01").mean())
    return {
        "val_l1": float(totals.mean("l1").mean()),
        "val_mae": float(totals.mean("mae").mean()),
        "val_rmse": math.sqrt(float(totals.mean("mse").mean())),
        "val_psnr": float(psnr(mse01, 1.0)),
        "val_ssim": float(totals.mean("ssim").mean()),
    }


@torch.no_grad()
def evaluate_classes(generator: nn.Module, loader, setup: DeviceSetup, classes: int,
                     reduce: Callable[[torch.Tensor], torch.Tensor] | None = None
                     ) -> dict[str, float]:
    """Scores of a class-map generator (``classes`` scores per pixel) on every chip of
    ``loader``, whose targets hold class indices; empty dict when it has no valid pixel.
    ``reduce`` adds the ranks' sums as for `evaluate`."""
    totals = torch.zeros(2 + classes * classes, dtype=torch.float64)  # CE sum, count, confusion
    with evaluating(generator):
        for batch in loader:
            with setup.autocast():
                scores = generator(setup.to_device(batch["source"]))
            scores, target, valid = scores.float().cpu(), batch["target"], batch["valid"]
            count = float(valid.sum())
            if count == 0:
                continue
            truth = target[:, 0].long().clamp(0, classes - 1)[valid[:, 0]]
            guess = scores.argmax(1)[valid[:, 0]]
            totals[0] += float(masked_cross_entropy(scores, target, valid)) * count
            totals[1] += count
            totals[2:] += confusion_matrix(guess, truth, None, range(classes)).flatten()
    if reduce is not None:
        totals = reduce(totals)
    if totals[1] == 0:
        return {}
    if totals[0].isnan():  # NaN class scores (training diverged): no argmax means anything
        return dict.fromkeys(("val_ce", "val_accuracy", "val_miou"), math.nan)
    confusion = totals[2:].view(classes, classes)
    iou = per_class_iou(confusion)
    return {"val_ce": float(totals[0] / totals[1]), "val_accuracy": pixel_accuracy(confusion),
            "val_miou": float(iou[~iou.isnan()].mean())}
