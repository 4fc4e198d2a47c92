"""EMA of the generator's weights: what validation, samples and the model files use (``--ema``).

After every optimisation step the average moves toward the trained weights:
``avg = d * avg + (1 - d) * weights`` with ``d = min(decay, (1 + n) / (10 + n))`` after ``n``
updates, so a short run is not dominated by the initial weights. Buffers (batch norm's running
statistics) are copied, not averaged. The average is a plain module beside the trained one,
saved in checkpoint.pt (``generator_ema``, ``ema_updates``), so a resumed run continues it
exactly; under DDP every rank holds the same average of the same weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WeightAverage:
    """An exponential moving average of ``model``'s parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.decay = decay
        self.average = copy.deepcopy(model).eval()
        self.average.requires_grad_(False)
        self.updates = 0

    def rate(self) -> float:
        """This update's decay (warmed up over the first updates)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        decay = self.rate()
        for avg, param in zip(self.average.parameters(), self.model.parameters()):
            avg.lerp_(param.detach(), 1.0 - decay)
        self.updates += 1

    @torch.no_grad()
    def copy_buffers(self) -> nn.Module:
        """The average with the trained model's current buffers (running statistics)."""
        for avg, buf in zip(self.average.buffers(), self.model.buffers()):
            avg.copy_(buf)
        return self.average

    def state_dict(self) -> dict:
        return {"generator_ema": self.average.state_dict(), "ema_updates": self.updates}

    def load_state_dict(self, saved: dict) -> None:
        self.average.load_state_dict(saved["generator_ema"])
        self.updates = int(saved["ema_updates"])
