"""The Pix2Pix objective with nodata: adversarial loss + lambda * L1, invalid pixels left out.

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


def masked_l1(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| over valid pixels and all bands; ``valid`` is bool (N, 1, H, W)."""
    weight = valid.to(pred.dtype)
    total = ((pred - target).abs() * weight).sum()
    count = weight.sum() * pred.shape[1]
    return total / count.clamp_min(1.0)


def patch_weights(valid: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Valid fraction of the pixels under each PatchGAN logit of a ``size`` map, (N, 1, h, w)."""
    return F.adaptive_avg_pool2d(valid.float(), size)


def real_with_fake_fill(target: torch.Tensor, fake: torch.Tensor,
                        valid: torch.Tensor) -> torch.Tensor:
    """The target with its invalid pixels replaced by the (detached) generator output."""
    return torch.where(valid, target, fake.detach())


class GANLoss(nn.Module):
    """Adversarial loss on raw PatchGAN logits: ``vanilla`` (BCE with logits) or ``lsgan`` (MSE),
    optionally weighted per logit (e.g. by ``patch_weights``)."""

    def __init__(self, mode: str = "vanilla") -> None:
        super().__init__()
        if mode not in ("vanilla", "lsgan"):
            raise ValueError(f"unknown gan mode {mode!r}; use vanilla or lsgan")
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
                       fake: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Half the sum of D's losses on the real pair and the (detached) fake pair."""
    real_pair = torch.cat([source, real_with_fake_fill(target, fake, valid)], 1)
    fake_pair = torch.cat([source, fake.detach()], 1)
    logits_real = disc(real_pair)
    logits_fake = disc(fake_pair)
    weights = patch_weights(valid, tuple(logits_real.shape[-2:]))
    return 0.5 * (gan(logits_real, True, weights) + gan(logits_fake, False, weights))


def generator_losses(gan: GANLoss, disc: nn.Module, source: torch.Tensor, target: torch.Tensor,
                     fake: torch.Tensor, valid: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(adversarial, L1) terms of the generator's loss; the caller combines them with lambda."""
    logits = disc(torch.cat([source, fake], 1))
    weights = patch_weights(valid, tuple(logits.shape[-2:]))
    return gan(logits, True, weights), masked_l1(fake.float(), target.float(), valid)
