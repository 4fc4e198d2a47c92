"""The Pix2Pix objective with nodata: adversarial loss + lambda * L1, invalid pixels left out.

The pixel term and what the discriminator sees depend on the target (`Regression`, the paper's:
L1 (or the squared error, ``--pixel-loss mse``) on the tanh output, D judges the output itself;
`Categorical`, for class maps: cross-entropy on the class scores, D judges the class
probabilities against the one-hot truth).

Invalid (nodata) pixels carry no answer, so:
- the L1 term averages over valid pixels only;
- the discriminator's "real" pair shows the generator's own (detached) output wherever the target
  is invalid, so real and fake pairs are identical there and D learns nothing from those pixels;
- each PatchGAN logit is weighted by the valid fraction of the pixels under its patch, so
  patches made mostly of nodata count little in either player's loss.
The discriminator's loss is halved, as in the paper (Isola et al. 2017, section 3.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from geopix2pix.errors import ModelError


def _masked_mean(error: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of a per-pixel ``error`` (N, C, H, W) over valid pixels and all bands; ``valid`` is
    bool (N, 1, H, W)."""
    weight = valid.to(error.dtype)
    count = weight.sum() * error.shape[1]
    return (error * weight).sum() / count.clamp_min(1.0)


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over valid pixels and all bands."""
    return _masked_mean((pred - target).abs(), valid)


def masked_mse(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean (pred - target)^2 over valid pixels and all bands."""
    return _masked_mean((pred - target).square(), valid)


PIXEL_LOSSES = {"l1": masked_l1, "mse": masked_mse}  # --pixel-loss -> the loss


def patch_weights(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Valid fraction of the pixels under each PatchGAN logit of a ``size`` map, (N, 1, h, w)."""
    return F.adaptive_avg_pool2d(valid.float(), size)


def real_with_fake_fill(target: torch.Tensor, fake: torch.Tensor,
                        valid: torch.Tensor) -> torch.Tensor:
    """The target with its invalid pixels replaced by the (detached) generator output."""
    return torch.where(valid, target, fake.detach())


def masked_cross_entropy(logits: torch.Tensor, classes: torch.Tensor, valid: torch.Tensor,
                         class_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy over valid pixels; ``logits`` (N, K, H, W), ``classes`` the class
    index of each pixel (N, 1, H, W, any dtype), ``valid`` bool (N, 1, H, W). With
    ``class_weights`` (K,), each pixel counts its class's weight (the weighted mean, as
    torch's ``cross_entropy(weight=...)`` takes it)."""
    index = classes[:, 0].long().clamp(0, logits.shape[1] - 1)
    loss = F.cross_entropy(logits.float(), index, reduction="none")
    weight = valid[:, 0].to(loss.dtype)
    if class_weights is not None:
        weight = weight * class_weights.to(loss.device, loss.dtype)[index]
    return (loss * weight).sum() / weight.sum().clamp_min(1e-12)  # 0 without a valid pixel


class Regression:
    """The paper's objective: L1 (or ``loss="mse"``, the squared error) between the tanh output
    and the scaled target; D judges the output as it is."""

    def __init__(self, loss: str = "l1") -> None:
        if loss not in PIXEL_LOSSES:
            raise ModelError(f"unknown pixel loss {loss!r}; use {' or '.join(PIXEL_LOSSES)}")
        self.loss = loss
        self.loss_name = f"loss_g_{loss}"  # the pixel term's metrics.csv column
        self.label = loss.upper()

    def pixel_loss(self, fake: torch.Tensor, target: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
        return PIXEL_LOSSES[self.loss](fake.float(), target.float(), valid)

    def shown(self, fake: torch.Tensor) -> torch.Tensor:
        """What D sees of the generator's output."""
        return fake

    def truth(self, target: torch.Tensor) -> torch.Tensor:
        """What D sees of the target, as it sees the output."""
        return target


class Categorical:
    """A class map: cross-entropy between the class scores and each pixel's class index; D
    judges the softmax probabilities, and the truth as one-hot probabilities."""

    loss_name = "loss_g_ce"
    label = "CE"

    def __init__(self, classes: int, weights: torch.Tensor | None = None) -> None:
        self.classes = classes
        self.weights = weights  # (K,) per class, or None: every pixel alike

    def pixel_loss(self, fake: torch.Tensor, target: torch.Tensor,
                   valid: torch.Tensor) -> torch.Tensor:
        return masked_cross_entropy(fake, target, valid, self.weights)

    def shown(self, fake: torch.Tensor) -> torch.Tensor:
        return torch.softmax(fake.float(), 1).to(fake.dtype)

    def truth(self, target: torch.Tensor) -> torch.Tensor:
        index = target[:, 0].long().clamp(0, self.classes - 1)
        return F.one_hot(index, self.classes).permute(0, 3, 1, 2).to(target.dtype)


Objective = Regression | Categorical


class GANLoss(nn.Module):
    """Adversarial loss on raw PatchGAN logits: ``vanilla`` (BCE with logits) or ``lsgan`` (MSE),
    optionally weighted per logit (e.g. by ``patch_weights``)."""

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan"):
            raise ModelError(f"unknown gan mode {mode!r}; use vanilla or lsgan")
        self.mode = mode

    def forward(self, logits: torch.Tensor, real: bool,
                weights: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float()
        label = torch.full_like(logits, 1.0 if real else 0.0)
        if self.mode == "vanilla":
            loss = F.binary_cross_entropy_with_logits(logits, label, reduction="none")
        else:
            loss = F.mse_loss(logits, label, reduction="none")
        if weights is None:
            return loss.mean()
        weights = weights.to(loss.dtype).expand_as(loss)
        return (loss * weights).sum() / weights.sum().clamp_min(1e-6)


def discriminator_loss(gan: GANLoss, disc: nn.Module, source: torch.Tensor, target: torch.Tensor,
                       fake: torch.Tensor, valid: torch.Tensor,
                       objective: Objective | None = None) -> torch.Tensor:
    """Half the sum of D's losses on the real pair and the (detached) fake pair."""
    objective = objective or Regression()
    shown = objective.shown(fake.detach())
    real_pair = torch.cat([source, real_with_fake_fill(objective.truth(target), shown, valid)], 1)
    fake_pair = torch.cat([source, shown], 1)
    logits_real = disc(real_pair)
    logits_fake = disc(fake_pair)
    weights = patch_weights(valid, tuple(logits_real.shape[-2:]))
    return 0.5 * (gan(logits_real, True, weights) + gan(logits_fake, False, weights))


def generator_losses(gan: GANLoss, disc: nn.Module, source: torch.Tensor, target: torch.Tensor,
                     fake: torch.Tensor, valid: torch.Tensor, objective: Objective | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, pixel) terms of the generator's loss (the pixel term L1, or cross-entropy
    for a categorical `objective`); the caller combines them with lambda."""
    objective = objective or Regression()
    logits = disc(torch.cat([source, objective.shown(fake)], 1))
    weights = patch_weights(valid, tuple(logits.shape[-2:]))
    return gan(logits, True, weights), objective.pixel_loss(fake, target, valid)
