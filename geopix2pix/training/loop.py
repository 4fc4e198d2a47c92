"""The epoch loop of a run: steps with a live progress bar, then the epoch-end work.

Epoch end, when validation is due (``--val-every`` steps have passed since the last one, checked
at epoch ends, and always at the end of the run): validation (G, or its weight average with
``--ema``, in eval mode), samples/epoch_NNN.png, a metrics.csv row (losses averaged since the
previous row), model.safetensors, model-best.safetensors when the score improved, and
checkpoint.pt. The cadence is a function of the step alone, so a resumed run keeps it.
With ``--gan-warmup`` the first share of the steps trains G on its pixel loss alone.
A stop request (Ctrl-C, SIGTERM, or the callback) is honoured between steps: the checkpoint is
written for the state after the last whole step and KeyboardInterrupt is raised.
Under DDP the ranks agree after every step whether any of them was asked to stop, so all stop
after the same step; rank 0 writes the checkpoint while the others wait, and every rank raises
KeyboardInterrupt. Epoch losses and validation sums are added across the ranks.
Each rank updates its batch norms' running statistics from its own batches, so an epoch end
first replaces them by their mean over the ranks: every rank then validates, and the model files
and checkpoint hold, the same network. A stop in mid-epoch leaves them as they are: the
checkpoint holds rank 0's, which DDP (broadcasting rank 0's buffers at each forward) would have
carried on with too, so the resumed run is the uninterrupted one.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from geopix2pix.raster.render import class_colours
from geopix2pix.runtime import distributed
from geopix2pix.runtime.stopping import StopRequest

from .data import augment_batch
from .samples import write_samples
from .schedule import LinearDecaySchedule
from .validate import evaluate, evaluate_classes

STUCK_EPOCHS = 3  # a class map's mean IoU unchanged this long: warn (see _warn_if_one_class)
VALIDATIONS = 10  # without --val-every: validations (and model files) per run


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class EpochRunner:
    """Runs the epochs of a ``Trainer`` (which holds the networks, state and options)."""

    def __init__(self, trainer, train_loader, val_loader, history) -> None:
        self.trainer = trainer
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.history = history
        config = trainer.config
        self.steps_per_epoch = trainer.sampler.batches_per_epoch()
        self.schedule = LinearDecaySchedule.build(config.lr, self.steps_per_epoch, config.epochs,
                                                  config.decay_epochs, config.max_steps)
        self.n_epochs = math.ceil(self.schedule.total_steps / self.steps_per_epoch)
        total = self.schedule.total_steps
        self.warmup_steps = round(config.gan_warmup * total)
        self.val_every = config.val_every or max(1, math.ceil(total / VALIDATIONS))
        self.sample_batch = self._sample_batch()
        # metrics.csv's loss columns
        self.losses = ("loss_g_gan", trainer.objective.loss_name, "loss_d")
        self.warned_stuck = False

    def _sample_batch(self) -> dict | None:
        """The fixed chips shown in samples/: the first val chips (train chips without val)."""
        count = self.trainer.config.samples
        dataset = self.trainer.val_set if self.trainer.val_set else self.trainer.train_set
        if count == 0 or not distributed.is_writer():
            return None
        items = [dataset[i] for i in range(min(count, len(dataset)))]
        return {k: torch.stack([it[k] for it in items]) for k in ("source", "target", "valid")}

    def run(self, stop: StopRequest, callback: Callable[[dict], bool | None] | None) -> None:
        state = self.trainer.state
        bar = tqdm(total=self.schedule.total_steps, initial=state["step"], unit="step",
                   disable=self.trainer.config.quiet or not distributed.is_writer(),
                   dynamic_ncols=True)
        try:
            while state["step"] < self.schedule.total_steps:
                self._train_epoch(bar, stop, callback)
                saved = self._end_epoch()
                stop.requested = distributed.any_rank(stop.requested)
                if stop.requested and state["step"] < self.schedule.total_steps:
                    if not saved:
                        self.trainer.save_checkpoint()
                    raise KeyboardInterrupt
        finally:
            bar.close()

    def _train_epoch(self, bar, stop: StopRequest, callback) -> None:
        trainer, state, config = self.trainer, self.trainer.state, self.trainer.config
        setup, step_fn = trainer.setup, trainer.step_fn
        trainer.sampler.set_epoch(state["epoch"], state["batch_in_epoch"])
        trainer.generator.train()
        trainer.discriminator.train()
        partial = state["partial"] or {"sums": [0.0, 0.0, 0.0], "batches": 0, "images": 0,
                                       "seconds": 0.0}
        sums = torch.zeros(3, dtype=torch.float64, device=setup.device)
        start = time.perf_counter()
        stopping = False
        for batch in self.train_loader:
            batch = augment_batch(batch, config.augment, config.seed + trainer.rank,
                                  state["step"])
            lr = self.schedule.apply([step_fn.opt_g, step_fn.opt_d], state["step"])
            losses = step_fn(setup.to_device(batch["source"]), setup.to_device(batch["target"]),
                             setup.to_device(batch["valid"]),
                             adversarial=state["step"] >= self.warmup_steps)
            if trainer.ema is not None:
                trainer.ema.update()
            sums += torch.stack([losses.g_gan, losses.g_pixel, losses.d]).double()
            state["step"] += 1
            state["batch_in_epoch"] += 1
            partial["batches"] += 1
            partial["images"] += int(batch["source"].shape[0])
            info = self._progress(bar, losses, lr)
            stopping = distributed.any_rank(bool(callback and callback(info)) or stop.requested)
            if stopping or state["step"] >= self.schedule.total_steps:
                break
        elapsed = time.perf_counter() - start
        partial["seconds"] += elapsed
        partial["sums"] = [a + b for a, b in zip(partial["sums"], sums.tolist())]
        state["partial"] = partial
        if stopping:
            stop.requested = True
            if state["batch_in_epoch"] < self.steps_per_epoch and \
                    state["step"] < self.schedule.total_steps:
                trainer.save_checkpoint()
                raise KeyboardInterrupt

    def _progress(self, bar, losses, lr: float) -> dict:
        state = self.trainer.state
        info = {"epoch": state["epoch"] + 1, "step": state["step"], "lr": lr}
        bar.update(1)
        if not bar.disable and (state["step"] % 10 == 0 or state["step"] == 1):
            bar.set_postfix({"epoch": info["epoch"], "G_gan": f"{float(losses.g_gan):.3f}",
                             f"G_{self.trainer.objective.label}": f"{float(losses.g_pixel):.4f}",
                             "D": f"{float(losses.d):.3f}"})
        return info

    def _due(self) -> bool:
        """Whether this epoch end validates: a multiple of ``val_every`` steps was passed in
        the epoch, or the run is over."""
        state = self.trainer.state
        start = state["step"] - state["batch_in_epoch"]
        return state["step"] // self.val_every > start // self.val_every or \
            state["step"] >= self.schedule.total_steps

    def _end_epoch(self) -> bool:
        """The epoch-end work when due (see the module's docstring); whether it was done."""
        trainer, state = self.trainer, self.trainer.state
        partial = state["partial"]
        epoch = state["epoch"] + 1
        if not self._due():  # the losses go on adding up to the next metrics row
            state.update(epoch=epoch, batch_in_epoch=0)
            return False
        # before validation and any file: every rank the same statistics (one process: a no-op)
        distributed.average_running_stats(trainer.generator, trainer.discriminator)
        scores = self._validate()
        # the ranks' losses and images together (a resumed epoch's restored part is per rank)
        totals = distributed.all_reduce_sum(torch.tensor(
            [*partial["sums"], partial["batches"], partial["images"]], dtype=torch.float64))
        means = [float(s) / max(float(totals[3]), 1) for s in totals[:3]]
        row = {"epoch": epoch, "step": state["step"],
               "lr": self.schedule.lr_at(max(state["step"] - 1, 0)),
               **dict(zip(self.losses, means)), **scores,
               "images_per_second": float(totals[4]) / max(partial["seconds"], 1e-9),
               "epoch_seconds": partial["seconds"]}
        self._write_samples(epoch)
        state.update(epoch=epoch, batch_in_epoch=0, partial={})
        self.history.append(row)
        score = self._score(scores, means[1])
        trainer.save_model(trainer.run_dir / "model.safetensors", scores)
        if self._better(score, scores):
            state["best"] = score
            state["best_scores"] = {**scores, self.losses[1]: means[1], "epoch": epoch}
            trainer.save_model(trainer.run_dir / "model-best.safetensors", scores)
        trainer.save_checkpoint()
        self._warn_if_one_class()
        return True

    def _better(self, score: float, scores: dict[str, float]) -> bool:
        """Whether this epoch's score beats model-best's; on a tie of a class map's mean IoU
        (a model that still answers the most common class everywhere keeps it for epochs) the
        lower validation cross-entropy wins, so model-best is not the first epoch's."""
        best = self.trainer.state["best"]
        if score != best or "val_ce" not in scores:
            return score < best
        return scores["val_ce"] < self.trainer.state["best_scores"].get("val_ce", math.inf)

    def _warn_if_one_class(self) -> None:
        """Once, when a class map's validation mean IoU has not moved for `STUCK_EPOCHS`
        epochs: the model likely answers one class everywhere."""
        trainer = self.trainer
        if trainer.classes is None or self.warned_stuck or trainer.objective.weights is not None:
            return
        recent = [row.get("val_miou") for row in self.history.rows[-STUCK_EPOCHS:]]
        if len(recent) == STUCK_EPOCHS and recent[0] and float(recent[0]) < 1 \
                and len(set(recent)) == 1:  # (a perfect model stays at 1)
            self.warned_stuck = True
            trainer.log(f"warning: the validation mean IoU has stayed at {recent[0]} for "
                        f"{STUCK_EPOCHS} epochs: the model may answer the most common class "
                        "everywhere; with rare classes, train with --class-weights balanced")

    def _score(self, scores: dict[str, float], pixel_loss: float) -> float:
        """What picks model-best, lower being better: the validation L1 of values; 1 - the
        validation mean IoU of a class map (the segmentation score, which a rare class moves
        as much as a common one); the train pixel loss without val chips."""
        if self.trainer.classes is None:
            return scores.get("val_l1", pixel_loss)
        return 1.0 - scores["val_miou"] if "val_miou" in scores else pixel_loss

    def _validate(self) -> dict[str, float]:
        """The validation scores of this epoch's generator (none without val chips)."""
        trainer = self.trainer
        if self.val_loader is None:
            return {}
        reduce = distributed.all_reduce_sum if trainer.world > 1 else None
        if trainer.classes is not None:
            return evaluate_classes(trainer.eval_generator(), self.val_loader, trainer.setup,
                                    len(trainer.classes), reduce)
        return evaluate(trainer.eval_generator(), self.val_loader, trainer.setup,
                        trainer.val_set.target_scaling, reduce, trainer.spec.out_channels)

    def _write_samples(self, epoch: int) -> None:
        """samples/epoch_NNN.png: the fixed chips, their prediction and target (rank 0)."""
        distributed.writer_first(lambda: self._draw_samples(epoch))

    @torch.no_grad()
    def _draw_samples(self, epoch: int) -> None:
        batch, trainer = self.sample_batch, self.trainer
        if batch is None:
            return
        generator = trainer.eval_generator()
        was_training = generator.training
        generator.eval()
        with trainer.setup.autocast():
            pred = generator(trainer.setup.to_device(batch["source"]))
        generator.train(was_training)
        path = trainer.run_dir / "samples" / f"epoch_{epoch:03d}.png"
        colours = None if trainer.classes is None else class_colours(
            trainer.classes, trainer.info.target.band_metadata.colormap)
        write_samples(path, batch["source"], pred, batch["target"], batch["valid"], colours)
