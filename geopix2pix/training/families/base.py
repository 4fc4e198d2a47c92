"""What a model family gives the training run: the `ModelFamily` interface, and `RunContext`.

The run (trainer, run_checkpoint, loop, run_folder) knows nothing of any family's networks: it
asks the family for them through this interface. A family builds its networks (and wraps them
for sync-bn, DDP and torch.compile), its optimizers, its step and losses; says what its
checkpoint holds, how it scores a validation and which score picks model-best; draws its sample
images; and writes the model file(s) it exports. The run drives the steps, the schedule, the
validation and checkpoint cadence, and writes the run folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geopix2pix.chips.manifest import DatasetInfo
from geopix2pix.settings.train import TrainConfig

from ..device import DeviceSetup

Reduce = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class RunContext:
    """What every family may read of the run: its chips, options, device and ranks, where it
    writes (``run_dir`` follows the folder when a staged run replaces an earlier one) and its
    log (silent on ranks other than 0)."""

    chips_dir: Path
    info: DatasetInfo
    config: TrainConfig
    setup: DeviceSetup
    rank: int
    world: int
    log: Callable[[str], None]
    dataset: str  # the chips folder's fingerprint (its manifest's hash)
    run_dir: Path
    train_sums: torch.Tensor | None = None  # the baselines' sums, when --recipe auto read them
    recipe: str | None = None  # the Pix2Pix recipe trained with: auto's pick, or the one named

    @property
    def effective_batch(self) -> int:
        """Chips per optimisation step over all ranks."""
        return self.config.batch_size * self.world


@dataclass(frozen=True)
class ModelExport:
    """One generator a family exports: written to ``latest`` at each validation and to ``best``
    when the validation score improves."""

    latest: str
    best: str
    direction: str | None = None  # which generator of the family (None: its only one)


class ModelFamily(ABC):
    """A model family: the networks, losses, step, checkpoint content, scores, samples and model
    files of one kind of model. Built in stages, in the order of the run's set-up (the order is
    part of the seeded result): ``build_networks`` (seeded), ``datasets``, ``sync_batch_norm``,
    then ``set_up`` once the run folder is open."""

    name: str = ""
    needs_pairs: bool = True  # whether it learns from aligned pairs only (refuses unpaired chips)

    UNRECORDED: tuple[str, ...] = ()  # options its model files leave out (other families')

    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.train_set: Any = None  # set by `datasets`
        self.val_set: Any = None

    @property
    def rank(self) -> int:
        return self.run.rank

    # --- set-up -------------------------------------------------------------------------------
    @abstractmethod
    def build_networks(self) -> None:
        """Build the networks (GeoPix2PixError when they do not fit the chips)."""

    @abstractmethod
    def datasets(self) -> tuple[Any, Any]:
        """The train and val datasets (each item a dict of tensors)."""

    def sync_batch_norm(self) -> None:  # noqa: B027 (optional hook)
        """Convert batch norms to synchronised ones (``--sync-bn``)."""

    @abstractmethod
    def set_up(self) -> None:
        """Once the run folder is open: networks on the device, optimizers, the step."""

    def attach_schedule(self, total_steps: int) -> None:  # noqa: B027 (optional hook)
        """The run's length in steps, known before the first step."""

    # --- checkpoint ---------------------------------------------------------------------------
    @abstractmethod
    def networks(self) -> dict[str, nn.Module]:
        """The trained plain modules by their checkpoint keys."""

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers by their checkpoint keys (the schedule sets their learning rate): by
        default the generators' and discriminators' of the step `set_up` made (`step_fn`)."""
        return {"opt_g": self.step_fn.opt_g, "opt_d": self.step_fn.opt_d}

    def scaler(self) -> torch.amp.GradScaler:
        """The step's grad scaler (by default `step_fn`'s)."""
        return self.step_fn.scaler

    def state_dict(self) -> dict[str, Any]:
        """What checkpoint.pt holds of the family: its networks, optimizers and grad scaler
        (a family adds its extras)."""
        return {**{k: m.state_dict() for k, m in self.networks().items()},
                **{k: o.state_dict() for k, o in self.optimizers().items()},
                "scaler": self.scaler().state_dict()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore a checkpoint checked by `checkpoint_check` against ``networks`` and
        ``optimizers``."""
        for key, module in self.networks().items():
            module.load_state_dict(saved[key])
        for key, optimizer in self.optimizers().items():
            optimizer.load_state_dict(saved[key])
        scaler = self.scaler()
        if saved["scaler"] or not scaler.is_enabled():  # an fp32 run's (CPU, --no-amp) is {}:
            scaler.load_state_dict(saved["scaler"])  # resumed with fp16, it starts its own

    def rank_state(self) -> dict[str, Any] | None:
        """State each rank holds for itself (CycleGAN's history pools), saved for every rank;
        None: none."""
        return None

    def check_rank_state(self, state: Any, where: str) -> None:  # noqa: B027 (optional hook)
        """SchemaError naming what in a saved `rank_state` does not fit this run."""

    def load_rank_state(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore this rank's `rank_state`."""

    # --- training -----------------------------------------------------------------------------
    loss_names: tuple[str, ...] = ()  # metrics.csv's loss columns, in the order of the step's
    metrics_columns: tuple[str, ...] = ()  # all of metrics.csv's columns

    def begin_epoch(self, epoch: int) -> None:
        """Before an epoch's (first or remaining) steps: the networks in train mode."""
        for module in self.networks().values():
            module.train()

    @abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch`` (as the loader gives it, on the CPU; augmenting it
        is the family's); its detached losses by name."""

    def postfix(self, losses: dict[str, torch.Tensor]) -> dict[str, str]:
        """The progress bar's loss display."""
        return {name: f"{float(value):.3f}" for name, value in losses.items()}

    # --- validation and model-best ------------------------------------------------------------
    def before_validation(self) -> None:  # noqa: B027 (optional hook)
        """Make every rank's networks the same before validating and saving them."""

    @abstractmethod
    def validate(self, loader, reduce: Reduce | None) -> dict[str, float]:
        """The validation scores (none without val chips)."""

    @abstractmethod
    def score(self, scores: dict[str, float], losses: dict[str, float]) -> float:
        """What picks model-best, lower being better (``losses``: the epoch's mean losses)."""

    def scores_start(self) -> bool:
        """Whether the networks before the first step are a candidate for model-best (a
        residual generator starts as exactly a baseline)."""
        return False

    def better(self, score: float, scores: dict[str, float], state: dict[str, Any]) -> bool:
        """Whether ``score`` beats model-best's (``state["best"]``)."""
        return score < state["best"]

    def best_losses(self, losses: dict[str, float]) -> dict[str, float]:
        """The losses recorded beside model-best's scores."""
        return {}

    def after_validation(self, rows: list[dict[str, Any]]) -> None:  # noqa: B027 (optional hook)
        """Once a validation's row is in metrics.csv (``rows``: all of them)."""

    # --- outputs ------------------------------------------------------------------------------
    EXPORTS: tuple[ModelExport, ...] = ()  # the model files the family writes
    # the checkpoint keys of its generators, which validate and predict in eval mode (their
    # norms' running statistics count); the others are trained and never evaluated
    GENERATORS: tuple[str, ...] = ()
    FILES: tuple[str, ...] = ()  # other files it writes in the run folder

    def exports(self) -> tuple[ModelExport, ...]:
        return self.EXPORTS

    @abstractmethod
    def write_model(self, export: ModelExport, path: Path, validation: dict[str, float],
                    progress: dict[str, int]) -> None:
        """Write ``export``'s generator and metadata at ``path`` (rank 0; ``progress``: the
        epoch and step)."""

    def recorded_options(self) -> dict[str, Any]:
        """The options a model file records: this family's, the ranks and the batch over
        them."""
        return {**{k: v for k, v in self.run.config.to_dict().items()
                   if k not in self.UNRECORDED},
                "world_size": self.run.world, "effective_batch_size": self.run.effective_batch}

    def sample_batch(self, count: int) -> dict[str, torch.Tensor] | None:
        """The fixed chips samples/ shows: the first val chips (train chips without val), each
        tensor they hold stacked."""
        dataset = self.val_set if self.val_set else self.train_set
        items = [dataset[i] for i in range(min(count, len(dataset)))]
        if not items:
            return None
        return {key: torch.stack([item[key] for item in items])
                for key, value in items[0].items() if isinstance(value, torch.Tensor)}

    @abstractmethod
    def draw_samples(self, path: Path, batch: dict[str, torch.Tensor]) -> None:
        """samples/epoch_NNN.png for ``batch``."""

    # --- the run's log and result -------------------------------------------------------------
    def describe(self) -> list[str]:
        """Lines logged before training (after the run's own)."""
        return []

    def criterion_without_val(self) -> str:
        """What picks model-best without val chips (for the warning)."""
        return "the train loss"

    def summary(self, best: dict[str, Any]) -> tuple[dict[str, dict[str, float]], str | None]:
        """At the end: baseline scores and a comparison line for the result."""
        return {}, None

    def release(self) -> None:  # noqa: B027 (optional hook)
        """Let go of DDP wrappers (see ``Trainer.release``)."""
