"""The run's learning-rate schedule, for every family (as in the Pix2Pix and CycleGAN papers):
constant, then linear decay to zero.

The schedule is a pure function of the step, so a resumed run follows it exactly: with
``--epochs E --decay-epochs D`` the rate is constant for E epochs and falls linearly to zero over
the next D; with ``--max-steps N`` the run is N steps long and keeps the same proportions (the
first E / (E + D) of the steps constant, the rest decaying); with ``--min-steps N`` where E + D
epochs make fewer steps, as with ``--max-steps N``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LinearDecaySchedule:
    """lr(step) = base_lr until ``constant_steps``, then linear to 0 at ``total_steps``."""

    base_lr: float
    total_steps: int
    constant_steps: int

    @classmethod
    def build(cls, base_lr: float, steps_per_epoch: int, epochs: int, decay_epochs: int,
              max_steps: int | None = None, min_steps: int = 0) -> LinearDecaySchedule:
        """``max_steps`` given: that many steps; else the epochs' steps, stretched to
        ``min_steps`` where they are fewer (the same proportions)."""
        if max_steps is None and steps_per_epoch * (epochs + decay_epochs) < min_steps:
            max_steps = min_steps
        if max_steps is not None:
            constant = math.ceil(max_steps * epochs / (epochs + decay_epochs))
            return cls(base_lr, max_steps, constant)
        return cls(base_lr, steps_per_epoch * (epochs + decay_epochs), steps_per_epoch * epochs)

    def lr_at(self, step: int) -> float:
        """The learning rate of the update number ``step`` (0-based)."""
        if step < self.constant_steps:
            return self.base_lr
        decay = self.total_steps - self.constant_steps
        remaining = self.total_steps - step
        return self.base_lr * max(0.0, remaining / (decay + 1))

    def apply(self, optimizers: list[torch.optim.Optimizer], step: int) -> float:
        """Set every optimizer's learning rate for update ``step``; returns it."""
        lr = self.lr_at(step)
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = lr
        return lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "total_steps": self.total_steps,
                "constant_steps": self.constant_steps}
