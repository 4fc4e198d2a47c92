"""The CycleGAN objective with nodata (Zhu et al. 2017): LSGAN, cycle consistency and identity.

As the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix, cycle_gan_model.py), with
G_A: A -> B judged by D_A (real B against generated B) and G_B: B -> A judged by D_B:
- adversarial: LSGAN (MSE on raw PatchGAN logits); each D's loss is halved;
- cycle: ``lambda_a * |G_B(G_A(a)) - a|`` + ``lambda_b * |G_A(G_B(b)) - b|`` (L1);
- identity: ``lambda_identity * lambda_b * |G_A(b) - b|`` + ``lambda_identity * lambda_a *
  |G_B(a) - a|``, only when both domains have the same bands (G_A cannot take B otherwise).

Invalid (nodata) pixels never teach: every image a network sees holds 0 (the chips' fill) at its
invalid pixels, whatever the tensor held there (`masked`); the L1 terms average over valid pixels
only (training/losses.py `masked_l1`); each PatchGAN logit is weighted by the valid share of the
pixels under its patch (`patch_weights`), and a generated image carries the mask of the image it
was generated from (A's mask for G_A(a), and so on).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from geopix2pix.settings.families import CYCLEGAN_DEFAULTS

from .losses import GANLoss, masked_l1, patch_weights

LAMBDA_A = CYCLEGAN_DEFAULTS["lambda_a"]  # the reference's --lambda_A
LAMBDA_B = CYCLEGAN_DEFAULTS["lambda_b"]
LAMBDA_IDENTITY = CYCLEGAN_DEFAULTS["lambda_identity"]
GAN_MODE = CYCLEGAN_DEFAULTS["gan_mode"]


@dataclass(frozen=True)
class CycleWeights:
    """The weights of the cycle and identity terms (the reference's defaults)."""

    lambda_a: float = LAMBDA_A
    lambda_b: float = LAMBDA_B
    lambda_identity: float = LAMBDA_IDENTITY


def identity_applies(lambda_identity: float, bands_a: int, bands_b: int) -> bool:
    """Whether the identity term is used: asked for (> 0) and the domains' band counts equal."""
    return lambda_identity > 0 and bands_a == bands_b


def masked(image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``image`` with 0 (the chips' fill of an invalid pixel) wherever ``valid`` is False."""
    return torch.where(valid, image, torch.zeros((), dtype=image.dtype, device=image.device))


def shared_holes(valid: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """``valid`` with the holes of ``other`` (the other batch's masks, paired by index, in turn
    where the batches differ in size) added. A discriminator judges real and generated images
    under such shared holes, so their shapes cannot tell which is which: a generated B carries
    A's holes (SAR's swath edge, a DEM's voids), a real B its own, and a patch discriminator
    would learn that one and teach the generator nothing."""
    paired = other[torch.arange(valid.shape[0], device=other.device) % other.shape[0]]
    return valid & paired


def adversarial_loss(gan: GANLoss, disc: nn.Module, image: torch.Tensor, valid: torch.Tensor,
                     real: bool) -> torch.Tensor:
    """``gan`` of D's logits on ``image`` against the label ``real``, each logit weighted by the
    valid share under its patch."""
    logits = disc(image)
    return gan(logits, real, patch_weights(valid, tuple(logits.shape[-2:])))


def discriminator_loss(gan: GANLoss, disc: nn.Module, real: torch.Tensor, real_valid: torch.Tensor,
                       fake: torch.Tensor, fake_valid: torch.Tensor) -> torch.Tensor:
    """Half the sum of D's losses on a real image and a (detached, pooled) generated one."""
    return 0.5 * (adversarial_loss(gan, disc, real, real_valid, True)
                  + adversarial_loss(gan, disc, fake.detach(), fake_valid, False))


def l1_terms(rec_a: torch.Tensor, real_a: torch.Tensor, valid_a: torch.Tensor,
             rec_b: torch.Tensor, real_b: torch.Tensor, valid_b: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked L1 of both directions (cycle or identity), unweighted, in fp32."""
    return (masked_l1(rec_a.float(), real_a.float(), valid_a),
            masked_l1(rec_b.float(), real_b.float(), valid_b))
