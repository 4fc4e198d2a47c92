"""One Pix2Pix optimisation step: update D on real and fake pairs, then G, as in the paper.

Losses are returned as detached device tensors so the loop only synchronises with the GPU when it
displays or logs them. Under DDP, ``generator`` and ``discriminator`` are the DDP wrappers (their
gradients are averaged over the ranks in ``backward``) and ``adversary`` is D's plain module: in
G's step D only judges, gets no gradients, and so must not go through DDP, whose reducer would
wait for D gradients that never come.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .device import DeviceSetup
from .losses import GANLoss, Objective, Regression, discriminator_loss, generator_losses


@dataclass
class StepLosses:
    """Detached losses of one step: G's adversarial and pixel terms (L1, or cross-entropy for a
    class map), and D's (halved) loss."""

    g_gan: torch.Tensor
    g_pixel: torch.Tensor
    d: torch.Tensor


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for param in module.parameters():
        param.requires_grad_(flag)


class Pix2PixStep:
    """Holds the networks, optimizers and grad scaler; ``__call__`` trains on one batch."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module,
                 opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 setup: DeviceSetup, gan_mode: str, lambda_l1: float,
                 adversary: nn.Module | None = None, objective: Objective | None = None) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.adversary = discriminator if adversary is None else adversary
        self.opt_g = opt_g
        self.opt_d = opt_d
        self.setup = setup
        self.gan = GANLoss(gan_mode)
        self.lambda_l1 = lambda_l1
        self.objective = objective or Regression()
        self.scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.use_grad_scaler)

    def __call__(self, source: torch.Tensor, target: torch.Tensor,
                 valid: torch.Tensor, adversarial: bool = True) -> StepLosses:
        """One step; with ``adversarial`` False (``--gan-warmup``) G learns from its pixel loss
        alone and D is neither trained nor run: both GAN losses are reported as 0."""
        setup = self.setup
        with setup.autocast():
            fake = self.generator(source)
        if not adversarial:
            return self._pixel_step(source, target, fake, valid)
        loss_d = self._discriminator_step(source, target, fake, valid)
        set_requires_grad(self.discriminator, False)
        self.opt_g.zero_grad(set_to_none=True)
        with setup.autocast():
            g_gan, g_pixel = generator_losses(self.gan, self.adversary, source, target, fake,
                                              valid, self.objective)
            loss_g = g_gan + self.lambda_l1 * g_pixel
        self.scaler.scale(loss_g).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        return StepLosses(g_gan.detach(), g_pixel.detach(), loss_d.detach())

    def _discriminator_step(self, source, target, fake, valid) -> torch.Tensor:
        disc = self.discriminator
        set_requires_grad(disc, True)
        self.opt_d.zero_grad(set_to_none=True)
        with self.setup.autocast():
            loss_d = discriminator_loss(self.gan, disc, source, target, fake, valid,
                                        self.objective)
        self.scaler.scale(loss_d).backward()
        self.scaler.step(self.opt_d)
        return loss_d

    def _pixel_step(self, source, target, fake, valid) -> StepLosses:
        self.opt_g.zero_grad(set_to_none=True)
        with self.setup.autocast():
            g_pixel = self.objective.pixel_loss(fake, target, valid)
        self.scaler.scale(self.lambda_l1 * g_pixel).backward()
        self.scaler.step(self.opt_g)
        self.scaler.update()
        zero = torch.zeros((), device=g_pixel.device)
        return StepLosses(zero, g_pixel.detach(), zero)
