"""The epoch loop of a run: steps with a live progress bar, then the epoch-end work, driven
through the model family's interface (`families.base.ModelFamily`): the loop knows the cadence,
the family what a step, a validation, a sample and a model file are.

With a residual generator (`ModelFamily.scores_start`) the run first validates its start, the
baseline itself, as epoch 0: model-best never has a worse validation score (the one that picks
it) than that baseline.

Training stops at a due validation whose networks' weights are no longer finite (it diverged:
`TrainingDiverged`), before that validation writes anything.

Epoch end, when validation is due (``--val-every`` steps have passed since the last one, checked
at epoch ends, and always at the end of the run): validation (the family's scores),
samples/epoch_NNN.png, a metrics.csv row (losses averaged since the previous row), the model
files, the best ones when the family's score improved, and checkpoint.pt. The cadence is a
function of the step alone, so a resumed run keeps it.
A stop request (Ctrl-C, SIGTERM, or the callback) is honoured between steps: the checkpoint is
written for the state after the last whole step and KeyboardInterrupt is raised (one during the
start's validation, before any step, leaves no checkpoint). One process also leaves a
validation at a stop asked while it runs (`EpochRunner._validate`), but for the run's last one
and an --overwrite run's first: the checkpoint is then the epoch end's, which the resumed run
validates before any step.
Under DDP the ranks agree after every step whether any of them was asked to stop, so all stop
after the same step; rank 0 writes the checkpoint while the others wait, and every rank raises
KeyboardInterrupt. Epoch losses and validation sums are added across the ranks, and before a
validation the family makes every rank's networks the same (batch-norm statistics averaged). A
stop in mid-epoch leaves them as they are: the checkpoint holds rank 0's, which DDP
(broadcasting rank 0's buffers at each forward) would have carried on with too, so the resumed
run is the uninterrupted one.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from geopix2pix.runtime import distributed
from geopix2pix.runtime.stopping import StopRequest
from geopix2pix.settings.train import TrainConfig

from .data import EpochBatchSampler
from .families.base import ModelFamily
from .schedule import LinearDecaySchedule

VALIDATIONS = 10  # without --val-every: validations (and model files) per run, after the start


class TrainingDiverged(Exception):
    """The networks' weights were no longer finite numbers (NaN or infinite) at the validation
    after ``step``: training stops there, before that validation writes anything."""

    def __init__(self, step: int) -> None:
        super().__init__(f"the weights are NaN or infinite by step {step}")
        self.step = step


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators with `seed`, any integer of 0 or
    more: a --seed plus a rank, or plus a step's offset on a resume on another number of ranks,
    may pass numpy's 2**32 - 1 (step 4,295 at --seed 0), which it refused in a traceback; each
    generator takes it modulo what it holds."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % 2**64)


@contextlib.contextmanager
def callers_random_state() -> Iterator[None]:
    """Python's, numpy's and torch's global generators left as the caller had them, whatever
    the run within seeds and draws: the CPU's and every GPU's (`torch.manual_seed` seeds them
    all, as checkpoints save them all, whichever device the run is on) and Apple's MPS."""
    python, numpy = random.getstate(), np.random.get_state()
    gpus = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    mps = torch.mps.get_rng_state() if torch.backends.mps.is_available() else None
    with torch.random.fork_rng(devices=gpus):
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)
            if mps is not None:
                torch.mps.set_rng_state(mps)


def build_schedule(config: TrainConfig, steps_per_epoch: int) -> LinearDecaySchedule:
    """The learning rate of every step (constant, then a linear decay)."""
    return LinearDecaySchedule.build(config.lr, steps_per_epoch, config.epochs,
                                     config.decay_epochs, config.max_steps,
                                     config.min_steps or 0)


class EpochRunner:
    """Runs the epochs of a run: ``family`` trains, ``state`` (`run_checkpoint.fresh_state`)
    counts, ``folder`` (`run_folder.RunFolder`) and ``checkpoint``
    (`run_checkpoint.RunCheckpoint`) write."""

    def __init__(self, family: ModelFamily, state: dict[str, Any], config: TrainConfig,
                 sampler: EpochBatchSampler, schedule: LinearDecaySchedule,
                 loaders: tuple[Any, Any], folder, checkpoint) -> None:
        self.family, self.state, self.config = family, state, config
        self.sampler, self.schedule = sampler, schedule
        self.train_loader, self.val_loader = loaders
        self.folder, self.checkpoint = folder, checkpoint
        self.rank, self.world = distributed.rank(), distributed.world_size()
        self.steps_per_epoch = sampler.batches_per_epoch()
        total = schedule.total_steps
        self.last_epoch = math.ceil(total / max(self.steps_per_epoch, 1))  # (sample names' width)
        self.val_every = config.val_every or max(1, math.ceil(total / VALIDATIONS))
        family.attach_schedule(total)
        self.sample_batch = family.sample_batch(config.samples) \
            if config.samples and distributed.is_writer() else None
        self.losses = family.loss_names  # metrics.csv's loss columns
        self.stop: StopRequest | None = None  # (`run`'s)

    def run(self, stop: StopRequest, callback: Callable[[dict], bool | None] | None) -> None:
        self.stop = stop
        state = self.state
        bar = tqdm(total=self.schedule.total_steps, initial=state["step"], unit="step",
                   disable=self.config.quiet or not distributed.is_writer(),
                   dynamic_ncols=True)
        try:
            if state["step"] == 0 and self.family.scores_start():  # (no checkpoint before
                self._score_start()  # step 1: every rank sees step 0 in a fresh run alone)
                if distributed.any_rank(stop.requested):  # asked during it: no step taken
                    raise KeyboardInterrupt
            while state["step"] < self.schedule.total_steps:
                self._train_epoch(bar, stop, callback)
                saved = self._end_epoch()
                stop.requested = distributed.any_rank(stop.requested)
                if stop.requested and state["step"] < self.schedule.total_steps:
                    if not saved:
                        self._save_at_stop()
                    raise KeyboardInterrupt
        finally:
            bar.close()

    def _train_epoch(self, bar, stop: StopRequest, callback) -> None:
        state, family = self.state, self.family
        self.sampler.set_epoch(state["epoch"], state["batch_in_epoch"])
        family.begin_epoch(state["epoch"])
        count = len(self.losses)
        partial = state["partial"] or {"sums": [0.0] * count, "batches": 0, "images": 0,
                                       "seconds": 0.0}
        sums = torch.zeros(count, dtype=torch.float64, device=family.run.setup.device)
        optimizers = list(family.optimizers().values())
        start = time.perf_counter()
        stopping = False
        for batch in self.train_loader:
            lr = self.schedule.apply(optimizers, state["step"])
            losses = family.train_step(batch, state["step"])
            sums += torch.stack([losses[name] for name in self.losses]).double()
            state["step"] += 1
            state["batch_in_epoch"] += 1
            partial["batches"] += 1
            partial["images"] += int(batch["source"].shape[0])
            info = self._progress(bar, losses, lr, callback is not None)
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
                self._save_at_stop()
                raise KeyboardInterrupt

    def _save_at_stop(self) -> None:
        """The checkpoint of a run stopped between validations. Weights that are no longer
        finite are not saved: the run stops as diverged instead, its last checkpoint (of the
        last validated, finite weights) kept, so --resume does not start from NaN."""
        if not _finite(self.family):
            raise TrainingDiverged(self.state["step"])
        self.checkpoint.save(self.state)

    def _progress(self, bar, losses: dict[str, torch.Tensor], lr: float,
                  with_losses: bool) -> dict:
        """Advance the progress bar; the step's info for a callback, `with_losses` its losses
        as numbers (read from the device only then: each read waits for the step to end)."""
        state = self.state
        info = {"epoch": state["epoch"] + 1, "step": state["step"], "lr": lr}
        if with_losses:
            info.update((name, float(losses[name])) for name in self.losses)
        bar.update(1)
        if not bar.disable and (state["step"] % 10 == 0 or state["step"] == 1):
            bar.set_postfix({"epoch": info["epoch"], **self.family.postfix(losses)})
        return info

    def _due(self) -> bool:
        """Whether this epoch end validates: a multiple of ``val_every`` steps was passed in
        the epoch, or the run is over."""
        state = self.state
        start = state["step"] - state["batch_in_epoch"]
        return state["step"] // self.val_every > start // self.val_every or \
            state["step"] >= self.schedule.total_steps

    def _end_epoch(self) -> bool:
        """The epoch-end work when due (see the module's docstring); whether it was done."""
        state, family = self.state, self.family
        partial = state["partial"]
        epoch = state["epoch"] + 1
        if not self._due():  # the losses go on adding up to the next metrics row
            state.update(epoch=epoch, batch_in_epoch=0)
            return False
        if not _finite(family):  # (every rank holds the same weights)
            raise TrainingDiverged(state["step"])
        family.before_validation()  # every rank the same networks before any score or file
        try:  # (an --overwrite run's first validation replaces the earlier run: not left)
            scores = self._validate(interruptible=state["step"] < self.schedule.total_steps
                                    and not self.folder.replaces_earlier())
        except ValidationStopped:  # (the resumed run validates this epoch end first)
            self._save_at_stop()
            raise KeyboardInterrupt from None
        # the ranks' losses and images together (a resumed epoch's restored part is per rank)
        count = len(self.losses)
        totals = distributed.all_reduce_sum(torch.tensor(
            [*partial["sums"], partial["batches"], partial["images"]], dtype=torch.float64))
        means = dict(zip(self.losses, (float(s) / max(float(totals[count]), 1)
                                       for s in totals[:count])))
        row = {"epoch": epoch, "step": state["step"],
               "lr": self.schedule.lr_at(max(state["step"] - 1, 0)),
               **means, **scores,
               "images_per_second": float(totals[count + 1]) / max(partial["seconds"], 1e-9),
               "epoch_seconds": partial["seconds"]}
        state.update(epoch=epoch, batch_in_epoch=0, partial={})
        self._record(row, scores, means, latest=True)
        self.checkpoint.save(state)
        return True

    def _score_start(self) -> None:
        """Validate the networks before the first step (a residual generator's start: exactly
        its baseline), as epoch 0: a candidate for model-best like every epoch, so model-best
        is never worse on the val chips than where training began."""
        self.family.before_validation()
        try:
            scores = self._validate(interruptible=True)
        except ValidationStopped:  # (nothing to save: no step was taken)
            raise KeyboardInterrupt from None
        if scores:  # without val chips there is nothing to compare
            self._record({"epoch": 0, "step": 0, "lr": self.schedule.lr_at(0), **scores},
                         scores, {}, latest=False)

    def _record(self, row: dict[str, Any], scores: dict[str, float], means: dict[str, float],
                latest: bool) -> None:
        """A validation's samples, metrics.csv row and model files: the latest ones
        (``latest``) and the best ones when the family's score improved."""
        family, folder, state = self.family, self.folder, self.state
        epoch = row["epoch"]
        folder.write_samples(family, self.sample_batch, epoch, self.last_epoch)
        folder.history.append(row)
        score = family.score(scores, means)
        progress = {"epoch": epoch, "step": row["step"]}
        if latest:
            folder.save_models(family, scores, progress, best=False)
        if family.better(score, scores, state):
            state["best"] = score
            state["best_scores"] = {**scores, **family.best_losses(means), "epoch": epoch}
            folder.save_models(family, scores, progress, best=True)
        family.after_validation(folder.history.rows)

    def _validate(self, interruptible: bool = False) -> dict[str, float]:
        """The validation scores of this epoch's networks (none without val chips).
        `interruptible`: one process leaves it at a stop asked once it has begun
        (`ValidationStopped`): a large val set kept a reviewer's Ctrl-C waiting minutes. Not at
        a stop asked before (at the epoch's last step: the epoch is validated and saved, as
        ever), nor the run's last validation, which completes the run, nor an --overwrite
        run's first, which replaces the earlier run, nor under torchrun, where the ranks would
        have to agree on the batch to stop at (a collective per batch)."""
        if self.val_loader is None:
            return {}
        reduce = distributed.all_reduce_sum if self.world > 1 else None
        loader = _until_stopped(self.val_loader, self.stop) if interruptible and \
            self.world == 1 else self.val_loader
        return self.family.validate(loader, reduce)


class ValidationStopped(Exception):
    """A stop asked during a validation that may be left (`EpochRunner._validate`)."""


def _until_stopped(loader: Any, stop: StopRequest) -> Iterator[Any]:
    """`loader`'s batches until a stop is asked; all of them if one was asked before."""
    if stop.requested:
        yield from loader
        return
    for batch in loader:
        if stop.requested:
            raise ValidationStopped
        yield batch


def _finite(family: ModelFamily) -> bool:
    """Whether every weight of the family's networks, and every floating-point buffer of its
    generators (batch norms' running statistics, which validation and predict use), is a finite
    number (a learning rate too high, or a loss weight, can make them NaN; GradScaler's skipped
    fp16 steps never do; a discriminator's statistics, never used, may then be NaN)."""
    networks = family.networks()
    tensors = [p for net in networks.values() for p in net.parameters()] + [
        b for key in family.GENERATORS for b in networks[key].buffers() if b.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)
