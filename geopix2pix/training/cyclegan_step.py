"""One CycleGAN optimisation step: update both generators, then both discriminators.

The order and the terms are those of the reference's ``CycleGANModel.optimize_parameters``
(junyanz/pytorch-CycleGAN-and-pix2pix): generate B from A and back, A from B and back (and the
identity images when the domains share their bands); one step of both generators on the sum of
their losses with the discriminators frozen; then one step of both discriminators, each shown a
real image and one from its history pool, both under the nodata holes of both (a generated
image carries its input's holes: `cyclegan_losses.shared_holes`). The losses and their nodata
masking are in `cyclegan_losses`. As `step.Pix2PixStep`: forward passes under the device's
autocast, one GradScaler (active with fp16 only), losses returned as detached device tensors,
and, under DDP, ``adversary_a``/``adversary_b`` the discriminators' plain modules, which judge
in the generators' step without going through DDP (they get no gradients there).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
from torch import nn

from geopix2pix.settings.families import BETA1, BETA2, FAMILY_DEFAULTS

from .cyclegan_losses import (
    GAN_MODE,
    CycleWeights,
    adversarial_loss,
    discriminator_loss,
    identity_applies,
    l1_terms,
    masked,
    shared_holes,
)
from .device import DeviceSetup
from .image_pool import ImagePool
from .losses import GANLoss
from .step import set_requires_grad

LR, BETAS = FAMILY_DEFAULTS["cyclegan"]["lr"], (BETA1, BETA2)  # the reference's Adam


@dataclass
class CycleLosses:
    """Detached losses of one step. ``G_A``/``G_B``: the generators' LSGAN terms (G_A: A -> B,
    judged by D_A). ``cycle_A``/``cycle_B``: the masked L1 of G_B(G_A(a)) to a and G_A(G_B(b))
    to b; ``idt_A``/``idt_B``: of G_A(b) to b and G_B(a) to a (0 without identity). These L1
    terms are unweighted (on the [-1, 1] scale; the generators' loss weighs them with the
    lambdas). ``D_A``/``D_B``: the discriminators' halved losses."""

    G_A: torch.Tensor  # the reference's names
    G_B: torch.Tensor
    cycle_A: torch.Tensor
    cycle_B: torch.Tensor
    idt_A: torch.Tensor
    idt_B: torch.Tensor
    D_A: torch.Tensor
    D_B: torch.Tensor


@dataclass
class _Images:
    """What one step generates (generated images masked with their input's validity)."""

    fake_b: torch.Tensor
    rec_a: torch.Tensor
    fake_a: torch.Tensor
    rec_b: torch.Tensor
    idt_a: torch.Tensor | None
    idt_b: torch.Tensor | None


def cyclegan_optimizers(g_a: nn.Module, g_b: nn.Module, d_a: nn.Module, d_b: nn.Module,
                        lr: float = LR, betas: tuple[float, float] = BETAS
                        ) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """The reference's optimizers: one Adam over both generators, one over both
    discriminators."""
    opt_g = torch.optim.Adam(itertools.chain(g_a.parameters(), g_b.parameters()), lr=lr,
                             betas=betas)
    opt_d = torch.optim.Adam(itertools.chain(d_a.parameters(), d_b.parameters()), lr=lr,
                             betas=betas)
    return opt_g, opt_d


class CycleGANStep:
    """Holds both generators and discriminators, their optimizers (`cyclegan_optimizers`), the
    two history pools and the grad scaler; ``__call__`` trains on one batch of each domain."""

    def __init__(self, g_a: nn.Module, g_b: nn.Module, d_a: nn.Module, d_b: nn.Module,
                 opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
                 setup: DeviceSetup, fake_b_pool: ImagePool, fake_a_pool: ImagePool,
                 weights: CycleWeights | None = None, gan_mode: str = GAN_MODE,
                 adversary_a: nn.Module | None = None,
                 adversary_b: nn.Module | None = None) -> None:
        self.g_a, self.g_b, self.d_a, self.d_b = g_a, g_b, d_a, d_b
        self.adversary_a = d_a if adversary_a is None else adversary_a
        self.adversary_b = d_b if adversary_b is None else adversary_b
        self.opt_g, self.opt_d = opt_g, opt_d
        self.setup = setup
        self.fake_b_pool, self.fake_a_pool = fake_b_pool, fake_a_pool  # D_A's and D_B's
        self.weights = weights or CycleWeights()
        self.gan = GANLoss(gan_mode)
        self.scaler = torch.amp.GradScaler(setup.device.type, enabled=setup.use_grad_scaler)

    def __call__(self, real_a: torch.Tensor, valid_a: torch.Tensor, real_b: torch.Tensor,
                 valid_b: torch.Tensor) -> CycleLosses:
        """One step on a batch of A (N, bands A, H, W) and one of B, with their validity
        masks (N, 1, H, W) bool; the batches may differ in size. Identity images are made only
        when the domains have the same bands and ``lambda_identity`` > 0."""
        real_a, real_b = masked(real_a, valid_a), masked(real_b, valid_b)
        identity = identity_applies(self.weights.lambda_identity, real_a.shape[1],
                                    real_b.shape[1])
        with self.setup.autocast():
            images = self._generate(real_a, valid_a, real_b, valid_b, identity)
        g_a, g_b, cycle_a, cycle_b, idt_a, idt_b = self._generator_step(
            images, real_a, valid_a, real_b, valid_b)
        d_a, d_b = self._discriminator_step(images, real_a, valid_a, real_b, valid_b)
        return CycleLosses(*(t.detach() for t in (g_a, g_b, cycle_a, cycle_b, idt_a, idt_b,
                                                  d_a, d_b)))

    def _generate(self, real_a, valid_a, real_b, valid_b, identity: bool) -> _Images:
        fake_b = masked(self.g_a(real_a), valid_a)
        fake_a = masked(self.g_b(real_b), valid_b)
        return _Images(fake_b, self.g_b(fake_b), fake_a, self.g_a(fake_a),
                       self.g_a(real_b) if identity else None,
                       self.g_b(real_a) if identity else None)

    def _generator_step(self, images: _Images, real_a, valid_a, real_b, valid_b
                        ) -> tuple[torch.Tensor, ...]:
        """Both generators' step, the discriminators frozen; their six terms."""
        weights = self.weights
        set_requires_grad(self.d_a, False)
        set_requires_grad(self.d_b, False)
        self.opt_g.zero_grad(set_to_none=True)
        with self.setup.autocast():  # (judged under the holes D learns with: `shared_holes`)
            shown_b, shown_a = shared_holes(valid_a, valid_b), shared_holes(valid_b, valid_a)
            g_a = adversarial_loss(self.gan, self.adversary_a, masked(images.fake_b, shown_b),
                                   shown_b, True)
            g_b = adversarial_loss(self.gan, self.adversary_b, masked(images.fake_a, shown_a),
                                   shown_a, True)
        cycle_a, cycle_b = l1_terms(images.rec_a, real_a, valid_a, images.rec_b, real_b, valid_b)
        loss = g_a + g_b + weights.lambda_a * cycle_a + weights.lambda_b * cycle_b
        if images.idt_a is not None and images.idt_b is not None:
            idt_a, idt_b = l1_terms(images.idt_a, real_b, valid_b, images.idt_b, real_a, valid_a)
            loss = loss + weights.lambda_identity * (weights.lambda_b * idt_a
                                                     + weights.lambda_a * idt_b)
        else:
            idt_a = idt_b = torch.zeros((), device=cycle_a.device)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt_g)
        return g_a, g_b, cycle_a, cycle_b, idt_a, idt_b

    def _discriminator_step(self, images: _Images, real_a, valid_a, real_b, valid_b
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both discriminators' step on real images and generated ones from their pools."""
        set_requires_grad(self.d_a, True)
        set_requires_grad(self.d_b, True)
        self.opt_d.zero_grad(set_to_none=True)
        fake_b, fake_b_valid = self.fake_b_pool.query(images.fake_b, valid_a)
        fake_a, fake_a_valid = self.fake_a_pool.query(images.fake_a, valid_b)
        with self.setup.autocast():
            d_a = self._judge(self.d_a, real_b, valid_b, fake_b, fake_b_valid)
            d_b = self._judge(self.d_b, real_a, valid_a, fake_a, fake_a_valid)
        self.scaler.scale(d_a + d_b).backward()
        self.scaler.step(self.opt_d)
        self.scaler.update()
        return d_a, d_b

    def _judge(self, disc: nn.Module, real: torch.Tensor, real_valid: torch.Tensor,
               fake: torch.Tensor, fake_valid: torch.Tensor) -> torch.Tensor:
        """A discriminator's loss on real and generated images, each shown under the holes of
        both (`shared_holes`)."""
        real_shown, fake_shown = shared_holes(real_valid, fake_valid), \
            shared_holes(fake_valid, real_valid)
        return discriminator_loss(self.gan, disc, masked(real, real_shown), real_shown,
                                  masked(fake, fake_shown), fake_shown)
