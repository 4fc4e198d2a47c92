"""The Pix2Pix family: a generator (paper U-Net or smp) judged by a conditional PatchGAN.

Values (regression, L1) or a class map (``--categorical``, cross-entropy on one score per class);
optionally a residual over a baseline (``--residual linear``: G starts as exactly the linear
map, a class map's scores as the linear discriminant's) and a weight average of G (``--ema``)
that validation, samples and the model file use.
Under DDP, G and D are wrapped in DistributedDataParallel and D's plain module judges G's fakes
(see `step`); at each validation the ranks' batch-norm running statistics are averaged first.
The run's simple baselines (`baselines`) are fitted when the run folder opens, and model-best is
picked by the validation L1 (a class map: 1 - mean IoU, ties broken by cross-entropy).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geopix2pix.chips.dataset import ChipDataset
from geopix2pix.models import save_model
from geopix2pix.models.baseline import ResidualGenerator, zero_output_layer
from geopix2pix.models.metadata import ModelMetadata
from geopix2pix.models.run_files import RUN_MODELS
from geopix2pix.raster.render import class_colours
from geopix2pix.runtime import distributed
from geopix2pix.settings.families import BETA2, CYCLEGAN_OPTIONS

from .. import baselines
from ..classes import describe_classes, objective_for, trained_classes
from ..data import augment_batch
from ..device import maybe_compile
from ..ema import WeightAverage
from ..history import COLUMNS
from ..networks import build_networks
from ..samples import write_samples
from ..step import Pix2PixStep
from ..validate import evaluate, evaluate_classes, evaluating
from .base import ModelExport, ModelFamily, Reduce, RunContext

STUCK_EPOCHS = 3  # a class map's mean IoU unchanged this long: warn (see after_validation)
# options a Pix2Pix model file does not record (other families')
EXPORTS = (ModelExport(*RUN_MODELS["a_to_b"]),)


class Pix2Pix(ModelFamily):
    """Pix2Pix (Isola et al. 2017) on paired chips."""

    name = "pix2pix"
    EXPORTS = EXPORTS
    GENERATORS = ("generator",)
    FILES = (baselines.BASELINES,)
    UNRECORDED = ("model", *CYCLEGAN_OPTIONS)  # the other family's options
    metrics_columns = COLUMNS  # the same for values and class maps

    def __init__(self, run: RunContext) -> None:
        super().__init__(run)
        self.config, self.info, self.setup = run.config, run.info, run.setup
        self.classes = trained_classes(run.info, run.chips_dir) if run.config.categorical \
            else None
        self.objective = objective_for(run.info, self.classes, run.config.class_weights,
                                       run.config.pixel_loss)
        self.loss_names = ("loss_g_gan", self.objective.loss_name, "loss_d")
        self.warned_stuck = False
        self.ema: WeightAverage | None = None
        self.warmup_steps = 0

    # what `baselines` reads of the run
    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    @property
    def world(self) -> int:
        return self.run.world

    def log(self, message: str) -> None:
        self.run.log(message)

    # --- set-up -------------------------------------------------------------------------------
    def build_networks(self) -> None:
        self.spec, self.generator, self.discriminator = build_networks(
            self.info, self.config, self.classes)

    def datasets(self) -> tuple[ChipDataset, ChipDataset]:
        validity = self.config.validity_band
        self.train_set = ChipDataset(self.run.chips_dir, "train", classes=self.classes,
                                     validity_band=validity)
        self.val_set = ChipDataset(self.run.chips_dir, "val", classes=self.classes,
                                   validity_band=validity)
        return self.train_set, self.val_set

    def sync_batch_norm(self) -> None:
        device = self.setup.device
        self.generator = distributed.sync_batch_norm(self.generator, device)
        self.discriminator = distributed.sync_batch_norm(self.discriminator, device)

    def set_up(self) -> None:
        """Baselines (fitted, or read back on --resume), G as a residual over one of them,
        networks on the device, Adam for each, the step and the weight average."""
        config = self.config
        self.baselines = baselines.for_run(self, self.run.dataset)
        generator = self.generator
        if config.residual == "linear":  # G learns target - start, from exactly the start
            zero_output_layer(generator)
            generator = ResidualGenerator(generator, self.baselines.maps.start,
                                          clamp=self.classes is None)
        self.generator = self.setup.prepare(generator)
        self.discriminator = self.setup.prepare(self.discriminator)
        betas = (config.beta1, BETA2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, betas=betas)
        device = self.setup.device
        self.step_fn = Pix2PixStep(
            maybe_compile(distributed.wrap(self.generator, device), config.compile),
            maybe_compile(distributed.wrap(self.discriminator, device), config.compile),
            opt_g, opt_d, self.setup, config.gan_mode, config.lambda_l1,
            adversary=maybe_compile(self.discriminator, config.compile)
            if self.world > 1 else None, objective=self.objective)
        self.ema = WeightAverage(self.generator, config.ema) if config.ema else None

    def attach_schedule(self, total_steps: int) -> None:
        self.warmup_steps = round(self.config.gan_warmup * total_steps)

    # --- checkpoint ---------------------------------------------------------------------------
    def networks(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(),
                **(self.ema.state_dict() if self.ema is not None else {})}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        super().load_state_dict(saved)
        if self.ema is not None:
            self.ema.load_state_dict(saved)

    # --- training -----------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
        """One step on the batch augmented (``--augment``), G alone on its pixel loss during
        ``--gan-warmup``, then the weight average's update."""
        batch = augment_batch(batch, self.config.augment, self.config.seed + self.rank, step)
        to_device = self.setup.to_device
        losses = self.step_fn(to_device(batch["source"]), to_device(batch["target"]),
                              to_device(batch["valid"]), adversarial=step >= self.warmup_steps)
        if self.ema is not None:
            self.ema.update()
        return dict(zip(self.loss_names, (losses.g_gan, losses.g_pixel, losses.d)))

    def postfix(self, losses: dict[str, torch.Tensor]) -> dict[str, str]:
        g_gan, g_pixel, d = (float(losses[k]) for k in self.loss_names)
        return {"G_gan": f"{g_gan:.3f}", f"G_{self.objective.label}": f"{g_pixel:.4f}",
                "D": f"{d:.3f}"}

    # --- validation and model-best ------------------------------------------------------------
    def eval_generator(self) -> nn.Module:
        """What validation, samples and model files use: G, or its weight average (--ema)."""
        return self.generator if self.ema is None else self.ema.copy_buffers()

    def before_validation(self) -> None:
        # every rank the same statistics (one process: a no-op)
        distributed.average_running_stats(self.generator, self.discriminator)

    def validate(self, loader, reduce: Reduce | None) -> dict[str, float]:
        if self.classes is not None:
            return evaluate_classes(self.eval_generator(), loader, self.setup,
                                    len(self.classes), reduce)
        return evaluate(self.eval_generator(), loader, self.setup, self.val_set.target_scaling,
                        reduce, self.spec.out_channels)

    def score(self, scores: dict[str, float], losses: dict[str, float]) -> float:
        """The validation L1 of values; 1 - the validation mean IoU of a class map (the
        segmentation score, which a rare class moves as much as a common one); the train pixel
        loss without val chips."""
        pixel_loss = losses.get(self.objective.loss_name, math.inf)
        if self.classes is None:
            return scores.get("val_l1", pixel_loss)
        return 1.0 - scores["val_miou"] if "val_miou" in scores else pixel_loss

    def better(self, score: float, scores: dict[str, float], state: dict[str, Any]) -> bool:
        """On a tie of a class map's mean IoU (a model that still answers the most common class
        everywhere keeps it for epochs) the lower validation cross-entropy wins, so model-best
        is not the first epoch's."""
        best = state["best"]
        if score != best or "val_ce" not in scores:
            return score < best
        return scores["val_ce"] < state["best_scores"].get("val_ce", math.inf)

    def scores_start(self) -> bool:
        """A residual generator starts as exactly its baseline (its output layer zero)."""
        return self.config.residual != "none"

    def best_losses(self, losses: dict[str, float]) -> dict[str, float]:
        name = self.objective.loss_name
        return {name: losses[name]} if name in losses else {}  # none before the first step

    def after_validation(self, rows: list[dict[str, Any]]) -> None:
        """Once, when a class map's validation mean IoU has not moved for `STUCK_EPOCHS`
        epochs: the model likely answers one class everywhere."""
        if self.classes is None or self.warned_stuck or self.objective.weights is not None \
                or self.config.residual != "none":  # a residual starts from the discriminant,
            return  # not from one class, and may rightly stay there
        trained = [row for row in rows if str(row.get("epoch")) != "0"]  # not the start
        recent = [row.get("val_miou") for row in trained[-STUCK_EPOCHS:]]
        if len(recent) == STUCK_EPOCHS and recent[0] and float(recent[0]) < 1 \
                and len(set(recent)) == 1:  # (a perfect model stays at 1)
            self.warned_stuck = True
            self.log(f"warning: the validation mean IoU has stayed at {recent[0]} for "
                     f"{STUCK_EPOCHS} epochs: the model may answer the most common class "
                     "everywhere; with rare classes, train with --class-weights balanced")

    # --- outputs ------------------------------------------------------------------------------
    def write_model(self, export: ModelExport, path: Path, validation: dict[str, float],
                    progress: dict[str, int]) -> None:
        metadata = ModelMetadata.of_training(self.info, self.recorded_options(), progress["epoch"],
                                             progress["step"], validation, self.classes,
                                             self.baselines.maps)
        save_model(path, self.eval_generator(), self.spec, metadata.to_dict(), own=True)

    @torch.no_grad()
    def draw_samples(self, path: Path, batch: dict[str, torch.Tensor]) -> None:
        """Source | prediction | target of each chip."""
        generator = self.eval_generator()
        with evaluating(generator), self.setup.autocast():
            pred = generator(self.setup.to_device(batch["source"]))
        colours = None if self.classes is None else class_colours(
            self.classes, self.info.target.band_metadata.colormap)
        source = batch["source"][:, :self.spec.source_bands]  # without a validity band
        write_samples(path, source, pred, batch["target"], batch["source_valid"],
                      batch["target_valid"], colours)

    # --- the run's log and result -------------------------------------------------------------
    def describe(self) -> list[str]:
        if self.classes is None:
            return []
        return describe_classes(self.classes, self.objective, self.info, self.run.chips_dir)

    def criterion_without_val(self) -> str:
        return f"the train {self.objective.label} loss"

    def summary(self, best: dict[str, Any]) -> tuple[dict[str, dict[str, float]], str | None]:
        return self.baselines.scores, baselines.report(self, best)

    def release(self) -> None:
        step_fn = getattr(self, "step_fn", None)
        if step_fn is not None:
            step_fn.generator = step_fn.discriminator = step_fn.adversary = None
